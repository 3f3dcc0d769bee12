"""Print the reactive functions' hit, miss and invalidation counters (all workers)."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from reactive import metrics
from reactive.models import ClientPosition


class Command(BaseCommand):
    """``manage.py reactive_stats``: function metrics, and client positions with --positions."""

    help = "Show reactive function metrics summed over every process, and client positions."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Called by Django to add the ``--positions`` option."""
        parser.add_argument("--positions", action="store_true", help="also list client acks")

    def handle(self, *args: Any, **options: Any) -> None:
        """Called to run the command: print the metrics table, then client positions if asked."""
        rows = metrics.snapshot()
        if not rows:
            self.stdout.write("No reactive function has been called yet.")
        header = f"{'function':<28}{'hits':>10}{'misses':>10}{'hit rate':>10}{'invalidated':>13}{'errors':>8}{'avg ms':>9}"
        self.stdout.write(header)
        for row in rows:
            rate = f"{row['hitRate']:.1%}" if row["hitRate"] is not None else "-"
            avg = f"{row['avgMs']:.2f}" if row["avgMs"] is not None else "-"
            self.stdout.write(
                f"{row['name']:<28}{row['hits']:>10}{row['misses']:>10}{rate:>10}"
                f"{row['invalidated']:>13}{row['errors']:>8}{avg:>9}"
            )
        if options["positions"]:
            for pos in ClientPosition.objects.select_related("user").order_by("-updated_at")[:100]:
                self.stdout.write(f"{pos.user} {pos.client_id} {pos.tenant} @ {pos.event_id}")
