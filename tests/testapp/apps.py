from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """General Django models (no agency) that the reactive layer must track like any other."""

    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Declare the app's reactive functions (tests/testapp/functions.py)."""
        from . import functions  # noqa: F401
