"""Show, install or check the change-capture triggers (they install themselves after migrate)."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from reactive import triggers


class Command(BaseCommand):
    """``manage.py reactive_triggers [--sql | --check | --install | --drop]``."""

    help = "Print the SQL of the change-capture triggers, or check, install or drop them."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--sql (default), --check, --install, --drop and --database."""
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--sql", action="store_true", help="print every statement (default)")
        group.add_argument(
            "--check", action="store_true", help="exit 1 if the triggers differ from the models"
        )
        group.add_argument("--install", action="store_true", help="bring the triggers in step")
        group.add_argument("--drop", action="store_true", help="drop the triggers and change table")
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen action on --database."""
        using = options["database"]
        if options["check"]:
            statements, stale = triggers.plan(using)
            if statements:
                for sql in statements:
                    self.stdout.write(sql.rstrip() + ";")
                raise CommandError(f"{len(statements)} statement(s) needed; run --install")
            self.stdout.write("triggers are in step with the models")
        elif options["install"]:
            count = triggers.install(using)
            self.stdout.write(f"{count} statement(s) run")
        elif options["drop"]:
            triggers.uninstall(using)
            self.stdout.write("triggers and change table dropped")
        else:
            for sql in triggers.all_sql(using):
                self.stdout.write(sql.rstrip() + ";\n")
