"""reactive's own tables (reactive/models.py) and their admin (reactive/admin.py).

Named apart from tests/agency/test_models.py and tests/agency/test_admin.py (agency's), whose
module names pytest would otherwise confuse with these (tests/ is no package).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from reactive.models import ClientPosition, FunctionStats

pytestmark = pytest.mark.django_db


def test_calls_and_hit_rate():
    assert FunctionStats(name="f").hit_rate is None  # before any call
    stats = FunctionStats(name="f", hits=3, misses=1)
    assert (stats.calls, stats.hit_rate, str(stats)) == (4, 0.75, "f")


def test_one_position_per_user_and_client(make_user):
    user = make_user()
    position = ClientPosition.objects.create(user=user, client_id="tab-1", event_id="10")
    assert str(position) == f"{user.pk}/tab-1 @ 10"
    ClientPosition.objects.create(user=user, client_id="tab-2", event_id="10")
    with pytest.raises(IntegrityError):
        ClientPosition.objects.create(user=user, client_id="tab-1", event_id="11")


def test_the_changelist_shows_hit_rates_to_a_superuser_and_searches_by_name():
    FunctionStats.objects.create(name="books.byAuthor", hits=1, misses=3)
    FunctionStats.objects.create(name="shelves.idle")
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.test"))
    url = reverse("admin:reactive_functionstats_changelist")
    page = client.get(url)
    assert page.status_code == 200
    assert "books.byAuthor" in page.content.decode() and "shelves.idle" in page.content.decode()
    busy = client.get(url, {"q": "books"}).content.decode()
    assert "25.0%" in busy and "shelves.idle" not in busy and "—" not in busy
    idle = client.get(url, {"q": "shelves"}).content.decode()
    assert "—" in idle  # a dash before any call
    assert client.get(reverse("admin:reactive_functionstats_add")).status_code == 403
