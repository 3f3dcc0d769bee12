"""Settings of the Django floor of bench/reads.py: TeamHub's, without any middleware.

One URL (bench/lean.py) and no middleware at all: what any Django route costs
before a middleware or a view does anything.
"""

from teamhub.settings import *  # noqa: F403

MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.lean"
