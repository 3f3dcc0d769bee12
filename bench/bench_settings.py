"""TeamHub's settings plus the bench app (bench/apps.py), for the TeamHub servers of bench/reads.py.

The only difference: ``bench.agentsMiss`` is a registered query, so
``/api/rx/bench.agentsMiss`` answers it (a cache miss per request).
"""

from teamhub.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.BenchConfig"]  # noqa: F405
