"""``python manage.py webhook_replay <delivery id>``: apply a recorded delivery again.

Events are idempotent: a replay redoes only what is missing (a queue deleted since, say) and
changes nothing otherwise. ``<delivery id>`` is the sender's id (``X-Buildkite-Delivery``);
``--organization`` picks among organizations that used the same id.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from rest_framework.exceptions import ValidationError as DRFValidationError

from clusters import webhooks
from clusters.actors import AuditedCommand, command_actor, webhook_actor
from clusters.audit import acting_as
from clusters.models import WebhookDelivery


class Command(AuditedCommand):
    help = "Apply a recorded webhook delivery again (idempotently)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("delivery_id")
        parser.add_argument("--organization", help="organization slug")

    def handle(self, *args: Any, **options: Any) -> None:
        deliveries = WebhookDelivery.objects.filter(
            delivery_id=options["delivery_id"]
        ).select_related("organization")
        if options["organization"]:
            deliveries = deliveries.filter(organization__slug=options["organization"])
        found = list(deliveries[:2])
        if not found:
            raise CommandError(f"No recorded delivery {options['delivery_id']!r}.")
        if len(found) > 1:
            raise CommandError("Several organizations used this delivery id: add --organization.")
        delivery = found[0]
        serializer = webhooks.EVENTS[delivery.event](data=delivery.payload)
        try:
            serializer.is_valid(raise_exception=True)
            # What it changes again is the delivery's doing, replayed from this command.
            _, context = command_actor("webhook_replay")
            with acting_as(webhook_actor(delivery.delivery_id), context):
                outcome = webhooks.webhook_delivery_replay(
                    delivery=delivery, data=dict(serializer.validated_data)
                )
        except (ValidationError, DRFValidationError) as exc:
            raise CommandError(f"The delivery cannot be applied again: {exc}") from exc
        self.stdout.write(json.dumps(outcome))
