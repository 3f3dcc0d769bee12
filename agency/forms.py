"""Forms of the server-rendered pages.

They only shape HTML input: the reactive functions validate and authorize
(`to_input` builds a function's camelCase input, `add_reactive_errors` puts a
function's 422 field errors back on the form).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.forms.fields import InvalidJSONInput

from reactive import ReactiveError, parse_json

from .auth import check_login_allowed, record_login_failure
from .models import NAME_MAX, TEXT_MAX


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class ReactiveForm(forms.Form):
    """A form whose cleaned data is a reactive function's input."""

    #: form field -> input field, when not simply the camelCase of the form field
    input_names: dict[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def to_input(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The cleaned data (only `fields` if given) as camelCase input; empty optionals left out."""
        out = {}
        for name in self.fields if fields is None else fields:
            value = self.cleaned_data.get(name)
            if value in (None, "") and not self.fields[name].required:
                continue
            out[self.input_names.get(name, _camel(name))] = value
        return out

    def add_reactive_errors(self, exc: ReactiveError) -> None:
        """Show a function's error: per field when it names fields of this form."""
        reverse = {v: k for k, v in self.input_names.items()}
        placed = False
        for error in exc.errors:
            field = str(error.get("field", "")).split(".")[-1]
            name = reverse.get(field, _snake(field))
            if name in self.fields:
                self.add_error(name, error.get("message", "Invalid."))
                placed = True
        if not placed:
            self.add_error(None, exc.message)


class LoginForm(AuthenticationForm):
    """Django's login form, throttled like the API (10 failures in 5 minutes)."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        try:
            check_login_allowed(self.request, username)
        except ReactiveError as exc:
            raise forms.ValidationError(exc.message, code="throttled") from None
        try:
            return super().clean()
        except forms.ValidationError:
            record_login_failure(self.request, username)
            raise


class AgentForm(ReactiveForm):
    """Create or edit an agent; the tool choices are the organization's tools."""

    name = forms.CharField(max_length=NAME_MAX)
    role = forms.CharField(max_length=NAME_MAX)
    model = forms.CharField(max_length=NAME_MAX, required=False, help_text="e.g. gpt-4o")
    temperature = forms.FloatField(min_value=0, max_value=2, required=False)
    max_tokens = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    system_prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), max_length=TEXT_MAX, required=False
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active")
    tool_ids = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, required=False, label="Tools"
    )

    def __init__(self, *args: Any, tools: Iterable[dict] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["tool_ids"].choices = [(t["id"], t["name"]) for t in tools]

    @staticmethod
    def initial_for(agent: dict[str, Any]) -> dict[str, Any]:
        """Initial values from an agent as the functions return it."""
        return {
            "name": agent["name"],
            "role": agent["role"],
            "model": agent["model"],
            "temperature": agent["temperature"],
            "max_tokens": agent["maxTokens"],
            "system_prompt": agent["systemPrompt"],
            "is_active": agent["isActive"],
            "tool_ids": agent.get("toolIds", []),
        }

    def changes(self) -> dict[str, Any]:
        """The `data` of agents.update: the fields that differ from the agent as it is now."""
        out = {}
        for name in self.changed_data:
            value = self.cleaned_data.get(name)
            if name == "temperature" and value is None:
                continue  # a temperature is required; leaving it empty keeps it
            out[self.input_names.get(name, _camel(name))] = value
        return out


class StrictJSONField(forms.JSONField):
    """A JSONField that parses like the API: finite numbers, no NUL, bounded depth."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        try:
            return parse_json(value)
        except ReactiveError as exc:
            raise forms.ValidationError(exc.message, code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Re-rendering the refused input must not parse it with json.loads again.
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return parse_json(data)
        except ReactiveError:
            return InvalidJSONInput(data)


class ToolForm(ReactiveForm):
    """Create a tool."""

    name = forms.CharField(max_length=NAME_MAX)
    tool_type = forms.ChoiceField(required=False, label="Type")
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), max_length=TEXT_MAX, required=False
    )
    config = StrictJSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text='A JSON object, e.g. {"timeout_seconds": 20}',
    )

    def __init__(self, *args: Any, tool_types: Iterable[tuple[str, str]] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["tool_type"].choices = [("", "None"), *tool_types]

    def clean_config(self) -> dict[str, Any]:
        value = self.cleaned_data.get("config")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value


class MessageForm(ReactiveForm):
    """Post a message from one of the organization's agents."""

    from_agent_id = forms.ChoiceField(label="From")
    to_agent_id = forms.ChoiceField(required=False, label="To")
    message_type = forms.ChoiceField(required=False, label="Type")
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=TEXT_MAX, label="Message"
    )

    def __init__(
        self,
        *args: Any,
        agents: Iterable[dict] = (),
        message_types: Iterable[tuple[str, str]] = (),
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        choices = [(a["id"], a["name"]) for a in agents]
        self.fields["from_agent_id"].choices = choices
        self.fields["to_agent_id"].choices = [("", "Everyone"), *choices]
        self.fields["message_type"].choices = [("", "None"), *message_types]


class CronForm(ReactiveForm):
    """Schedule runs of an agent: the message each run posts, and more payload as JSON."""

    agent_id = forms.ChoiceField(label="Agent")
    schedule = forms.CharField(
        max_length=100,
        initial="*/5 * * * *",
        help_text="minute hour day month weekday, e.g. 0 9 * * 1-5",
        widget=forms.TextInput(
            attrs={"class": "mono", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    name = forms.CharField(max_length=NAME_MAX, required=False)
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=TEXT_MAX,
        required=False,
        label="Message",
        help_text="What each run posts",
    )
    payload = StrictJSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text='More payload, a JSON object, e.g. {"priority": "high"}',
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, agents: Iterable[dict] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["agent_id"].choices = [(a["id"], a["name"]) for a in agents]

    def clean_payload(self) -> dict[str, Any]:
        """The extra payload: a JSON object, {} when left empty."""
        value = self.cleaned_data.get("payload")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value

    def cron_input(self) -> dict[str, Any]:
        """The input of crons.create: the message goes into the payload as its ``content``."""
        out = self.to_input(["agent_id", "schedule", "name", "enabled"])
        payload = dict(self.cleaned_data.get("payload") or {})
        if self.cleaned_data.get("content"):
            payload["content"] = self.cleaned_data["content"]
        out["payload"] = payload
        return out
