"""The Django floor of bench/reads.py: a minimal async view behind no middleware.

Answers ``GET /floor`` with the bytes of the file ``BENCH_BODY_FILE`` (reads.py
writes agents.getAll's answer there), through Django's ASGI handler, its URL
resolver and an async view: the floor of any Django route. Its settings are
bench/lean_settings.py (TeamHub's, with ``MIDDLEWARE = []``).

    BENCH_BODY_FILE=body.json uvicorn bench.lean:application
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.lean_settings"  # this module is its URLconf

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

BODY = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()


async def floor(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="application/json")


urlpatterns = [path("floor", floor)]

application = get_asgi_application()
