"""Every ORM write path publishes the tags it touched, once, after commit, never on rollback."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from agency.models import Agent, Membership, Message, Organization, Tool
from reactive import capture
from reactive.tags import row_tag, scoped_tag, wildcard_tag

pytestmark = pytest.mark.django_db(transaction=True)


def tags_of(seen: list[dict], tenant=None) -> set[str]:
    out: set[str] = set()
    for changes in seen:
        for key, tags in changes.items():
            if tenant is None or key == str(tenant):
                out |= tags
    return out


def agents_of(org) -> str:
    return scoped_tag(Agent, "organization_id", org.pk)


def test_create_publishes_row_scope_and_relations(published, org_a):
    published.clear()
    agent = Agent.objects.create(organization=org_a, name="n", role="r")
    assert len(published) == 1
    tags = published[0][str(org_a.pk)]
    assert {"agency.agent", row_tag(Agent, agent.pk), agents_of(org_a)} <= tags
    # the seed's relations: the organization by id, messages by sender and recipient
    assert row_tag(Organization, org_a.pk) in tags
    assert scoped_tag(Message, "from_agent_id", agent.pk) in tags
    assert scoped_tag(Message, "to_agent_id", agent.pk) in tags


def test_save_moving_an_agent_invalidates_both_organizations(published, agent_a, org_b):
    published.clear()
    agent_a.organization = org_b
    agent_a.save()
    assert agents_of(agent_a.organization) in tags_of(published, org_b.pk)
    old_org = Organization.objects.exclude(pk=org_b.pk).get()
    # old scope goes to the old organization's stream, new scope to the new one
    assert agents_of(old_org) in tags_of(published, old_org.pk)
    assert agents_of(old_org) not in tags_of(published, org_b.pk)


def test_deferred_scope_field_is_read_before_save(published, agent_a, org_b):
    agent = Agent.objects.only("id", "name").get(pk=agent_a.pk)
    published.clear()
    agent.organization_id = org_b.pk
    agent.save()
    assert agents_of(agent_a.organization) in tags_of(published)


def test_delete_and_queryset_delete(published, org_a):
    a1 = Agent.objects.create(organization=org_a, name="1", role="r")
    a2 = Agent.objects.create(organization=org_a, name="2", role="r")
    published.clear()
    a1_pk = a1.pk
    a1.delete()
    assert row_tag(Agent, a1_pk) in tags_of(published)
    published.clear()
    Agent.objects.filter(pk=a2.pk).delete()
    assert row_tag(Agent, a2.pk) in tags_of(published)
    assert agents_of(org_a) in tags_of(published)


def test_queryset_update_old_and_new_scopes(published, org_a, org_b):
    agent = Agent.objects.create(organization=org_a, name="1", role="r")
    published.clear()
    assert Agent.objects.filter(pk=agent.pk).update(organization=org_b) == 1
    assert len(published) == 1
    tags = tags_of(published)
    assert {agents_of(org_a), agents_of(org_b), row_tag(Agent, agent.pk)} <= tags


def test_queryset_update_reads_no_row_and_drains_in_one_claim(published, org_a):
    from django.test.utils import CaptureQueriesContext

    Agent.objects.create(organization=org_a, name="1", role="r")
    published.clear()
    with CaptureQueriesContext(connection) as queries:
        Agent.objects.filter(organization=org_a).update(name="renamed")
    statements = [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert [q for q in statements if Agent._meta.db_table in q] == [statements[-1]]
    assert len(statements) <= 3, statements  # the update, then (lock and) claim
    assert agents_of(org_a) in tags_of(published)


def test_a_large_update_publishes_every_row_exactly(published, org_a, org_b):
    agents = Agent.objects.bulk_create(
        [Agent(organization=org_a, name=str(i), role="r") for i in range(300)]
    )
    published.clear()
    Agent.objects.filter(organization=org_a).update(organization=org_b)
    assert len(published) == 1, "one transaction: one change set"
    tags = tags_of(published)
    assert {row_tag(Agent, a.pk) for a in agents} <= tags
    assert {agents_of(org_a), agents_of(org_b)} <= tags
    assert wildcard_tag(Agent) not in tags, "the rows are known: no wildcard"


def test_bulk_create_and_bulk_update(published, org_a, org_b):
    published.clear()
    agents = Agent.objects.bulk_create(
        [Agent(organization=org_a, name=f"b{i}", role="r") for i in range(3)]
    )
    assert {row_tag(Agent, a.pk) for a in agents} <= tags_of(published, org_a.pk)
    loaded = list(Agent.objects.filter(pk__in=[a.pk for a in agents]))
    published.clear()
    loaded[0].organization = org_b
    Agent.objects.bulk_update(loaded, ["organization"])
    assert agents_of(org_a) in tags_of(published, org_a.pk)
    assert agents_of(org_b) in tags_of(published, org_b.pk)


def test_m2m_add_remove_set_clear(published, agent_a, org_a):
    t1 = Tool.objects.create(organization=org_a, name="t1")
    t2 = Tool.objects.create(organization=org_a, name="t2")
    for action in (
        lambda: agent_a.tools.add(t1, t2),
        lambda: agent_a.tools.remove(t1),
        lambda: agent_a.tools.set([t1]),
        lambda: agent_a.tools.clear(),
        lambda: t2.agents.add(agent_a),  # the reverse side
    ):
        published.clear()
        action()
        tags = tags_of(published, org_a.pk)
        assert row_tag(Agent, agent_a.pk) in tags, tags
        assert "agency.agent_tools" in tags


def test_one_event_per_transaction_per_organization(published, org_a, org_b):
    published.clear()
    with transaction.atomic():
        for i in range(5):
            Agent.objects.create(organization=org_a, name=str(i), role="r")
        Agent.objects.create(organization=org_b, name="b", role="r")
        assert published == []  # nothing before commit
    assert len(published) == 1
    assert set(published[0]) == {str(org_a.pk), str(org_b.pk)}


def test_rollback_publishes_nothing(published, org_a):
    published.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        Agent.objects.create(organization=org_a, name="x", role="r")
        raise RuntimeError
    assert published == []
    Agent.objects.create(organization=org_a, name="y", role="r")  # next transaction still works
    assert len(published) == 1


def test_savepoint_rollback_drops_only_its_changes(published, org_a, org_b):
    published.clear()
    with transaction.atomic():
        Agent.objects.create(organization=org_a, name="kept", role="r")
        try:
            with transaction.atomic():
                Agent.objects.create(organization=org_b, name="dropped", role="r")
                raise ValueError
        except ValueError:
            pass
        Tool.objects.create(organization=org_a, name="after")
    assert len(published) == 1
    assert set(published[0]) == {str(org_a.pk)}
    assert scoped_tag(Tool, "organization_id", org_a.pk) in published[0][str(org_a.pk)]


def test_raw_sql_with_manual_invalidation(published, agent_a):
    published.clear()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Agent._meta.db_table} SET name = %s WHERE id = %s",
                ["raw", agent_a.pk.hex if connection.vendor == "sqlite" else agent_a.pk],
            )
        capture.invalidate(row_tag(Agent, agent_a.pk), tenant=agent_a.organization_id)
        assert published == []
    assert row_tag(Agent, agent_a.pk) in tags_of(published, agent_a.organization_id)


def test_raw_sql_needs_no_manual_invalidation(published, agent_a):
    published.clear()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Agent._meta.db_table} SET name = %s WHERE id = %s",
            ["raw", agent_a.pk.hex if connection.vendor == "sqlite" else agent_a.pk],
        )
    assert {row_tag(Agent, agent_a.pk), agents_of(agent_a.organization)} <= tags_of(
        published, agent_a.organization_id
    )


def test_invalidate_takes_dependency_spellings(published, agent_a):
    published.clear()
    capture.invalidate("agent", f"agency.Agent:organization={agent_a.organization_id}")
    assert tags_of(published) == {"agency.agent", agents_of(agent_a.organization)}
    with pytest.raises(LookupError):
        capture.invalidate("agency.agent:nosuchfield=1")


def test_invalidate_model_emits_wildcard(published):
    capture.invalidate_model(Agent)
    assert tags_of(published) == {"agency.agent", wildcard_tag(Agent)}


def test_ignored_apps_publish_nothing(published, alice):
    from reactive.models import FunctionStats

    published.clear()
    FunctionStats.objects.create(name="x")
    assert published == []


def test_a_row_locked_in_this_transaction_is_saved_without_a_second_read(agent_a):
    from django.test.utils import CaptureQueriesContext

    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_a.pk)
        with CaptureQueriesContext(connection) as queries:
            agent.role = "changed"
            agent.save()
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and Agent._meta.db_table in q["sql"]
    ]
    assert reads == [], "capture reads no row before a save"
    assert Agent.objects.get(pk=agent_a.pk).role == "changed"


@pytest.mark.parametrize("other_write", ["save", "queryset update"])
def test_a_locked_copy_saved_after_its_row_moved_leaves_every_list_right(
    alice, agent_a, org_a, org_b, other_write
):
    """In one transaction the row moves to B, then a stale locked copy moves it back to A."""
    from reactive.functions import Context, registry

    Membership.objects.create(user=alice, organization=org_b)
    ctx = Context(user=alice)

    def names(org) -> list[str]:
        rows = registry["agents.getAll"].call({"organizationId": str(org.pk)}, ctx).data
        return [row["name"] for row in rows]

    assert names(org_a) == [agent_a.name] and names(org_b) == []  # both cached
    with transaction.atomic():
        stale = Agent.objects.select_for_update().get(pk=agent_a.pk)
        if other_write == "save":
            mover = Agent.objects.get(pk=agent_a.pk)
            mover.organization = org_b
            mover.save()
        else:
            Agent.objects.filter(pk=agent_a.pk).update(organization=org_b)
        stale.role = "back in A"
        stale.save()  # writes organization A again
    assert Agent.objects.get(pk=agent_a.pk).organization_id == org_a.pk
    assert names(org_a) == [agent_a.name] and names(org_b) == []
