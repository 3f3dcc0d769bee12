"""Live fragments: server-rendered HTML that the browser keeps fresh.

A fragment is a template rendered from the results of reactive queries, run
with the caller's identity (so pages get the same validation, authorization
and cache as the API). Declare one like a reactive function::

    @fragment("agency.agents", template="fragments/agents.html")
    def agents(load, organization_id: str):
        return {"agents": load("agents.getAll", {"organizationId": organization_id})}

and place it in a page with ``{% live_fragment "agency.agents" organization_id=org.id %}``
(``{% load reactive %}``). The tag renders the fragment inside a wrapper that
carries what the browser client needs: the fragment's URL, the tags and
tenants of the queries it read, the queries themselves (for WebSocket
subscriptions) and the log position it was read at. When an event's tags
intersect the fragment's, the client fetches ``GET <prefix>fragments/<name>?<params>``
(JSON: ``html``, ``tags``, ``tenants``, ``queries``, ``cursor``) and morphs the
new HTML in place.

A single query needs no declaration: ``{% live_query "agents.getAll"
organizationId=org.id template="fragments/agents.html" var="agents" %}`` signs
the query, its input and the template into the fragment's URL, so a client can
re-render it but cannot choose another template or input.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from .errors import InvalidInput, NotAuthenticated, NotFound, ReactiveError
from .functions import Context, registry
from .http import CACHE_HEADER, BadRequest, error_response, json_response

QUERY_FRAGMENT = "reactive.query"
SIGNING_SALT = "reactive.fragment"
MAX_PARAM_LENGTH = 2000


@dataclass
class Rendered:
    """A rendered fragment and what a client needs to keep it fresh."""

    html: str
    tags: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    cursor: str = ""
    hits: int = 0
    misses: int = 0

    def meta(self) -> dict[str, Any]:
        """The JSON answer of the fragment endpoint."""
        return {
            "html": self.html,
            "tags": self.tags,
            "tenants": self.tenants,
            "queries": self.queries,
            "cursor": self.cursor,
            "hits": self.hits,
            "misses": self.misses,
        }


class Loader:
    """Runs reactive queries for one fragment render and records their tags and cursors.

    Call it with a function name and its raw (camelCase) input; it returns the
    data and raises the function's ReactiveError (401/403/404/422) unchanged.
    """

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.tags: set[str] = set()
        self.tenants: set[str] = set()
        self.queries: list[dict[str, Any]] = []
        self.cursor = ""
        self.hits = self.misses = 0

    def __call__(self, name: str, input: Mapping[str, Any] | None = None) -> Any:
        """Run query `name` for the fragment and return its data, noting what keeps it fresh.

        Its tags and tenants join the fragment's, and the fragment's cursor
        becomes the oldest of its queries' cursors.
        """
        fn = registry.get(name)
        if fn is None or fn.kind != "query":
            raise NotFound(f"No query named {name!r}.")
        raw = jsonable(dict(input or {}))
        result = fn.call(raw, self.ctx)
        self.tags.update(result.tags)
        self.tenants.update(fn.tenants_for(self.ctx, fn.parse_input(raw), result.data))
        self.queries.append({"name": name, "input": raw})
        first = len(self.queries) == 1
        self.cursor = result.cursor if first else _min_position(self.cursor, result.cursor)
        if result.hit:
            self.hits += 1
        else:
            self.misses += 1
        return result.data


def _min_position(a: str, b: str) -> str:
    """The older of two log positions (a fragment is as fresh as its oldest query)."""
    if not (a.isdigit() and b.isdigit()):
        return ""  # unknown: the client treats every later event as newer
    return a if int(a) <= int(b) else b


def jsonable(value: Any) -> Any:
    """Template values (UUIDs, model-ish objects) made JSON-ready for inputs and signing."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, UUID):
        return str(value)
    return str(value)


LoadFunction = Callable[..., Mapping[str, Any]]
TemplateSpec = str | Callable[[Mapping[str, str]], str]


class Fragment:
    """One declared fragment: a name, a template and a load function."""

    def __init__(self, name: str, template: TemplateSpec, load: LoadFunction, public: bool = False):
        self.name, self.template, self.load, self.public = name, template, load, public
        self.signature = inspect.signature(load)

    def __repr__(self) -> str:
        return f"<Fragment {self.name}>"

    def render(self, request: HttpRequest, params: Mapping[str, str]) -> Rendered:
        """Run the load function with the caller's identity and render the template."""
        ctx = Context(user=getattr(request, "user", None), request=request)
        if not self.public and not ctx.authenticated:
            raise NotAuthenticated()
        loader = Loader(ctx)
        try:
            bound = self.signature.bind(loader, **params)
        except TypeError:
            accepted = list(self.signature.parameters)[1:]
            raise InvalidInput(
                f"Fragment {self.name!r} takes the parameters {accepted}.",
                errors=[{"field": name, "message": "Unexpected."} for name in params],
            ) from None
        context = dict(self.load(*bound.args, **bound.kwargs))
        template = self.template(params) if callable(self.template) else self.template
        html = render_to_string(template, context, request=request)
        return Rendered(
            html=html,
            tags=sorted(loader.tags),
            tenants=sorted(loader.tenants),
            queries=loader.queries,
            cursor=loader.cursor,
            hits=loader.hits,
            misses=loader.misses,
        )


class FragmentRegistry(dict[str, Fragment]):
    """Every declared fragment by name."""

    def add(self, item: Fragment) -> Fragment:
        """Register `item`; a second, different fragment of the same name is an error."""
        existing = self.get(item.name)
        if existing is not None and existing.load is not item.load:
            raise ValueError(f"fragment {item.name!r} is declared twice")
        self[item.name] = item
        return item


fragments = FragmentRegistry()


def fragment(
    name: str, *, template: TemplateSpec, public: bool = False
) -> Callable[[LoadFunction], LoadFunction]:
    """Decorator: declare a live fragment.

    The decorated function receives a :class:`Loader` first (call it with a
    query name and input to get data) and the fragment's parameters (strings)
    as keywords, and returns the template context.
    """

    def decorate(load: LoadFunction) -> LoadFunction:
        """Register the decorated loader as fragment `name`."""
        fragments.add(Fragment(name, template, load, public=public))
        return load

    return decorate


# --- the built-in single-query fragment of {% live_query %} ----------------------------


def sign_query(name: str, input: Mapping[str, Any], template: str, var: str) -> str:
    """The signed spec of a single-query fragment (its only parameter, ``s``)."""
    spec = {"q": name, "i": jsonable(dict(input)), "t": template, "v": var}
    return signing.dumps(spec, salt=SIGNING_SALT, compress=True)


def _unsign(s: str) -> dict[str, Any]:
    try:
        spec = signing.loads(s, salt=SIGNING_SALT)
    except signing.BadSignature:
        raise BadRequest("Invalid fragment signature.") from None
    if not isinstance(spec, dict) or not {"q", "i", "t", "v"} <= set(spec):
        raise BadRequest("Invalid fragment signature.")
    return spec


def _load_query(load: Loader, s: str) -> dict[str, Any]:
    spec = _unsign(s)
    return {spec["v"]: load(spec["q"], spec["i"])}


fragments.add(
    Fragment(QUERY_FRAGMENT, template=lambda params: _unsign(params["s"])["t"], load=_load_query)
)


# --- rendering in pages ------------------------------------------------------------------


def fragment_url(name: str, params: Mapping[str, str]) -> str:
    """The URL a client fetches to re-render a fragment."""
    url = reverse("reactive-fragment", args=[name])
    return f"{url}?{urlencode(params)}" if params else url


def clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Fragment parameters as the strings they are when they come back in a URL."""
    return {k: str(jsonable(v)) for k, v in params.items() if v is not None}


def render_fragment(request: HttpRequest, name: str, params: Mapping[str, Any]) -> Rendered:
    """Render a declared fragment by name; raises ReactiveError (NotFound when undeclared)."""
    found = fragments.get(name)
    if found is None:
        raise NotFound(f"No fragment named {name!r}.")
    return found.render(request, clean_params(params))


def _attr_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


ERROR_MESSAGES = {
    401: "Your session has ended: log in again to see this.",
    403: "You do not have access to this.",
    404: "This no longer exists.",
}


def live_wrapper(
    request: HttpRequest,
    name: str,
    params: Mapping[str, Any],
    *,
    element: str = "div",
    css_class: str = "",
) -> SafeString:
    """A fragment rendered inside its live wrapper (what the template tags output).

    An error (403 for a page that did not check access first, 404 for a row
    that is gone) renders as a short notice in a wrapper that stays live, so it
    recovers when the data comes back.
    """
    cleaned = clean_params(params)
    if not element.isalnum():
        raise ValueError("element must be a tag name")
    try:
        rendered = render_fragment(request, name, cleaned)
        error = ""
    except ReactiveError as exc:
        message = ERROR_MESSAGES.get(exc.status, exc.message)
        rendered = Rendered(html=str(format_html('<p class="rx-notice">{}</p>', message)))
        error = str(exc.status)
    attrs = format_html(
        ' class="{}" data-rx-fragment="{}" data-rx-src="{}" data-rx-tags="{}"'
        ' data-rx-tenants="{}" data-rx-queries="{}" data-rx-cursor="{}"',
        " ".join(filter(None, ["rx-fragment", css_class])),
        name,
        fragment_url(name, cleaned),
        _attr_json(rendered.tags),
        _attr_json(rendered.tenants),
        _attr_json(rendered.queries),
        rendered.cursor,
    )
    if error:
        attrs += format_html(' data-rx-error="{}"', error)
    return mark_safe(f"<{element}{attrs}>{rendered.html}</{element}>")


# --- the endpoint ----------------------------------------------------------------------------


@require_GET
def fragment_view(request: HttpRequest, name: str) -> HttpResponse:
    """``GET fragments/<name>?<params>``: the fragment re-rendered for the caller, as JSON."""
    try:
        params = {k: request.GET[k] for k in request.GET}
        if any(len(v) > MAX_PARAM_LENGTH for v in params.values()):
            raise InvalidInput("A fragment parameter is too long.")
        rendered = render_fragment(request, name, params)
    except ReactiveError as exc:
        response = error_response(exc)
        response["Cache-Control"] = "private, no-store"
        return response
    return json_response(
        rendered.meta(),
        headers={
            CACHE_HEADER: "miss" if rendered.misses else "hit",
            "Cache-Control": "private, no-store",
            "Vary": "Cookie, Authorization",
        },
    )


urlpatterns = [path("fragments/<str:name>", fragment_view, name="reactive-fragment")]
