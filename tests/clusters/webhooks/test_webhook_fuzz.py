"""Fuzzing the webhook: whatever the body and the headers, never a 5xx.

Bodies are bytes, text, arbitrary JSON, and Buildkite-shaped payloads with parts dropped or
replaced by values of the wrong type; headers are absent, garbage (long, non-ASCII) or right.
Many requests carry a correct signature or token for their body, so that the JSON, event,
payload and service layers are reached, not only the verification. Every answer is one of the
endpoint's documented statuses, with a JSON body carrying a ``message``.

The examples share one test transaction (and the rows earlier examples created); each takes a
fresh delivery id unless it picks one on purpose, so idempotency does not mask the paths.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clusters import instance_shapes, services, webhooks

pytestmark = pytest.mark.django_db

ANSWERS = {200, 400, 401, 413, 422}
#: The body size limit during the fuzz, small enough that some bodies exceed it.
BODY_LIMIT = 2048
EVENTS = [*webhooks.EVENTS, webhooks.PING]
#: A few ids used again and again, so that later examples meet clusters and queues that exist.
CLUSTER_IDS = [str(uuid.UUID(int=n)) for n in range(1, 4)]
QUEUE_IDS = [str(uuid.UUID(int=n)) for n in range(101, 104)]
_fresh = itertools.count()
QUOTED = re.compile(r"'[^']*'|\([^)]*\)|\d+")

# --- bodies -------------------------------------------------------------------------------------

# Any text, NUL characters and lone surrogates included (the database cannot store them), and
# any float, NaN and infinities included (json.dumps writes them; they are not JSON).
any_text = st.characters()
strings = st.text(any_text, max_size=30)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | strings
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(any_text, max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def chance(percent: int) -> st.SearchStrategy[bool]:
    """A coin that lands True about ``percent`` % of the time."""
    return st.integers(0, 99).map(lambda n: n < percent)


def good_or_wrong(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a right value, sometimes any JSON value (a wrong type, a wrong shape)."""
    return chance(88).flatmap(lambda right: good if right else json_values)


uuids = st.sampled_from(CLUSTER_IDS + QUEUE_IDS) | st.uuids().map(str)
# Validated fields take any text: NUL and surrogates there are a 422.
names = st.sampled_from(["Open Source", "Fuzzed", ""]) | st.text(max_size=120)
keys = st.sampled_from(["linux", "linux-small", "bad key", ""]) | st.from_regex(
    r"[A-Za-z0-9_-]{1,20}", fullmatch=True
)
shapes = st.sampled_from([*list(instance_shapes.SHAPES)[:2], "MACOS_ARM64_M4_6X28", "NOPE", ""])
events = st.sampled_from([*EVENTS, "cluster.created", ""]) | st.text(any_text, max_size=40)

clusters = st.fixed_dictionaries(
    {
        "id": good_or_wrong(st.sampled_from(CLUSTER_IDS) | st.uuids().map(str)),
        "name": good_or_wrong(names),
    },
    optional={
        "description": good_or_wrong(st.none() | st.text(max_size=50)),
        "emoji": good_or_wrong(st.none() | st.text(max_size=70)),
        "color": good_or_wrong(st.none() | st.sampled_from(["#FFE0F1", "red", "#12345678"])),
    },
)
hosted_agents = st.fixed_dictionaries(
    {"instance_shape": good_or_wrong(st.fixed_dictionaries({"name": good_or_wrong(shapes)}))}
)
queues = st.fixed_dictionaries(
    {"id": good_or_wrong(st.sampled_from(QUEUE_IDS) | uuids), "key": good_or_wrong(keys)},
    optional={
        "description": good_or_wrong(st.none() | st.text(max_size=50)),
        "hosted": good_or_wrong(st.booleans()),
        "hosted_agents": good_or_wrong(st.none() | hosted_agents),
    },
)
payloads = st.fixed_dictionaries(
    {
        "event": good_or_wrong(st.sampled_from([*webhooks.EVENTS] * 3 + [webhooks.PING, "other"])),
        "organization": good_or_wrong(
            st.fixed_dictionaries(
                {"slug": good_or_wrong(st.sampled_from(["acme"] * 6 + ["globex", "ACME"]))}
            )
        ),
        "cluster": good_or_wrong(clusters),
        "queue": good_or_wrong(queues),
    },
    optional={
        "sender": good_or_wrong(
            st.fixed_dictionaries({"id": good_or_wrong(uuids), "name": good_or_wrong(names)})
        ),
        "extra": json_values,
    },
)


@st.composite
def shaped_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A Buildkite-shaped payload, some of whose required keys may be missing."""
    body = draw(payloads)
    # One draw, not one per key: Hypothesis tends to repeat a choice within an example.
    missing = draw(st.sampled_from([None] * 12 + ["event", "organization", "cluster", "queue"]))
    if missing is not None:
        del body[missing]
    return body


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON, ``\\u``-escaped or as UTF-8 (a lone surrogate then makes bytes that are not UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


#: Whitespace after the JSON: near or over the size limit, still a valid payload.
padded_payloads = st.tuples(shaped_payloads(), st.integers(0, BODY_LIMIT))
bodies = st.one_of(
    shaped_payloads(),
    shaped_payloads(),
    shaped_payloads(),
    json_values,
    st.binary(max_size=BODY_LIMIT + 500),
    st.text(max_size=300),  # raw control characters are not JSON: a 400
    padded_payloads,
)


def to_bytes(body: Any, ascii_json: bool) -> tuple[bytes, Any]:
    """The raw body, and the parsed value it stands for (None for bytes and text)."""
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass"), None
    if isinstance(body, tuple):
        value, padding = body
        return encode(value, ascii_json) + b" " * padding, value
    return encode(body, ascii_json), body


# --- headers ------------------------------------------------------------------------------------

# Token guesses: any text (compared as bytes).
token_guesses = st.text(max_size=80)
long_tokens = st.text("abcdef_", min_size=200, max_size=2000)
garbage = st.one_of(
    st.text(max_size=80),  # any Unicode, as the test client passes it through
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),  # Latin-1
    st.text(min_size=500, max_size=5000),  # very long
)
# Delivery ids: any text, NUL included (refused before the database sees it).
garbage_ids = st.one_of(
    st.text(any_text, max_size=80),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.text(any_text, min_size=100, max_size=2000),
)
signatures = st.one_of(
    garbage,
    st.from_regex(r"timestamp=\d{1,12},signature=[0-9a-f]{64}", fullmatch=True),
    st.from_regex(r"\s*timestamp=[0-9]{10},signature=[0-9a-fA-F]{60,70}\s*", fullmatch=True),
)
auth = st.one_of(
    st.tuples(st.just("sign"), st.just(0)),
    st.tuples(st.just("sign"), st.just(0)),
    st.tuples(st.just("sign"), st.integers(-1000, 1000)),  # stale or ahead, sometimes
    st.tuples(st.just("token"), st.sampled_from(["", " ", "\t"])),  # the token, padded
    st.tuples(st.just("sign-other-body"), st.binary(max_size=20)),
    st.tuples(st.just("signature"), signatures),
    st.tuples(st.just("token-guess"), token_guesses | long_tokens),
    st.tuples(st.just("sign-and-token-guess"), token_guesses),
    st.tuples(st.just("signature-and-token"), signatures),
    st.tuples(st.just("none"), st.none()),
)
deliveries = st.one_of(
    st.just("fresh"),
    st.just("fresh"),
    st.just("fresh"),
    st.none(),
    st.sampled_from(["", "   ", "x" * 128, "x" * 129, "delivery-1"]),
    garbage_ids,
)
event_headers = st.one_of(st.just("from-body"), st.just("from-body"), st.none(), events, garbage)
# Anything the route takes as <org> (no "/"), percent-encoded, NUL included.
organizations = st.one_of(
    st.sampled_from(["acme", "acme", "acme", "globex", "initech"]),
    st.from_regex(r"[a-z0-9-]{1,40}", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=60).map(
        lambda slug: quote(slug, safe="")
    ),
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", ""]
)  # fmt: skip


@pytest.fixture
def secret(settings) -> str:
    """``acme``'s webhook secret; ``globex`` exists without one, ``initech`` with its own."""
    settings.API_MAX_BODY_BYTES = BODY_LIMIT
    acme = services.organization_create(slug="acme", name="Acme")
    services.organization_create(slug="globex", name="Globex")
    initech = services.organization_create(slug="initech", name="Initech")
    webhooks.webhook_secret_create(organization=initech, description="theirs")
    return webhooks.webhook_secret_create(organization=acme, description="platform")[1]


def build_headers(
    secret: str, raw: bytes, value: Any, plan: tuple[str, Any], delivery: str | None, evt: Any
) -> dict[str, str]:
    """The headers a plan stands for, with the real secret (created per test, after drawing)."""
    headers: dict[str, str] = {}
    kind, arg = plan
    now = int(time.time())
    if kind == "sign":
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(secret, now + arg, raw)
    elif kind == "token":
        headers[webhooks.TOKEN_HEADER] = arg + secret + arg
    elif kind == "sign-other-body":
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(secret, now, raw + arg + b"!")
    elif kind == "signature":
        headers[webhooks.SIGNATURE_HEADER] = arg
    elif kind == "token-guess":
        headers[webhooks.TOKEN_HEADER] = arg
    elif kind == "sign-and-token-guess":
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(secret, now, raw)
        headers[webhooks.TOKEN_HEADER] = arg
    elif kind == "signature-and-token":
        headers[webhooks.SIGNATURE_HEADER] = arg
        headers[webhooks.TOKEN_HEADER] = secret
    if delivery == "fresh":
        headers[webhooks.DELIVERY_HEADER] = f"fuzz-{next(_fresh)}-{uuid.uuid4()}"
    elif delivery is not None:
        headers[webhooks.DELIVERY_HEADER] = delivery
    if evt == "from-body":
        body_event = value.get("event") if isinstance(value, dict) else None
        if isinstance(body_event, str):
            headers[webhooks.EVENT_HEADER] = body_event
    elif evt is not None:
        headers[webhooks.EVENT_HEADER] = evt
    return headers


@dataclass
class Delivery:
    body: Any
    ascii_json: bool
    plan: tuple[str, Any]
    delivery: str | None
    event_header: str | None
    org: str
    content_type: str


@st.composite
def deliveries_to_send(draw: st.DrawFn) -> Delivery:
    """Half of them go deep: a correct signature or token from acme's platform, a fresh id, the
    body's event, a Buildkite-shaped payload. The others mix anything with anything."""
    if draw(st.booleans()):
        return Delivery(
            body=draw(st.one_of(shaped_payloads(), shaped_payloads(), padded_payloads)),
            ascii_json=draw(st.booleans()),
            plan=draw(st.sampled_from([("sign", 0), ("token", "")])),
            delivery=draw(st.sampled_from(["fresh"] * 5 + ["delivery-1"])),
            event_header=draw(st.sampled_from(["from-body"] * 9 + [None, "cluster.deleted"])),
            org="acme",
            content_type=draw(content_types),
        )
    return Delivery(
        body=draw(bodies),
        ascii_json=draw(st.booleans()),
        plan=draw(auth),
        delivery=draw(deliveries),
        event_header=draw(event_headers),
        org=draw(organizations),
        content_type=draw(content_types),
    )


@given(sent=deliveries_to_send())
@settings(
    max_examples=200,
    deadline=None,
    database=None,  # the checkout is shared: no .hypothesis/ examples written into it
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
def test_any_body_and_headers_get_a_json_answer_and_never_a_5xx(
    secret: str, sent: Delivery
) -> None:
    raw, value = to_bytes(sent.body, sent.ascii_json)
    headers = build_headers(secret, raw, value, sent.plan, sent.delivery, sent.event_header)

    response = Client().generic(
        "POST",
        f"/v2/webhooks/buildkite/{sent.org}",
        raw,
        content_type=sent.content_type,
        headers=headers,
    )

    status = response.status_code
    answer = json.loads(response.content)
    assert status in ANSWERS, (status, answer)
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(answer, dict)
    assert isinstance(answer.get("message"), str)
    assert answer["message"]
    # Which paths were reached (pytest --hypothesis-show-statistics).
    words = " ".join(answer["message"].split()[:4])
    event(f"{status} {answer.get('event', '')} {re.sub(QUOTED, '…', words)}")
