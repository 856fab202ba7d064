"""The platform's webhook (Buildkite's scheme): ``POST /v2/webhooks/buildkite/<org>`` applies
cluster and queue events, once each, through the same services as the REST API.

- ``signing``: verifying a delivery's signature or token; the organization's webhook secrets.
- ``payloads``: the headers, the JSON body and the events' payloads.
- ``delivery``: applying a delivery once (and replaying a recorded one).
- ``views``: the endpoint. ``admin``: the console's secrets and deliveries.

What callers use (views, management commands, tests) is importable from here.
"""

from clusters.webhooks.delivery import (
    webhook_delivery_receive,
    webhook_delivery_repeated,
    webhook_delivery_replay,
)
from clusters.webhooks.payloads import (
    DELIVERY_HEADER,
    DELIVERY_ID,
    EVENT_HEADER,
    EVENTS,
    PING,
    parse_body,
)
from clusters.webhooks.signing import (
    MAX_ACTIVE_WEBHOOK_SECRETS,
    SECRET_PREFIX,
    SIGNATURE_HEADER,
    TOKEN_HEADER,
    TOLERANCE_SECONDS,
    Signed,
    Verified,
    WebhookRefused,
    new_salt,
    secret_for,
    sign,
    verified_secret,
    verify,
    webhook_secret_create,
    webhook_secret_limit_error,
    webhook_secret_revoke,
)

__all__ = [
    "DELIVERY_HEADER",
    "DELIVERY_ID",
    "EVENTS",
    "EVENT_HEADER",
    "MAX_ACTIVE_WEBHOOK_SECRETS",
    "PING",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TOKEN_HEADER",
    "TOLERANCE_SECONDS",
    "Signed",
    "Verified",
    "WebhookRefused",
    "new_salt",
    "parse_body",
    "secret_for",
    "sign",
    "verified_secret",
    "verify",
    "webhook_delivery_receive",
    "webhook_delivery_repeated",
    "webhook_delivery_replay",
    "webhook_secret_create",
    "webhook_secret_limit_error",
    "webhook_secret_revoke",
]
