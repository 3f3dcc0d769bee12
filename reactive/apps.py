"""The ``reactive`` app's configuration: change capture and system checks start with Django."""

from django.apps import AppConfig


class ReactiveConfig(AppConfig):
    """The reactive data layer: functions, tags, capture, cache, events."""

    name = "reactive"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Called by Django once the apps are loaded: installs the change capture."""
        from . import capture, checks  # noqa: F401  (checks registers the system checks)

        capture.install(self)
