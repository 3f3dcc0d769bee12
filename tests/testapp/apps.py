from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """General Django models (no agency) that the reactive layer must track like any other."""

    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"
