"""Baseline views served only to benchmarks (TEAMHUB_BENCH_VIEWS=1): the plain-Django alternative.

Each answers the same 50 agents as agents.getAll, with the same identity and
membership check, so the benchmark compares like with like.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from ninja import NinjaAPI

from agency.models import Agent, Membership
from agency.schemas import AgentOut, ByOrganization
from agency.serializers import AGENT_FIELDS, wire
from reactive.functions import ReactiveFunction, registry
from reactive.http import query_input, run


async def minimal(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


def _allowed(request: HttpRequest, org: str) -> bool:
    user = request.user
    return (
        user.is_authenticated and Membership.objects.filter(user=user, organization_id=org).exists()
    )


def orm_agents(request: HttpRequest) -> HttpResponse:
    org = request.GET.get("organizationId", "")
    if not _allowed(request, org):
        return JsonResponse({"error": "forbidden"}, status=403)
    rows = Agent.objects.filter(organization_id=org).order_by("-created_at").values(*AGENT_FIELDS)
    return JsonResponse([wire(row) for row in rows[:50]], safe=False)


class MissInput(ByOrganization):
    nonce: str = ""  # part of the cache key: a fresh entry per request


_source = registry["agents.getAll"]
agents_miss = ReactiveFunction(
    name="bench.agentsMiss",
    input=MissInput,
    handler=_source.handler,
    dependencies=_source.dependencies,
    access=_source.access,
    tenant=_source.tenant,
)


def reactive_miss(request: HttpRequest) -> HttpResponse:
    """agents.getAll through the same path as /api/rx, always a cache miss."""
    return run(agents_miss, request, lambda: query_input(request, agents_miss))


ninja_api = NinjaAPI(urls_namespace="bench-ninja", docs_url=None, openapi_url=None)


@ninja_api.get("/agents", response={200: list[AgentOut], 403: dict}, by_alias=True)
def ninja_agents(request: HttpRequest, organizationId: str):  # noqa: N803 (the wire name)
    if not _allowed(request, organizationId):
        return 403, {"error": "forbidden"}
    return 200, list(
        Agent.objects.filter(organization_id=organizationId).order_by("-created_at")[:50]
    )


urlpatterns = [
    path("minimal", minimal),
    path("orm/agents", orm_agents),
    path("rx-miss/agents", reactive_miss),
    path("ninja/", ninja_api.urls),
]
