"""Create, list and revoke API tokens: ``manage.py api_token create|list|revoke``."""

from django.core.management.base import BaseCommand, CommandError

from agency.models import ApiToken, User


class Command(BaseCommand):
    help = "Manage API tokens for non-browser clients (the raw token is shown once)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="issue a token for a user")
        create.add_argument("username")
        create.add_argument("--name", default="cli", help="what the token is for")
        listing = sub.add_parser("list", help="list a user's tokens")
        listing.add_argument("username")
        revoke = sub.add_parser("revoke", help="revoke a token by id")
        revoke.add_argument("token_id")

    def handle(self, *args, action, **options):
        if action == "revoke":
            token = ApiToken.objects.filter(pk=_uuid(options["token_id"])).first()
            if token is None:
                raise CommandError(f"No token with id {options['token_id']}.")
            token.revoke()
            self.stdout.write(f"Revoked {token.pk} ({token.name}) of {token.user}.")
            return
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        if action == "create":
            token, raw = ApiToken.issue(user, options["name"])
            self.stdout.write(
                f"Token {token.pk} for {user} ({token.name}):\n{raw}\n"
                "Store it now: it is not shown again."
            )
            return
        for token in user.api_tokens.order_by("-created_at"):
            state = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
            used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
            self.stdout.write(f"{token.pk}  {token.name:<24} {state:<18} last used {used}")


def _uuid(value: str):
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a token id.") from None
