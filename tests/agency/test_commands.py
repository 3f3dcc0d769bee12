"""Management commands: API tokens and reactive stats."""

import pytest
from django.core.management import CommandError, call_command

from agency.models import ApiToken, hash_token
from reactive.functions import Context, registry


@pytest.mark.django_db
def test_api_token_create_list_revoke(alice, capsys):
    call_command("api_token", "create", "alice", "--name", "import")
    out = capsys.readouterr().out
    raw = next(line for line in out.splitlines() if line.startswith(ApiToken.PREFIX))
    token = ApiToken.objects.get(token_hash=hash_token(raw))
    assert token.name == "import" and raw not in str(ApiToken.objects.values_list())
    call_command("api_token", "list", "alice")
    assert "import" in capsys.readouterr().out
    call_command("api_token", "revoke", str(token.pk))
    assert not ApiToken.objects.active().filter(pk=token.pk).exists()
    with pytest.raises(CommandError):
        call_command("api_token", "create", "nobody")
    with pytest.raises(CommandError):
        call_command("api_token", "revoke", "not-a-uuid")


@pytest.mark.django_db(transaction=True)
def test_reactive_stats_shows_hits_and_misses(alice, org_a, capsys):
    fn = registry["agents.getAll"]
    for _ in range(3):
        fn.call({"organizationId": str(org_a.pk)}, Context(user=alice))
    call_command("reactive_stats")
    line = next(
        row for row in capsys.readouterr().out.splitlines() if row.startswith("agents.getAll")
    )
    hits, misses = line.split()[1:3]
    assert (int(hits), int(misses)) == (2, 1)


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration():
    """`makemigrations --check`: a model change without its migration fails the suite."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_reactive_triggers_are_in_step_and_printable(capsys):
    call_command("reactive_triggers", "--check")
    assert "in step" in capsys.readouterr().out
    call_command("reactive_triggers", "--sql")
    sql = capsys.readouterr().out
    assert "reactive_change" in sql and "agency_agent" in sql
