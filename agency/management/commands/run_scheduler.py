"""``manage.py run_scheduler``: run the crons (agency/scheduler.py) until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.models import Cron, Message
from agency.scheduler import MAX_SLEEP, Scheduler

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Command(BaseCommand):
    help = (
        "Run the crons: each due slot of an enabled cron posts one message from its agent. "
        "Any number may run at once (each slot fires once). SIGTERM or Ctrl-C stops it after "
        "the current tick."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="fire what is due now, then exit (for a cron job)"
        )
        parser.add_argument(
            "--max-sleep",
            type=float,
            default=MAX_SLEEP,
            help=f"seconds between two looks at the crons, at most (default {MAX_SLEEP:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["max_sleep"] <= 3600:
            raise CommandError("--max-sleep must be more than 0 and at most 3600 seconds")
        scheduler = Scheduler(max_sleep=options["max_sleep"], on_fire=self.report)
        try:
            if options["once"]:
                fired = scheduler.tick()
                self.stdout.write(f"Fired {fired} cron slot(s).")
                return
            previous = {
                sig: signal.signal(sig, lambda *_: scheduler.stop()) for sig in STOP_SIGNALS
            }
            try:
                self.stdout.write(
                    f"Scheduler running (pid {os.getpid()}); SIGTERM or Ctrl-C stops it."
                )
                self.stdout.flush()
                scheduler.run()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            self.stdout.write("Scheduler stopped.")
        finally:
            scheduler.close()

    def report(self, cron: Cron, message: Message) -> None:
        """One line per run."""
        self.stdout.write(
            f"cron {cron.pk} ({cron.schedule}): ran the slot of {cron.last_run_at.isoformat()}, "
            f"message {message.pk}"
        )
        self.stdout.flush()
