"""TeamHub's URLs: admin, the API (reactive functions, REST, auth, events) and pages."""

from django.contrib import admin
from django.urls import path

from .api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
