"""TeamHub settings, driven by the environment.

With nothing set, everything is embedded: SQLite, the local-memory cache and
the in-memory channel layer. DATABASE_URL switches to PostgreSQL (psycopg 3,
pooled) and REDIS_URL switches the cache to django-redis and the channel layer
to channels-redis, so that any number of workers share state.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    return [item.strip() for item in value.split(",") if item.strip()] or default


DEBUG = env_bool("DEBUG", True)
DATA_DIR = Path(os.environ.get("TEAMHUB_DATA_DIR", BASE_DIR / "data"))

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-insecure-teamhub-key-only-for-local-development-0123456789"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # Swagger UI from its own static files, not a CDN (blank offline or under a CSP)
    "reactive",
    "agency",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "teamhub.middleware.ApiErrors",  # JSON errors (and HEAD, OPTIONS) for everything under /api/
    "teamhub.middleware.RequestSizeLimit",  # 413 before anything reads an oversized body
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "agency.auth.ApiTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "teamhub.urls"
WSGI_APPLICATION = "teamhub.wsgi.application"
ASGI_APPLICATION = "teamhub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # teamhub/templates links to the top-level templates/ (a real folder in the wheel).
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    _db = dj_database_url.parse(DATABASE_URL)
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every sync view may run on a fresh thread, so persistent
        # connections are never reused; a psycopg pool is.
        _db["CONN_MAX_AGE"] = 0
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": int(os.environ.get("DB_POOL_MIN", "2")),
            "max_size": int(os.environ.get("DB_POOL_MAX", "20")),
            "timeout": 10,
        }
    DATABASES = {"default": _db}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(DATA_DIR / "teamhub.sqlite3")),
            "OPTIONS": {
                # Concurrent writers: WAL lets readers run beside a writer,
                # IMMEDIATE takes the write lock up front (no upgrade deadlock)
                # and the timeout makes a second writer wait instead of failing.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Per process, so that two test runs on one checkout never share a file.
            "TEST": {"NAME": str(DATA_DIR / f"test-teamhub-{os.getpid()}.sqlite3")},
            # Under ASGI, Django runs sync code in one thread per process, so a
            # persistent SQLite connection is reused instead of reopened per request.
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": True,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "agency.User"

# --- cache and channel layer -------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "teamhub"),
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
                "CONNECTION_POOL_KWARGS": {"max_connections": 500, "retry_on_timeout": False},
                # reactive's entries stored as the bytes they are sent as (not pickled)
                "SERIALIZER": "reactive.serializers.EntrySerializer",
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": os.environ.get("CACHE_KEY_PREFIX", "teamhub") + ":asgi",
                "capacity": 5000,
                "expiry": 30,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "teamhub",
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# With a shared cache, sessions are read from it (and written through to the database):
# the fast lane identifies a session cookie from the cache, in its one fetch
# (reactive.sessions). A process-local cache would keep a session another process
# deleted (a logout, clearsessions): embedded mode keeps Django's database sessions,
# and the lane hands session requests to Django there.
if REDIS_URL:
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- reactive layer ------------------------------------------------------------

REACTIVE = {
    # Every event belongs to one tenant: the organization a row is scoped by.
    "TENANT_MODEL": "agency.organization",
    "TENANT_FIELD": "organization",
    # The event log and its live path: Redis Streams + pub/sub shared by every worker,
    # or (embedded) this process's memory.
    "LOG_BACKEND": "reactive.backends.redis.RedisLog"
    if REDIS_URL
    else "reactive.backends.memory.MemoryLog",
    "LOG_OPTIONS": {"url": REDIS_URL} if REDIS_URL else {},
    "LOG_MAXLEN": int(os.environ.get("REACTIVE_LOG_MAXLEN", "10000")),
    "DEFAULT_TTL": 3600,
    "AUTHORIZE_TENANT": "agency.access.can_follow",
    "ACCESS_TAGS": [
        "agency.membership:user_id={user}",
        "agency.user:id={user}",
        "agency.apitoken:user_id={user}",
    ],
    # The seed's relations: when an agent changes, organization queries by id
    # and message queries by sender and recipient are invalidated too. Models
    # not named here derive their relations from their foreign keys.
    "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "teamhub") + ":rx",
    "RELATIONS": {
        # Queries on organizations embed no child rows.
        "agency.organization": [],
        "agency.agent": [
            "agency.organization:id={organization_id}",
            "agency.message:from_agent_id={id}",
            "agency.message:to_agent_id={id}",
        ],
        "agency.message": [],
        "agency.tool": [],
        "agency.cron": [],
    },
}

# --- auth and security ---------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "teamhub.api.csrf_failure"  # JSON under /api/, the usual page elsewhere
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
DATA_UPLOAD_MAX_MEMORY_SIZE = 1_048_576
# Every request body, files included (TeamHub takes no uploads): larger is 413,
# refused by teamhub.middleware before it is read.
REQUEST_BODY_MAX_SIZE = int(os.environ.get("REQUEST_BODY_MAX_SIZE", DATA_UPLOAD_MAX_MEMORY_SIZE))
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- i18n, static, logging -----------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# DEBUG=0: hashed names and long cache lifetimes once collectstatic has run (teamhub/static.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "teamhub.static.HashedStaticFiles"
    },
}
if not DEBUG and (STATIC_ROOT / "staticfiles.json").is_file():
    MIDDLEWARE.insert(1, "servestatic.middleware.ServeStaticMiddleware")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "reactive": {"level": os.environ.get("REACTIVE_LOG_LEVEL", "INFO")},
        # 4xx answers are the clients' business; 5xx are still logged.
        "django.request": {"level": "ERROR", "handlers": ["console"], "propagate": False},
    },
}
