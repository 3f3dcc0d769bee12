"""The server-rendered pages, and the live fragments they are made of.

Every read goes through the reactive functions with the caller's identity
(the same validation, authorization and cache as the API); every write calls
a mutation. Fragments re-render in the browser when their tags are invalidated
(see reactive/fragments.py and docs/client.md).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import redirect, render
from django.utils.http import http_date
from django.views.decorators.http import require_http_methods, require_POST
from django.views.static import was_modified_since

from reactive import Context, InvalidInput, Loader, ReactiveError, fragment, registry

from .forms import AgentForm, LoginForm, MessageForm, ToolForm

RECENT_MESSAGES = 20
ALL = 200  # the functions' largest page: every agent or tool for choices and names


def call(request: HttpRequest, name: str, input: dict[str, Any] | None = None) -> Any:
    """Run a reactive function as the request's user and return its data."""
    return registry[name].call(input or {}, Context(user=request.user, request=request)).data


def reactive_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Log in first; a function's 403/404 becomes the error page with that status."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ReactiveError as exc:
            if exc.status == 401:
                return redirect_to_login(request.get_full_path())
            return render(
                request,
                "pages/error.html",
                {"status": exc.status, "message": exc.message},
                status=exc.status,
            )

    return login_required(wrapper)


def _agent_names(agents: list[dict]) -> dict[str, str]:
    return {agent["id"]: agent["name"] for agent in agents}


def _types(catalog: list[dict]) -> list[tuple[str, str]]:
    """Choices from toolTypes.getAll or messageTypes.getAll: (slug, name)."""
    return [(kind["slug"], kind["name"]) for kind in catalog]


# --- fragments ----------------------------------------------------------------------------------


@fragment("agency.organizations", template="fragments/organizations.html")
def organizations_fragment(load: Loader) -> dict[str, Any]:
    """The caller's organizations."""
    return {"organizations": load("organizations.getAll")}


@fragment("agency.organization", template="fragments/organization_header.html")
def organization_fragment(load: Loader, organization_id: str) -> dict[str, Any]:
    """An organization's heading."""
    return {"organization": load("organizations.getOne", {"id": organization_id})}


@fragment("agency.agents", template="fragments/agents.html")
def agents_fragment(load: Loader, organization_id: str) -> dict[str, Any]:
    """An organization's agents."""
    return {
        "agents": load("agents.getAll", {"organizationId": organization_id, "limit": 50}),
        "organization_id": organization_id,
    }


@fragment("agency.messages", template="fragments/messages.html")
def messages_fragment(
    load: Loader, organization_id: str, agent_id: str | None = None
) -> dict[str, Any]:
    """Recent messages of an organization (or of one agent), with the agents' names."""
    query = {"organizationId": organization_id, "limit": RECENT_MESSAGES}
    if agent_id:
        query["agentId"] = agent_id
    agents = load("agents.getAll", {"organizationId": organization_id, "limit": ALL})
    return {"messages": load("messages.getAll", query), "names": _agent_names(agents)}


@fragment("agency.message_form", template="fragments/message_form.html")
def message_form_fragment(load: Loader, organization_id: str) -> dict[str, Any]:
    """The organization page's "Post a message" form: its senders are the agents as they are now."""
    agents = load("agents.getAll", {"organizationId": organization_id, "limit": ALL})
    # Every select names its selected option: one that names none counts as changed by
    # the user in the browser (its first option is selected, not by default), and a
    # changed field is never morphed, so its options would not follow the agents.
    initial = {"from_agent_id": agents[0]["id"] if agents else "", "to_agent_id": ""}
    form = MessageForm(
        initial={**initial, "message_type": ""},
        agents=agents,
        message_types=_types(load("messageTypes.getAll")),
    )
    return {"message_form": form, "has_agents": bool(agents), "organization_id": organization_id}


@fragment("agency.agent", template="fragments/agent.html")
def agent_fragment(load: Loader, agent_id: str) -> dict[str, Any]:
    """One agent's details with its tools' names."""
    agent = load("agents.getOne", {"id": agent_id})
    tools = load("tools.getAll", {"organizationId": agent["organizationId"], "limit": ALL})
    names = {tool["id"]: tool["name"] for tool in tools}
    return {"agent": agent, "tools": [names[i] for i in agent["toolIds"] if i in names]}


@fragment("agency.agent_form", template="fragments/agent_form.html")
def agent_form_fragment(load: Loader, agent_id: str) -> dict[str, Any]:
    """The edit form of an agent, with the values as they are now."""
    agent = load("agents.getOne", {"id": agent_id})
    tools = load("tools.getAll", {"organizationId": agent["organizationId"], "limit": ALL})
    form = AgentForm(initial=AgentForm.initial_for(agent), tools=tools)
    return {"agent": agent, "form": form}


# --- identity -------------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    """Log in with a username and password (throttled like the API)."""

    template_name = "pages/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """Log out (POST only, CSRF-checked); the page's client clears its cache on submit."""

    next_page = "login"


# --- pages -------------------------------------------------------------------------------------


@reactive_page
def home(request: HttpRequest) -> HttpResponse:
    """The caller's organizations."""
    return render(request, "pages/organizations.html", {"page": "organizations"})


@reactive_page
def organization(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """An organization: its agents, tools and recent messages, live."""
    org = call(request, "organizations.getOne", {"id": org_id})
    return render(request, "pages/organization.html", {"org": org, "page": "organization"})


@reactive_page
@require_POST
def message_new(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """Post a message (from the organization page)."""
    org = call(request, "organizations.getOne", {"id": org_id})
    agents = call(request, "agents.getAll", {"organizationId": org_id, "limit": ALL})
    kinds = _types(call(request, "messageTypes.getAll"))
    form = MessageForm(request.POST, agents=agents, message_types=kinds)
    if form.is_valid():
        try:
            call(request, "messages.create", {"organizationId": str(org_id), **form.to_input()})
            return redirect("organization", org_id=org_id)
        except InvalidInput as exc:
            form.add_reactive_errors(exc)
    return render(
        request,
        "pages/organization.html",
        {"org": org, "message_form": form, "has_agents": bool(agents), "page": "organization"},
        status=422,
    )


@reactive_page
@require_http_methods(["GET", "POST"])
def agent_new(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """Create an agent."""
    org = call(request, "organizations.getOne", {"id": org_id})
    tools = call(request, "tools.getAll", {"organizationId": org_id, "limit": ALL})
    form = AgentForm(request.POST or None, tools=tools, initial={"temperature": 0.7})
    if request.method == "POST" and form.is_valid():
        try:
            agent = call(
                request, "agents.create", {"organizationId": str(org_id), **form.to_input()}
            )
            return redirect("agent", agent_id=agent["id"])
        except InvalidInput as exc:
            form.add_reactive_errors(exc)
    status = 422 if form.is_bound else 200
    return render(
        request, "pages/agent_new.html", {"org": org, "form": form, "page": "new"}, status=status
    )


@reactive_page
@require_http_methods(["GET", "POST"])
def tool_new(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """Create a tool."""
    org = call(request, "organizations.getOne", {"id": org_id})
    form = ToolForm(request.POST or None, tool_types=_types(call(request, "toolTypes.getAll")))
    if request.method == "POST" and form.is_valid():
        try:
            call(request, "tools.create", {"organizationId": str(org_id), **form.to_input()})
            return redirect("organization", org_id=org_id)
        except InvalidInput as exc:
            form.add_reactive_errors(exc)
    status = 422 if form.is_bound else 200
    return render(
        request, "pages/tool_new.html", {"org": org, "form": form, "page": "new"}, status=status
    )


@reactive_page
@require_http_methods(["GET", "POST"])
def agent(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """An agent's details, recent messages and edit form (POST saves the changed fields)."""
    found = call(request, "agents.getOne", {"id": agent_id})
    org = call(request, "organizations.getOne", {"id": found["organizationId"]})
    form = None
    status = 200
    if request.method == "POST":
        tools = call(request, "tools.getAll", {"organizationId": org["id"], "limit": ALL})
        form = AgentForm(request.POST, initial=AgentForm.initial_for(found), tools=tools)
        if form.is_valid():
            try:
                changes = form.changes()
                if changes:
                    call(request, "agents.update", {"id": str(agent_id), "data": changes})
                return redirect("agent", agent_id=agent_id)
            except InvalidInput as exc:
                form.add_reactive_errors(exc)
        status = 422
    context = {"agent": found, "org": org, "form": form, "page": "agent"}
    return render(request, "pages/agent.html", context, status=status)


@reactive_page
@require_POST
def agent_delete(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Delete an agent, then show its organization."""
    found = call(request, "agents.getOne", {"id": agent_id})
    call(request, "agents.delete", {"id": str(agent_id)})
    return redirect("organization", org_id=found["organizationId"])


@reactive_page
def live(request: HttpRequest, org_id: UUID) -> HttpResponse:
    """The live view: the event stream, the connection and the cache hit rate as they happen."""
    org = call(request, "organizations.getOne", {"id": org_id})
    transport = request.GET.get("transport", "auto")
    if transport not in ("auto", "ws", "sse"):
        transport = "auto"
    return render(
        request,
        "pages/live.html",
        {"org": org, "transport": transport, "page": "live"},
    )


@require_http_methods(["GET", "HEAD"])
def static_file(request: HttpRequest, path: str) -> HttpResponse:
    """A file of the apps' ``static/`` folders (the browser client), with Last-Modified.

    The ASGI server serves no static files by itself and these are small, so
    Django serves them in every mode; behind a proxy or CDN, run collectstatic
    and serve STATIC_ROOT there instead.
    """
    found = finders.find(path) if ".." not in path.split("/") else None
    if not found or not os.path.isfile(found):
        raise Http404(path)
    stat = os.stat(found)
    if not was_modified_since(request.META.get("HTTP_IF_MODIFIED_SINCE"), int(stat.st_mtime)):
        return HttpResponseNotModified()
    content_type = mimetypes.guess_type(found)[0] or "application/octet-stream"
    with open(found, "rb") as handle:
        response = HttpResponse(handle.read(), content_type=content_type)
    response["Last-Modified"] = http_date(stat.st_mtime)
    response["Cache-Control"] = "public, max-age=0, must-revalidate"
    return response
