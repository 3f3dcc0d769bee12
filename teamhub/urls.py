"""TeamHub's URLs: admin, the API (reactive functions, REST, auth, events) and pages."""

from django.contrib import admin
from django.urls import path

from reactive.sse import ack_view, events_view

from .api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/events", events_view, name="reactive-events"),
    path("api/events/ack", ack_view, name="reactive-ack"),
    path("api/", api.urls),
]
