"""Reactive functions: a name, a kind, an input schema, dependencies and a handler.

Declare one with a decorator::

    @query("agents.getAll", input=AgentsIn,
           dependencies=["agency.agent:organization_id={organization_id}"],
           access=require_member("organization_id"))
    def get_agents(ctx, inp): ...

or in the original design's form, ``define_reactive_function(name=..., input=...,
dependencies=..., handler=...)``. Either way it lands in the registry, and runs
the same way from a view, a task or a shell: ``get_agents.execute({...}, user=u)``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.apps import apps
from django.core.exceptions import (
    ImproperlyConfigured,
    ObjectDoesNotExist,
    PermissionDenied,
    SynchronousOnlyOperation,
    ValidationError,
)
from django.db import transaction
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from . import metrics
from .cache import ENTRY_PREFIX, Lookup, reactive_cache
from .conf import reactive_settings
from .errors import (
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    ReactiveError,
    field_errors,
    pydantic_errors,
)
from .inline import CacheMiss
from .log import get_log
from .relations import declare, scoped_fields
from .schema import NoInput
from .tags import TagTemplate, check_scope, dependency_tags, normalize

Kind = Literal["query", "mutation"]
SEEN_INPUTS = 4096  # input objects whose tags and key a function keeps
# The callables below receive the parsed input, an instance of the function's own input
# schema: typed Any, since a callable annotated with that subclass of BaseModel is not a
# Callable taking BaseModel (arguments are contravariant).
Handler = Callable[["Context", Any], Any]
Dependencies = Sequence[str] | Callable[["Context", Any], Sequence[str]]
AccessCheck = Callable[["Context", Any], None]
ResultCheck = Callable[["Context", Any, Any], None]
# The tenant(s) whose events can invalidate a result: an input field, or computed.
TenantSpec = str | Callable[["Context", Any, Any], Any] | None


@dataclass
class Context:
    """Who is calling, and from where; `memo` caches per-call lookups (memberships)."""

    user: Any = None
    request: Any = None
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        """Whether the caller is a logged-in user."""
        return bool(self.user is not None and getattr(self.user, "is_authenticated", False))


@dataclass
class Result:
    """A function's answer with what clients need to keep it fresh.

    Cached queries carry their JSON as bytes (`body`), sent over HTTP as they
    are; `data` is decoded from them on first use.
    """

    value: Any = None
    key: str = ""
    tags: list[str] = field(default_factory=list)
    cursor: str = ""
    hit: bool = False
    stale: bool = False  # a miss caused by an invalidation (for metrics)
    lookup: Lookup | None = None

    @property
    def data(self) -> Any:
        """The result's data: decoded from the cache lookup, else the handler's value."""
        return self.lookup.data if self.lookup is not None else self.value

    @property
    def body(self) -> bytes | None:
        """The cached JSON as UTF-8 bytes, or None for an uncached result."""
        return self.lookup.body if self.lookup is not None else None

    @property
    def etag(self) -> str | None:
        """The result's ETag (from its cache entry), or None for an uncached result."""
        return self.lookup.etag if self.lookup is not None else None


class ReactiveFunction:
    """One declared query or mutation."""

    def __init__(
        self,
        *,
        name: str,
        handler: Handler,
        kind: Kind = "query",
        input: type[BaseModel] = NoInput,
        output: Any = None,
        dependencies: Dependencies = (),
        access: AccessCheck | None = None,
        check: ResultCheck | None = None,
        tenant: TenantSpec = None,
        public: bool = False,
        per_user: bool = False,
        cache: bool = True,
        ttl: int | None = None,
        description: str = "",
    ):
        self.name, self.kind, self.handler = name, kind, handler
        self.input, self.output = input, output
        self.dependencies = dependencies
        self.access, self.check = access, check
        self.tenant = tenant
        self.public, self.per_user = public, per_user
        self.cache_enabled, self.ttl = cache, ttl
        self.description = description or (handler.__doc__ or "").strip()
        self._templates: list[TagTemplate] | None = None
        self._seen: dict[int, tuple[BaseModel, tuple[Any, Any], list[str], str]] = {}
        if apps.models_ready:
            self.templates()  # a dependency no write could invalidate fails here, not later

    def templates(self) -> list[TagTemplate]:
        """The parsed dependency specs; ImproperlyConfigured for one no write can invalidate."""
        if self._templates is None:
            if callable(self.dependencies):
                return []
            parsed = [TagTemplate.parse(spec) for spec in self.dependencies]
            for template in parsed:
                check_scope(template.model, template.attname)
                declare(template)
            self._templates = parsed
        return self._templates

    def __repr__(self) -> str:
        return f"<ReactiveFunction {self.kind} {self.name}>"

    # -- pieces --------------------------------------------------------------------

    def parse_input(self, raw: Any) -> BaseModel:
        """Validate raw input (dict, camelCase or snake_case, or a model) into the schema."""
        if isinstance(raw, self.input):
            return raw
        try:
            return self.input.model_validate(raw or {})
        except PydanticError as exc:
            raise InvalidInput(errors=pydantic_errors(exc.errors())) from None

    def tags_for(self, ctx: Context, inp: BaseModel) -> list[str]:
        """The dependency tags of one call, placeholders filled from the input and caller."""
        if callable(self.dependencies):
            return _computed_tags(self.dependencies(ctx, inp))
        values = inp.model_dump()
        values["user"] = getattr(ctx.user, "pk", None)
        return dependency_tags(self.templates(), values)

    def key_for(self, ctx: Context, inp: BaseModel) -> str:
        """The cache key: the function, its input, and the caller for per-user functions."""
        parts: list[Any] = [inp.model_dump(mode="json")]
        if self.per_user:
            parts.append(str(getattr(ctx.user, "pk", "")))
        version = reactive_settings().CACHE_VERSION
        digest = hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return f"{ENTRY_PREFIX}{version}:{self.name}:{digest}"

    def tenants_for(self, ctx: Context, inp: BaseModel, data: Any) -> list[str]:
        """The tenants whose event streams carry this result's invalidations."""
        if self.tenant is None:
            return []
        found = (
            getattr(inp, self.tenant)
            if isinstance(self.tenant, str)
            else self.tenant(ctx, inp, data)
        )
        if found is None:
            return []
        return [str(t) for t in (found if isinstance(found, list | tuple | set) else [found])]

    # -- running ---------------------------------------------------------------------

    def call(self, raw_input: Any, ctx: Context) -> Result:
        """Validate, authorize, and answer (from cache for queries); raises ReactiveError."""
        if not self.public and not ctx.authenticated:
            raise NotAuthenticated()
        inp = self.parse_input(raw_input)
        started = time.perf_counter()
        try:
            if self.access:
                self.access(ctx, inp)
            result = self._query(ctx, inp) if self.kind == "query" else self._mutate(ctx, inp)
            if self.check:
                self.check(ctx, inp, result.data)
        except ReactiveError:
            raise
        except ObjectDoesNotExist:
            raise NotFound() from None
        except PermissionDenied as exc:
            raise Forbidden(str(exc) or "") from None
        except ValidationError as exc:
            errors = field_errors(exc.message_dict) if hasattr(exc, "error_dict") else None
            raise InvalidInput(" ".join(exc.messages), errors=errors) from None
        except (CacheMiss, SynchronousOnlyOperation):
            raise  # an inline attempt (inline.py) that must run in a thread: not an error
        except Exception:
            metrics.record_error(self.name)
            raise
        if self.kind == "query":
            ms = (time.perf_counter() - started) * 1000
            metrics.record_call(self.name, hit=result.hit, stale=result.stale, ms=ms)
        return result

    def _keys(self, ctx: Context, inp: BaseModel) -> tuple[list[str], str]:
        """`tags_for` and `key_for`, kept for an input object seen again.

        The fast lane keeps parsed inputs; both are pure functions of the input,
        the user and the cache version.
        """
        user, version = getattr(ctx.user, "pk", None), reactive_settings().CACHE_VERSION
        seen = self._seen.get(id(inp))
        if seen is not None and seen[0] is inp and seen[1] == (user, version):
            return list(seen[2]), seen[3]
        tags, key = self.tags_for(ctx, inp), self.key_for(ctx, inp)
        if not callable(self.dependencies):  # a callable may read anything of the context
            if len(self._seen) >= SEEN_INPUTS:
                self._seen.clear()
            self._seen[id(inp)] = (inp, (user, version), tags, key)
        return tags, key

    def _query(self, ctx: Context, inp: BaseModel) -> Result:
        tags, key = self._keys(ctx, inp)
        log = get_log()
        if not self.cache_enabled:
            return Result(self.handler(ctx, inp), key, tags, log.position())
        found = reactive_cache().fetch(
            key, tags, lambda: self.handler(ctx, inp), log.position, self.ttl or _default_ttl()
        )
        return Result(None, key, tags, found.cursor, found.hit, found.stale, lookup=found)

    def _mutate(self, ctx: Context, inp: BaseModel) -> Result:
        with transaction.atomic():
            return Result(self.handler(ctx, inp))

    def execute(self, input: Any = None, *, user: Any = None, request: Any = None) -> Any:
        """Run from anywhere (view, task, shell) and return the data alone."""
        return self.call(input, Context(user=user, request=request)).data


def _computed_tags(tags: Sequence[str]) -> list[str]:
    """Tags a dependency callable returned, normalized, with the wildcard guard of each scope.

    A scoped tag on a column writes do not emit (not a key, not declared in a
    static dependency or ``SCOPED_FIELDS``) would never be invalidated: refused.
    """
    out: set[str] = set()
    for tag in tags:
        normal = normalize(tag)
        out.add(normal)
        template = TagTemplate.parse(normal) if not normal.endswith(":*") else None
        if template is not None and template.attname is not None:
            if template.attname not in scoped_fields(template.model):
                raise ImproperlyConfigured(
                    f"dependency tag {tag!r}: writes to {template.model._meta.label} emit no "
                    f"tags on {template.attname}; name it in REACTIVE['SCOPED_FIELDS'] or in a "
                    "static dependency"
                )
            out.update(template.guards())
    return sorted(out)


def _default_ttl() -> int:
    ttl: int = reactive_settings().DEFAULT_TTL
    return ttl


class Registry(dict[str, ReactiveFunction]):
    """Every declared function by name."""

    def add(self, fn: ReactiveFunction) -> ReactiveFunction:
        """Register `fn` under its name; ValueError if another function holds it."""
        if fn.name in self and self[fn.name] is not fn:
            raise ValueError(f"reactive function {fn.name!r} is declared twice")
        self[fn.name] = fn
        return fn


registry = Registry()


def define_reactive_function(**options: Any) -> ReactiveFunction:
    """Declare a function from keyword options (the original design's form)."""
    return registry.add(ReactiveFunction(**options))


def query(name: str, **options: Any) -> Callable[[Handler], ReactiveFunction]:
    """Decorator: declare a cached, invalidated query."""

    def decorate(handler: Handler) -> ReactiveFunction:
        """Declare the decorated handler as query `name`."""
        return define_reactive_function(name=name, handler=handler, kind="query", **options)

    return decorate


def mutation(name: str, **options: Any) -> Callable[[Handler], ReactiveFunction]:
    """Decorator: declare a mutation (runs in a transaction; its writes invalidate)."""

    def decorate(handler: Handler) -> ReactiveFunction:
        """Declare the decorated handler as mutation `name`."""
        return define_reactive_function(name=name, handler=handler, kind="mutation", **options)

    return decorate
