"""``python manage.py create_api_token <org> <user>``: a REST API access token, shown once.

Creates the organization and the user if they do not exist yet (a user made here has no
password: it is an API identity, not a login). ``--quiet`` prints only the secret, for scripts.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from clusters import services
from clusters.actors import AuditedCommand
from clusters.models import ApiScope, ApiToken

DEFAULT_SCOPES = [
    ApiScope.READ_CLUSTERS,
    ApiScope.WRITE_CLUSTERS,
    ApiScope.READ_REGISTRIES,
    ApiScope.WRITE_REGISTRIES,
    ApiScope.READ_ORGANIZATIONS,
    ApiScope.READ_AUDIT_EVENTS,
]


class Command(AuditedCommand):
    help = "Create a REST API access token for a user in an organization; prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("organization", help="organization slug (created if missing)")
        parser.add_argument("user", help="user name (created, without a password, if missing)")
        parser.add_argument(
            "--scopes",
            default=",".join(DEFAULT_SCOPES),
            help=f"comma-separated, from: {', '.join(ApiScope.values)} (default: %(default)s)",
        )
        parser.add_argument("--description", default="created with manage.py create_api_token")
        parser.add_argument("--quiet", action="store_true", help="print only the token")
        parser.add_argument(
            "--staff",
            action="store_true",
            help="make the user staff (an operator: the operator scopes need one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        quiet = options["quiet"]
        slug = options["organization"]
        scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        try:
            with transaction.atomic():  # a refused token leaves no organization or user behind
                token, secret, user = self._create(quiet, slug, options["user"], scopes, options)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self._say(
            quiet,
            f"API token {token.token_prefix}… for {user.username} in {slug}, scopes "
            f"{', '.join(token.scopes)}. It is shown only now:",
        )
        self.stdout.write(secret)

    def _create(
        self, quiet: bool, slug: str, username: str, scopes: list[str], options: dict[str, Any]
    ) -> tuple[ApiToken, str, User]:
        organization, created = services.organization_get_or_create(slug=slug)
        if created:
            self._say(quiet, f"Created organization {slug}.")
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username)  # no usable password
            self._say(quiet, f"Created user {user.username} (no password: API use only).")
        if options.get("staff") and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
            self._say(quiet, f"User {user.username} is staff (an operator).")
        token, secret = services.api_token_create(
            user=user, organization=organization, description=options["description"], scopes=scopes
        )
        return token, secret, user

    def _say(self, quiet: bool, message: str) -> None:
        if not quiet:
            self.stderr.write(message)
