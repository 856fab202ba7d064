"""``python manage.py create_webhook_secret <org>``: a webhook secret, shown once.

The platform signs its deliveries to ``/v2/webhooks/buildkite/<org>`` with it. An organization
has at most two active secrets: create the new one, switch the platform to it, then revoke the
old one (admin, Webhook secrets, "Revoke").
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from clusters import services, webhooks
from clusters.actors import AuditedCommand


class Command(AuditedCommand):
    help = "Create a webhook secret for an organization; prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("organization", help="organization slug (created if missing)")
        parser.add_argument("--description", default="created with manage.py")

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["organization"]
        try:
            with transaction.atomic():  # a refused secret leaves no organization behind
                organization, created = services.organization_get_or_create(slug=slug)
                if created:
                    self.stderr.write(f"Created organization {slug}.")
                secret, value = webhooks.webhook_secret_create(
                    organization=organization, description=options["description"]
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stderr.write(
            f"Webhook secret {secret.secret_prefix}… for {organization.slug}. It is shown only now:"
        )
        self.stdout.write(value)
