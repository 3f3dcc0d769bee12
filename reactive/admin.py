"""The admin for the reactive layer: its shared function metrics, read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.http import HttpRequest

from .models import FunctionStats

if TYPE_CHECKING:  # django-stubs' ModelAdmin is generic, Django's cannot be subscripted
    _ModelAdmin = admin.ModelAdmin[FunctionStats]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(FunctionStats)
class FunctionStatsAdmin(_ModelAdmin):
    """Per-function cache counters, summed over every process; written only by the layer."""

    list_display = ("name", "hits", "misses", "hit_rate", "invalidated", "errors", "updated_at")
    search_fields = ("name",)
    ordering = ("name",)

    @admin.display(description="hit rate")
    def hit_rate(self, obj: FunctionStats) -> str:
        """The share of calls answered from the cache, as a percentage (a dash before any call)."""
        rate = obj.hit_rate
        return "—" if rate is None else f"{rate:.1%}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Called by the admin to allow adding stats: never, only the layer writes them."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: FunctionStats | None = None) -> bool:
        """Called by the admin to allow editing stats: never, they are read-only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: FunctionStats | None = None) -> bool:
        """Called by the admin to allow deleting stats: never, they are read-only."""
        return False
