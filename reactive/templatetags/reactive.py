"""Template tags of live fragments and the browser client (``{% load reactive %}``).

- ``{% live_fragment "name" param=value ... %}`` renders a declared fragment
  (see :mod:`reactive.fragments`) inside its live wrapper.
- ``{% live_query "agents.getAll" organizationId=org.id template="x.html" var="agents" %}``
  renders `template` with one query's data as `var`, live.
- ``{% reactive_client organization=org.id %}`` loads the browser client
  (``static/reactive/client.js``) with this page's identity, and starts it:
  it re-renders every live fragment of the page when its tags are invalidated.

Both fragment tags accept ``rx_element`` (the wrapper's tag name, ``div`` by
default) and ``rx_class`` (extra classes of the wrapper).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString

from ..conf import reactive_settings
from ..fragments import QUERY_FRAGMENT, jsonable, live_wrapper, sign_query

register = template.Library()

CLIENT_DEFAULTS = {
    "rxPath": "/api/rx/",
    "eventsPath": "/api/events",
    "ackPath": "/api/events/ack",
    "wsPath": "/ws/reactive/",
    "mePath": "/api/auth/me",
    "logoutPath": "/api/auth/logout",
    "loginUrl": "",
    "transport": "auto",
}


def _request(context: template.Context) -> HttpRequest:
    request: HttpRequest | None = context.get("request")
    if request is None:
        raise template.TemplateSyntaxError(
            "live fragments need the request in the context "
            "(the 'django.template.context_processors.request' context processor)"
        )
    return request


@register.simple_tag(takes_context=True)
def live_fragment(
    context: template.Context,
    name: str,
    rx_element: str = "div",
    rx_class: str = "",
    **params: Any,
) -> SafeString:
    """A declared fragment rendered with the caller's identity, marked live."""
    return live_wrapper(_request(context), name, params, element=rx_element, css_class=rx_class)


@register.simple_tag(takes_context=True)
def live_query(
    context: template.Context,
    name: str,
    template: str,
    var: str = "data",
    rx_element: str = "div",
    rx_class: str = "",
    **input: Any,
) -> SafeString:
    """`template` rendered with the data of one query (as `var`), marked live."""
    signed = sign_query(name, input, template, var)
    return live_wrapper(
        _request(context), QUERY_FRAGMENT, {"s": signed}, element=rx_element, css_class=rx_class
    )


def client_config(request: HttpRequest, **options: Any) -> dict[str, Any]:
    """The browser client's configuration for this request (JSON-ready)."""
    user: Any = getattr(request, "user", None)  # the project's user model, or none at all
    config = {**CLIENT_DEFAULTS, **reactive_settings().CLIENT}
    try:
        config["eventsPath"] = reverse("reactive-events")
        config["ackPath"] = reverse("reactive-ack")
    except NoReverseMatch:
        pass
    config["loginUrl"] = config["loginUrl"] or str(getattr(settings, "LOGIN_URL", ""))
    authenticated = bool(user is not None and user.is_authenticated)
    config["user"] = str(user.pk) if authenticated else None
    config["csrfToken"] = get_token(request)
    config["csrfCookieName"] = settings.CSRF_COOKIE_NAME
    config.update({k: jsonable(v) for k, v in options.items() if v not in (None, "")})
    return config


@register.inclusion_tag("reactive/client.html", takes_context=True)
def reactive_client(context: template.Context, **options: Any) -> dict[str, Any]:
    """Load and start the browser client (configuration from the request and `options`)."""
    return {
        "config": client_config(_request(context), **options),
        "client_url": static("reactive/client.js"),
    }


@register.filter
def as_datetime(value: Any) -> datetime | Any:
    """An ISO 8601 string from a reactive function's JSON as a datetime (for ``timesince``)."""
    if isinstance(value, str):
        return parse_datetime(value) or value
    return value


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """``{{ names|get_item:message.fromAgentId }}``: a dict lookup by a variable key."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
