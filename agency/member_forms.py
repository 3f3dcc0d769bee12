"""Forms of the members and organization settings pages (the functions validate and authorize)."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from django import forms

from .forms import ReactiveForm, StrictJSONField
from .member_schemas import TIME_ZONE_KEY
from .models import NAME_MAX, Membership

ROLE_CHOICES = [(role.value, role.label) for role in Membership.Role]


def role_choices(owner: bool) -> list[tuple[str, str]]:
    """The roles a caller may grant: all of them for an owner, admin and member for an admin."""
    return [c for c in ROLE_CHOICES if owner or c[0] != Membership.Role.OWNER]


@cache
def time_zones() -> list[tuple[str, str]]:
    """The IANA time zones this server knows, for a select (blank: UTC, the default)."""
    return [("", "UTC (the default)"), *((z, z) for z in sorted(zoneinfo.available_timezones()))]


class MemberAddForm(ReactiveForm):
    """Add a member by username or by email (exactly one), with a role."""

    username = forms.CharField(max_length=150, required=False)
    email = forms.CharField(max_length=254, required=False, label="or email")
    role = forms.ChoiceField(initial=Membership.Role.MEMBER)

    def __init__(self, *args: Any, owner: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(owner)


class SettingsForm(ReactiveForm):
    """An organization's name, time zone and other settings (a JSON object)."""

    name = forms.CharField(max_length=NAME_MAX)
    time_zone = forms.ChoiceField(
        required=False, label="Time zone", help_text="Crons run on this zone's clock."
    )
    settings = StrictJSONField(
        required=False,
        initial=dict,
        label="Other settings",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="A JSON object (at most 16 KB, 5 levels deep); the time zone above wins.",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = time_zones()

    @staticmethod
    def initial_for(org: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """Initial values from organizations.getOne and organizations.getSettings."""
        others = {k: v for k, v in settings.items() if k != TIME_ZONE_KEY}
        zone = settings.get(TIME_ZONE_KEY)
        return {"name": org["name"], "time_zone": zone or "", "settings": others}

    def clean_settings(self) -> dict[str, Any]:
        value = self.cleaned_data.get("settings")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value

    def changes(self) -> dict[str, Any]:
        """The `data` of organizations.update: the name if changed, the settings if changed."""
        data: dict[str, Any] = {}
        if "name" in self.changed_data:
            data["name"] = self.cleaned_data["name"]
        if {"time_zone", "settings"} & set(self.changed_data):
            settings = {
                k: v for k, v in self.cleaned_data["settings"].items() if k != TIME_ZONE_KEY
            }
            if self.cleaned_data["time_zone"]:
                settings[TIME_ZONE_KEY] = self.cleaned_data["time_zone"]
            data["settings"] = settings
        return data
