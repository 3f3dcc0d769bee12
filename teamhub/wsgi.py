"""WSGI entry point (HTTP only; real-time needs the ASGI application)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamhub.settings")
application = get_wsgi_application()
