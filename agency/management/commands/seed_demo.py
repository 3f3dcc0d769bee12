"""`manage.py seed_demo`: demo users, orgs, agents, tools, messages and a cron (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from agency.models import (
    Agent,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
)

DEFAULT_PASSWORD = "teamhub-demo"
BATCH = 500
URL = "http://127.0.0.1:8000/"
DEMO_SCHEDULE = "* * * * *"  # a newcomer sees the first run within a minute

USERS = [
    # username, display name
    ("alice", "Alice Martin"),
    ("bob", "Bob Nakamura"),
    ("carol", "Carol Okafor"),
]
ADMIN = "admin"

TOOL_TYPES = [
    ("http", "HTTP request", "Calls an HTTP API and returns the response body."),
    ("python", "Python", "Runs Python code in a sandbox and returns its output."),
    ("search", "Search", "Searches a document index and returns the best passages."),
]
MESSAGE_TYPES = [("chat", "Chat"), ("task", "Task"), ("result", "Result")]


@dataclass(frozen=True)
class OrgSpec:
    """One organization to seed: its row, its members and what its agents talk about."""

    name: str
    database_name: str
    owner: str
    members: tuple[tuple[str, str], ...]  # (username, role), the owner excluded
    topic: str


ORGS = [
    OrgSpec(
        "Acme Robotics",
        "acme",
        "alice",
        (("bob", Membership.Role.MEMBER),),
        "the warehouse picking arm",
    ),
    OrgSpec(
        "Globex Labs",
        "globex",
        "bob",
        (("carol", Membership.Role.MEMBER),),
        "the battery cell trial",
    ),
]


def extra_org(number: int) -> OrgSpec:
    """The spec of the `number`-th organization beyond the named ones (3, 4, ...)."""
    return OrgSpec(
        f"Demo Org {number}",
        f"demo_org_{number}",
        "alice",
        (("carol", Membership.Role.MEMBER),),
        f"project {number}",
    )


# tool name, tool type slug, description, config
TOOLS = [
    (
        "Web fetch",
        "http",
        "Fetches a web page or JSON API over HTTPS.",
        {"method": "GET", "timeout_seconds": 20, "allowed_hosts": ["*"]},
    ),
    (
        "Python sandbox",
        "python",
        "Runs short Python snippets (numpy, pandas) without network access.",
        {"timeout_seconds": 60, "memory_mb": 512, "network": False},
    ),
    (
        "Knowledge base",
        "search",
        "Searches the organization's documents, tickets and meeting notes.",
        {"index": "documents", "top_k": 8},
    ),
]


@dataclass(frozen=True)
class Archetype:
    """An agent template: who it is, its model, its tools and a task it can be given."""

    name: str
    role: str
    model: str
    temperature: float
    tools: tuple[str, ...]
    prompt: str
    task: str
    result: str


ARCHETYPES = [
    Archetype(
        "Atlas",
        "Project coordinator",
        "gpt-4o",
        0.3,
        (),
        "You coordinate {org}'s agents. Split each request into tasks, give every task to the "
        "agent best suited for it, track progress and report blockers early. Keep updates short.",
        "Plan this week's work on {topic} and post the task list.",
        "Plan posted: five tasks, two blocked on data access.",
    ),
    Archetype(
        "Iris",
        "Research analyst",
        "claude-3-5-sonnet",
        0.5,
        ("Web fetch", "Knowledge base"),
        "You are {org}'s research analyst. Find and read sources, summarise what matters and "
        "cite every claim with a link. Say plainly when the evidence is thin.",
        "Summarise what competitors published this month about {topic}.",
        "Three relevant papers and one product launch; summary with links attached.",
    ),
    Archetype(
        "Forge",
        "Software engineer",
        "gpt-4o",
        0.2,
        ("Python sandbox", "Web fetch"),
        "You are a careful software engineer at {org}. Write small, tested changes, explain "
        "trade-offs, and never run code that touches production without approval.",
        "Write a script that checks the nightly telemetry export for {topic}.",
        "Script done and tested on last week's exports; it flagged two missing files.",
    ),
    Archetype(
        "Sentinel",
        "QA reviewer",
        "claude-3-5-haiku",
        0.1,
        ("Python sandbox",),
        "You review {org}'s work before it ships. Check correctness, edge cases and clarity; "
        "list concrete problems with how to reproduce them, most severe first.",
        "Review the telemetry check script before it is scheduled.",
        "Approved with two fixes: handle empty files and time zones in file names.",
    ),
    Archetype(
        "Echo",
        "Customer support",
        "gpt-4o-mini",
        0.6,
        ("Knowledge base",),
        "You answer {org}'s customers. Be friendly and precise, use only documented facts, and "
        "hand over to a human when a request involves refunds, safety or legal questions.",
        "Draft an answer to the open tickets about {topic}.",
        "Drafted replies to 7 tickets; 2 escalated to a human (refund requests).",
    ),
    Archetype(
        "Quill",
        "Technical writer",
        "claude-3-5-sonnet",
        0.7,
        ("Knowledge base",),
        "You write {org}'s documentation. Prefer short sentences, examples and numbered steps; "
        "keep the glossary consistent.",
        "Update the runbook for {topic} with this week's changes.",
        "Runbook updated: new alert thresholds and a troubleshooting section.",
    ),
    Archetype(
        "Ledger",
        "Data analyst",
        "gpt-4o",
        0.2,
        ("Python sandbox", "Knowledge base"),
        "You analyse {org}'s data. State the question, the data used and its limits; show "
        "numbers with units and uncertainty; keep charts simple.",
        "Compare last month's failure rates for {topic} with the month before.",
        "Failure rate down from 3.1% to 2.4% (n=18k); the drop is mostly in the night shift.",
    ),
    Archetype(
        "Watch",
        "Operations monitor",
        "gpt-4o-mini",
        0.0,
        ("Web fetch",),
        "You watch {org}'s systems. Check health endpoints, summarise incidents, and page the "
        "on-call engineer only for customer-facing problems.",
        "Check the health endpoints of the services behind {topic}.",
        "All green except the export service: latency p95 at 1.8 s, ticket opened.",
    ),
]


def agent_name(index: int) -> str:
    """The stable name of an organization's `index`-th agent (Atlas, Iris, ..., Atlas 2, ...)."""
    base = ARCHETYPES[index % len(ARCHETYPES)].name
    round_ = index // len(ARCHETYPES)
    return base if round_ == 0 else f"{base} {round_ + 1}"


class Command(BaseCommand):
    help = (
        "Create demo users (alice, bob, carol, admin), organizations, agents, tools, "
        "messages and a cron. Idempotent: a second run creates nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password",
            default=DEFAULT_PASSWORD,
            help=f"password of every demo user (default {DEFAULT_PASSWORD!r})",
        )
        parser.add_argument("--orgs", type=int, default=2, help="organizations (default 2)")
        parser.add_argument(
            "--agents", type=int, default=4, help="agents per organization (default 4)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password, n_orgs, n_agents = options["password"], options["orgs"], options["agents"]
        if n_orgs < 1:
            raise CommandError("--orgs must be at least 1")
        if n_agents < 1:
            raise CommandError("--agents must be at least 1")
        if not password:
            raise CommandError("--password must not be empty")

        self.created: dict[str, int] = dict.fromkeys(
            ("users", "organizations", "memberships", "agents", "tools", "messages", "crons"), 0
        )
        with transaction.atomic():
            users = self.seed_users(password)
            tool_types = self.seed_types(ToolType, [(s, n, d) for s, n, d in TOOL_TYPES])
            message_types = self.seed_types(MessageType, [(s, n, "") for s, n in MESSAGE_TYPES])

        specs = [*ORGS, *(extra_org(i) for i in range(len(ORGS) + 1, n_orgs + 1))][:n_orgs]
        orgs = []
        for position, spec in enumerate(specs, 1):
            with transaction.atomic():
                org = self.seed_organization(spec, users)
                tools = self.seed_tools(org, tool_types)
                agents = self.seed_agents(org, n_agents, tools)
                messages = self.seed_messages(org, spec, agents, message_types)
                if position == 1:
                    self.seed_cron(org, agents[0])
            orgs.append(org)
            self.stdout.write(
                f"org {position}/{len(specs)}: {org.name} ({org.database_name}): "
                f"{len(agents)} agents, {len(tools)} tools, {messages} messages"
            )

        made = ", ".join(f"{count} {name}" for name, count in self.created.items())
        self.stdout.write(self.style.SUCCESS(f"Demo data ready (created: {made})."))
        self.print_logins(password, orgs)

    # --- steps ------------------------------------------------------------------------

    def seed_users(self, password: str) -> dict[str, User]:
        """The demo users and the superuser, with `password` (reset on every run)."""
        users = {}
        for username, display_name in [*USERS, (ADMIN, "TeamHub Admin")]:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"display_name": display_name, "email": f"{username}@example.com"},
            )
            self.created["users"] += created
            if username == ADMIN:
                user.is_staff = user.is_superuser = True
            user.is_active = True
            user.set_password(password)  # so the printed logins always work
            user.save()
            users[username] = user
        return users

    def seed_types(self, model: type[ToolType] | type[MessageType], rows: list) -> dict:
        """Tool or message types by slug."""
        found = {}
        for slug, name, description in rows:
            defaults = {"name": name}
            if description:
                defaults["description"] = description
            found[slug], _ = model.objects.get_or_create(slug=slug, defaults=defaults)
        return found

    def seed_organization(self, spec: OrgSpec, users: dict[str, User]) -> Organization:
        """The organization row (no database provisioning) and its memberships."""
        org, created = Organization.objects.get_or_create(
            database_name=spec.database_name,
            defaults={"name": spec.name, "owner": users[spec.owner]},
        )
        self.created["organizations"] += created
        for username, role in [(spec.owner, Membership.Role.OWNER), *spec.members]:
            membership, created = Membership.objects.get_or_create(
                user=users[username], organization=org, defaults={"role": role}
            )
            self.created["memberships"] += created
            if membership.role != role:
                membership.role = role
                membership.save(update_fields=["role", "updated_at"])
        return org

    def seed_tools(self, org: Organization, tool_types: dict[str, ToolType]) -> dict[str, Tool]:
        """The organization's tools by name (names are not unique: users add tools too)."""
        tools = {}
        for name, slug, description, config in TOOLS:
            found = Tool.objects.filter(organization=org, name=name).order_by("created_at").first()
            if found is None:
                found = Tool.objects.create(
                    organization=org,
                    name=name,
                    tool_type=tool_types[slug],
                    description=description,
                    config=config,
                )
                self.created["tools"] += 1
            tools[name] = found
        return tools

    def seed_agents(self, org: Organization, count: int, tools: dict[str, Tool]) -> list[Agent]:
        """The organization's first `count` demo agents; the missing ones are bulk-created."""
        existing = {agent.name: agent for agent in Agent.objects.filter(organization=org)}
        new: list[tuple[Agent, Archetype]] = []
        agents = []
        for index in range(count):
            name = agent_name(index)
            if name in existing:
                agents.append(existing[name])
                continue
            kind = ARCHETYPES[index % len(ARCHETYPES)]
            agent = Agent(
                organization=org,
                name=name,
                role=kind.role,
                system_prompt=kind.prompt.format(org=org.name),
                model=kind.model,
                temperature=kind.temperature,
                max_tokens=4096,
            )
            new.append((agent, kind))
            agents.append(agent)
        if new:
            Agent.objects.bulk_create([agent for agent, _ in new], batch_size=BATCH)
            through = Agent.tools.through
            links = [
                through(agent_id=agent.pk, tool_id=tools[tool].pk)
                for agent, kind in new
                for tool in kind.tools
            ]
            through.objects.bulk_create(links, batch_size=BATCH)
            self.created["agents"] += len(new)
        return agents

    def seed_messages(
        self,
        org: Organization,
        spec: OrgSpec,
        agents: list[Agent],
        types: dict[str, MessageType],
    ) -> int:
        """A conversation between the agents, only when the organization has no messages."""
        existing = Message.objects.filter(organization=org).count()
        if existing:
            return existing
        kinds = {kind.role: kind for kind in ARCHETYPES}
        lead, others = agents[0], agents[1:]
        script: list[tuple[Agent, Agent | None, str, str]] = [
            (lead, None, "chat", f"Good morning all. This week's focus is {spec.topic}."),
        ]
        for agent in others:
            kind = kinds.get(agent.role, ARCHETYPES[1])
            script.append((lead, agent, "task", kind.task.format(topic=spec.topic)))
            script.append((agent, lead, "result", kind.result))
        if others:
            script.append((others[0], None, "chat", "Thanks everyone, the summary is in the doc."))

        messages = [
            Message(
                organization=org,
                from_agent=sender,
                to_agent=recipient,
                message_type=types[slug],
                content=content,
                metadata={"seed": "demo", "step": step},
            )
            for step, (sender, recipient, slug, content) in enumerate(script)
        ]
        Message.objects.bulk_create(messages, batch_size=BATCH)
        # Spread the conversation over the last hours (auto_now_add stamped them all "now").
        start = timezone.now() - timedelta(minutes=3 * len(messages))
        for step, message in enumerate(messages):
            message.created_at = start + timedelta(minutes=3 * step)
        Message.objects.bulk_update(messages, ["created_at"], batch_size=BATCH)
        self.created["messages"] += len(messages)
        return len(messages)

    def seed_cron(self, org: Organization, agent: Agent) -> None:
        """One cron firing every minute (`make run` runs the scheduler), if the org has none."""
        if Cron.objects.filter(organization=org).exists():
            return
        Cron.objects.create(
            organization=org,
            agent=agent,
            name="Minute check-in",
            schedule=DEMO_SCHEDULE,
            payload={"content": "Minute check-in: all agents, post your status."},
        )
        self.created["crons"] += 1

    # --- output -------------------------------------------------------------------------

    def print_logins(self, password: str, orgs: list[Organization]) -> None:
        """How to log in, with each demo user's roles in the seeded organizations."""
        roles: dict[str, list[str]] = {username: [] for username, _ in USERS}
        memberships = (
            Membership.objects.filter(organization__in=orgs, user__username__in=list(roles))
            .select_related("user", "organization")
            .order_by("organization__created_at", "organization__name")
        )
        for membership in memberships:
            roles[membership.user.username].append(
                f"{membership.role} of {membership.organization.name}"
            )
        width = max(len(name) for name in [*roles, ADMIN])
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(f"Log in at {URL} with:"))
        for username, held in roles.items():
            shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            self.stdout.write(
                f"  {username.ljust(width)} / {password}   ({shown or 'no organization'})"
            )
        self.stdout.write(self.style.MIGRATE_HEADING(f"Django admin at {URL}admin/ with:"))
        self.stdout.write(f"  {ADMIN.ljust(width)} / {password}   (superuser)")
