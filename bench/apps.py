"""The bench app (bench/bench_settings.py): puts bench.agentsMiss in the registry.

So that ``/api/rx/bench.agentsMiss`` exists: agents.getAll with a free
``nonce`` field, a fresh cache key per request through ``/api/rx`` itself
(and the fast lane's lookup), where ``/bench/rx-miss/agents`` runs the same
function from a bench view. Django builds ``/api/rx`` from the registry when
the URLconf loads, after every app's ``ready()``.
"""

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench"
    label = "bench"

    def ready(self) -> None:
        from reactive.functions import registry

        from .views import agents_miss

        registry.add(agents_miss)
