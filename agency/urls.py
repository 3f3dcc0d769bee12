"""The pages' URLs, the live fragments' endpoint and the static files (the browser client)."""

from django.urls import include, path, re_path

from . import cron_views, member_views, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("orgs/<uuid:org_id>/", views.organization, name="organization"),
    path("orgs/<uuid:org_id>/live/", views.live, name="live"),
    path("orgs/<uuid:org_id>/agents/new/", views.agent_new, name="agent_new"),
    path("orgs/<uuid:org_id>/tools/new/", views.tool_new, name="tool_new"),
    path("orgs/<uuid:org_id>/messages/new/", views.message_new, name="message_new"),
    path("orgs/<uuid:org_id>/members/", member_views.members, name="members"),
    path(
        "orgs/<uuid:org_id>/members/<uuid:membership_id>/role/",
        member_views.membership_role,
        name="membership_role",
    ),
    path(
        "orgs/<uuid:org_id>/members/<uuid:membership_id>/remove/",
        member_views.membership_remove,
        name="membership_remove",
    ),
    path(
        "orgs/<uuid:org_id>/settings/",
        member_views.organization_settings,
        name="organization_settings",
    ),
    path("orgs/<uuid:org_id>/crons/new/", cron_views.cron_new, name="cron_new"),
    path("orgs/<uuid:org_id>/crons/preview/", cron_views.cron_preview, name="cron_preview"),
    path("agents/<uuid:agent_id>/", views.agent, name="agent"),
    path("agents/<uuid:agent_id>/delete/", views.agent_delete, name="agent_delete"),
    path("reactive/", include("reactive.fragments")),
    re_path(r"^static/(?P<path>.+)$", views.static_file, name="static_file"),
]
