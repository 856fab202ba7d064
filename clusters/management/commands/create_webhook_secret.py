"""``python manage.py create_webhook_secret <org>``: a webhook secret, shown once.

The platform signs its deliveries to ``/v2/webhooks/buildkite/<org>`` with it. An organization
has at most two active secrets: create the new one, switch the platform to it, then revoke the
old one (admin, Webhook secrets, "Revoke").
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clusters import services
from clusters.models import Organization


class Command(BaseCommand):
    help = "Create a webhook secret for an organization; prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("organization", help="organization slug")
        parser.add_argument("--description", default="created with manage.py")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["organization"]).first()
        if organization is None:
            raise CommandError(
                f"No organization {options['organization']!r}. Create it first (admin, or "
                "`manage.py create_api_token <org> <user>`)."
            )
        try:
            secret, value = services.webhook_secret_create(
                organization=organization, description=options["description"]
            )
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from exc
        self.stderr.write(
            f"Webhook secret {secret.secret_prefix}… for {organization.slug}. It is shown only now:"
        )
        self.stdout.write(value)
