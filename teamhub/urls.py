"""TeamHub's URLs: admin, the API (reactive functions, REST, auth, events) and pages."""

import os

from django.contrib import admin
from django.urls import include, path

from reactive import ack_view, events_view

from .api import api

urlpatterns = [
    *([path("bench/", include("bench.views"))] if os.environ.get("TEAMHUB_BENCH_VIEWS") else []),
    path("admin/", admin.site.urls),
    path("api/", api.urls),  # /api/events and /api/events/ack too: operations of the API
    # The names the reactive app reverses (its browser client's eventsPath and ackPath);
    # the API above answers these URLs first.
    path("api/events", events_view, name="reactive-events"),
    path("api/events/ack", ack_view, name="reactive-ack"),
    path("", include("agency.urls")),  # pages, live fragments, static files: keep last
]
