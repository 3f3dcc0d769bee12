from django.apps import AppConfig


class AgencyConfig(AppConfig):
    """TeamHub's domain: organizations, agents, tools, messages, jobs and identity."""

    name = "agency"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import catalogs, crons, functions, members  # noqa: F401  (register the functions)
