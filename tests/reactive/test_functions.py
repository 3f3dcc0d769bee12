"""Declaring reactive functions: both forms, table-level dependencies, options, execute()."""

from __future__ import annotations

import pytest

from agency.models import Agent, Organization
from reactive.errors import InvalidInput, NotAuthenticated
from reactive.functions import (
    Context,
    define_reactive_function,
    query,
    registry,
)
from reactive.schema import Input, NoInput

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def declared():
    """Functions declared by a test, removed from the registry afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry.pop(name, None)


def test_seed_form_with_table_dependency(declared, alice, bob, org_a, org_b):
    calls = []

    def count_agents(ctx, inp):
        calls.append(1)
        return Agent.objects.count()

    fn = define_reactive_function(
        name="test.countAgents", input=NoInput, dependencies=["agent"], handler=count_agents
    )
    declared.append(fn.name)
    assert registry["test.countAgents"] is fn and fn.kind == "query"
    assert fn.execute({}, user=alice) == 0
    assert fn.execute({}, user=alice) == 0 and len(calls) == 1  # cached
    assert fn.call({}, Context(user=alice)).tags == ["agency.agent"]
    Agent.objects.create(organization=org_b, name="any org", role="r")
    assert fn.execute({}, user=alice) == 1  # a table dependency sees every organization


def test_decorator_form_scoped_dependency(declared, alice, org_a, org_b):
    class ByOrg(Input):
        organization_id: str

    @query("test.names", input=ByOrg, dependencies=["agency.agent:organization={organization_id}"])
    def names(ctx, inp):
        return sorted(
            Agent.objects.filter(organization_id=inp.organization_id).values_list("name", flat=True)
        )

    declared.append("test.names")
    assert names.execute({"organizationId": str(org_a.pk)}, user=alice) == []
    Agent.objects.create(organization=org_b, name="b", role="r")
    hit = names.call({"organizationId": str(org_a.pk)}, Context(user=alice))
    assert hit.hit and hit.tags == ["agency.agent:*", f"agency.agent:organization_id={org_a.pk}"]
    Agent.objects.create(organization=org_a, name="a", role="r")
    assert names.execute({"organizationId": str(org_a.pk)}, user=alice) == ["a"]


def test_cache_disabled_and_public(declared):
    calls = []

    @query("test.public", cache=False, public=True)
    def ping(ctx, inp):
        calls.append(1)
        return "pong"

    declared.append("test.public")
    assert ping.execute() == "pong" and ping.execute() == "pong"
    assert len(calls) == 2 and not ping.call({}, Context()).hit


def test_execute_validates_and_requires_identity(alice, org_a):
    fn = registry["agents.getAll"]
    with pytest.raises(NotAuthenticated):
        fn.execute({"organizationId": str(org_a.pk)})
    with pytest.raises(InvalidInput) as err:
        fn.execute({"organizationId": str(org_a.pk), "limit": 0}, user=alice)
    assert err.value.errors[0]["field"] == "limit"
    # snake_case works from Python as well as camelCase from the wire
    assert fn.execute({"organization_id": org_a.pk}, user=alice) == []


def test_declaring_a_name_twice_is_an_error(declared):
    define_reactive_function(name="test.twice", handler=lambda c, i: 1)
    declared.append("test.twice")
    with pytest.raises(ValueError):
        define_reactive_function(name="test.twice", handler=lambda c, i: 2)


def test_failed_create_drops_the_provisioned_database(alice, monkeypatch):
    from agency import functions
    from agency.provisioning import deprovision as real_deprovision

    real_deprovision("test_org_doomed")  # whatever an earlier run left
    dropped = []
    monkeypatch.setattr(functions, "deprovision", lambda name: dropped.append(name))

    def broken(*args, **kwargs):
        raise RuntimeError("membership table on fire")

    monkeypatch.setattr(functions.Membership.objects, "create", broken)
    with pytest.raises(RuntimeError):
        registry["organizations.create"].execute(
            {"name": "Doomed", "databaseName": "test_org_doomed"}, user=alice
        )
    assert dropped == ["test_org_doomed"]
    assert not Organization.objects.filter(database_name="test_org_doomed").exists()
    real_deprovision("test_org_doomed")  # the stub only recorded the call


def test_provisioning_is_idempotent():
    from agency.provisioning import deprovision, provision

    deprovision("test_org_idem")
    try:
        assert provision("test_org_idem") is True
        assert provision("test_org_idem") is False  # already there: nothing to do
        deprovision("test_org_idem")
        assert provision("test_org_idem") is True  # really gone, so created again
    finally:
        deprovision("test_org_idem")
