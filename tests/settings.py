"""Test settings: TeamHub's, plus a small app of general models (tests/testapp)."""

from teamhub.settings import *  # noqa: F403
from teamhub.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
