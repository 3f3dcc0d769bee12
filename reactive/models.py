"""The reactive layer's own tables: shared metrics and clients' delivery positions."""

from django.conf import settings
from django.db import models


class FunctionStats(models.Model):
    """Counters of one reactive function, summed over every process."""

    name = models.CharField(max_length=200, primary_key=True)
    hits = models.BigIntegerField(default=0)
    misses = models.BigIntegerField(default=0)
    invalidated = models.BigIntegerField(default=0)  # misses caused by an invalidation
    errors = models.BigIntegerField(default=0)
    total_ms = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "function stats"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def calls(self) -> int:
        """How many calls were counted: hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float | None:
        """The share of calls answered from the cache, or None before any call."""
        return self.hits / self.calls if self.calls else None


class ClientPosition(models.Model):
    """The last event a client acknowledged, per user and client id."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    client_id = models.CharField(max_length=100)
    tenant = models.CharField(max_length=100, blank=True)
    event_id = models.CharField(max_length=40)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "client_id"], name="client_position_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.client_id} @ {self.event_id}"
