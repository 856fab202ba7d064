"""Every read response of the REST API, byte for byte, against a golden file.

The lists and details are built without DRF's per-field machinery (issue 15, P5); this pins what
they answered before that work, for a fixture with every case a response distinguishes: clusters
with and without a default queue, blank and filled text, a creator or none; hosted Linux and
macOS queues and self-hosted ones, paused or not, with and without a note or an agent image;
agent tokens with and without an expiry and an allow-list (and a revoked one, never shown);
registries ready (with a canary and events), failed, and absent; pagination links; https.

Ids and times are fixed, so the golden file holds the exact bytes. After a change to what a
response shows on purpose, regenerate it with ``UPDATE_GOLDEN=1 pytest tests/api/<this file>``
and review the diff.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from clusters import services
from clusters.models import ApiScope, ApiToken, Cluster, ClusterAgentToken, Organization, Queue
from registries import conditions
from registries.models import Registry, RegistryEvent, State

pytestmark = pytest.mark.django_db

GOLDEN = Path(__file__).with_name("golden_responses.json")
T0 = dt.datetime(2024, 2, 29, 23, 59, 58, 987_654, tzinfo=dt.UTC)
ORG = "acme-corp"


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _user(pk: int, username: str, email: str, first: str = "", last: str = "") -> User:
    return User.objects.create_user(
        username, email, id=pk, first_name=first, last_name=last, date_joined=_at(-86400 - pk)
    )


def _queue(cluster: Cluster, n: int, key: str, **kwargs: Any) -> Queue:
    queue = services.queue_create(cluster=cluster, key=key, queue_id=_id(n), **kwargs)
    Queue.objects.filter(pk=queue.pk).update(created_at=_at(n))
    return queue


def _registry(cluster: Cluster, n: int, state: str, **fields: Any) -> Registry:
    Registry.objects.filter(cluster=cluster).delete()  # the one the first hosted queue made
    registry = Registry(
        id=_id(n), cluster=cluster, namespace=f"{ORG}/{n:012x}", driver="distribution",
        state=state, created_at=_at(n), state_changed_at=_at(n + 1), **fields,
    )  # fmt: skip
    conditions.ready_from_state(registry, now=registry.state_changed_at)
    registry.save(force_insert=True)
    return registry


@pytest.fixture
def world() -> Client:
    """The fixture above, and a client with an API token of every scope."""
    sam = _user(7001, "sam", "Sam@Example.com ", "Sam", "Kim")
    bot = _user(7002, "api-bot", "")
    lee = _user(7003, "lee", "lee@example.org", "Lee")
    made = services.organization_create(slug=ORG, name="Acme Corp")
    Organization.objects.filter(pk=made.pk).update(id=9001, uuid=_id(1), created_at=_at(1))
    organization = Organization.objects.get(pk=9001)
    token, secret = services.api_token_create(
        user=sam, organization=organization, description="golden", scopes=list(ApiScope.values)
    )
    ApiToken.objects.filter(pk=token.pk).update(id=_id(2), created_at=_at(2))

    # A cluster with everything: text, flags, a default queue, every kind of queue, a registry.
    full = services.cluster_create(
        organization=organization, name="Open Source", description="Our OSS", emoji=":penguin:",
        color="#FFE0F1", hosted_git_mirror_enabled=True, hosted_container_cache_enabled=True,
        created_by=sam, cluster_id=_id(10),
    )  # fmt: skip
    small = _queue(full, 11, "linux-small", description="Small", instance_shape="LINUX_AMD64_2X4",
                   created_by=sam)  # fmt: skip
    services.queue_update(queue=small, agent_image_ref="ghcr.io/acme/agent:1.2")
    macos = _queue(full, 12, "macos", instance_shape="MACOS_ARM64_M4_6X28", created_by=bot)
    services.queue_pause_dispatch(queue=macos, user=lee, note="Xcode upgrade")
    paused = _queue(full, 13, "self-hosted", retry_agent_affinity="prefer-different")
    services.queue_pause_dispatch(queue=paused, user=None)
    _queue(full, 14, "arm", instance_shape="LINUX_ARM64_8X32", created_by=lee)
    Queue.objects.filter(pk__in=[macos.pk, paused.pk]).update(dispatch_paused_at=_at(20))
    services.cluster_update(cluster=full, default_queue=small)
    ready = _registry(
        full, 30, State.READY, url=f"registry.example.com/{ORG}/{30:012x}", attempts=1,
        ready_at=_at(32), canary_at=_at(40), canary_ok=True,
        canary_latency=dt.timedelta(milliseconds=12.345), canary_message="pushed, read, deleted",
    )  # fmt: skip
    states = ["", State.PENDING, State.PROVISIONING, State.READY]
    for seconds, (from_state, to_state) in enumerate(zip(states, states[1:], strict=False)):
        RegistryEvent.objects.create(
            registry=ready, from_state=from_state, to_state=to_state, attempt=min(seconds, 1),
            duration=dt.timedelta(seconds=seconds * 0.25), message=f"step {seconds}",
            created_at=_at(30 + seconds),
        )  # fmt: skip
    services.agent_environment_set(
        cluster=full, name="BUILDKITE_HOSTED_REGISTRY_URL", value=ready.url, source="registry"
    )
    for n, description, kwargs in [
        (50, "ci", {"expires_at": dt.datetime(2099, 1, 2, 3, 4, 5, 678_999, tzinfo=dt.UTC),
                    "allowed_ip_addresses": "10.0.0.0/8 202.144.0.0/24", "created_by": sam}),
        (51, "default", {}),
        (52, "revoked", {"created_by": bot}),
    ]:  # fmt: skip
        made, _ = services.agent_token_create(cluster=full, description=description, **kwargs)
        ClusterAgentToken.objects.filter(pk=made.pk).update(id=_id(n), created_at=_at(n))
    services.agent_token_revoke(token=ClusterAgentToken.objects.get(pk=_id(52)))

    # A cluster with nothing: blank text, no creator, no queue, no registry.
    bare = services.cluster_create(organization=organization, name="Bare", cluster_id=_id(60))
    # A self-hosted queue only, and a registry that failed (as an operator left it).
    failed = services.cluster_create(
        organization=organization, name="Zeta", created_by=bot, cluster_id=_id(70)
    )
    _queue(failed, 71, "default", description="")
    services.cluster_update(cluster=failed, default_queue=Queue.objects.get(pk=_id(71)))
    _registry(failed, 72, State.FAILED, attempts=5, last_error="The registry did not answer")
    for n, cluster in [(10, full), (60, bare), (70, failed)]:
        Cluster.objects.filter(pk=cluster.pk).update(created_at=_at(n))
    return Client(headers={"Authorization": f"Bearer {secret}"})


BASE = f"/v2/organizations/{ORG}"
FULL, BARE, FAILED = (f"{BASE}/clusters/{_id(n)}" for n in (10, 60, 70))
#: (name, path, query, secure): every read of the REST API, over the fixture.
REQUESTS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("access token", "/v2/access-token", {}, False),
    ("organization", BASE, {}, False),
    ("clusters", f"{BASE}/clusters", {}, False),
    ("clusters, https", f"{BASE}/clusters", {}, True),
    ("clusters, 100 a page", f"{BASE}/clusters", {"per_page": 100}, False),
    ("clusters, page 1 of 2", f"{BASE}/clusters", {"per_page": 2}, False),
    ("clusters, page 2 of 2", f"{BASE}/clusters", {"per_page": 2, "page": 2}, False),
    ("clusters, page 2 of 3", f"{BASE}/clusters", {"per_page": 1, "page": 2}, False),
    ("clusters, past the end", f"{BASE}/clusters", {"per_page": 2, "page": 9}, False),
    *((f"cluster {n}", path, {}, False) for n, path in ((10, FULL), (60, BARE), (70, FAILED))),
    ("queues", f"{FULL}/queues", {}, False),
    ("queues, https", f"{FULL}/queues", {"per_page": 100}, True),
    ("queues, page 2 of 2", f"{FULL}/queues", {"per_page": 3, "page": 2}, False),
    ("queues of a bare cluster", f"{BARE}/queues", {}, False),
    ("queues of a failed cluster", f"{FAILED}/queues", {}, False),
    *((f"queue {n}", f"{FULL}/queues/{_id(n)}", {}, False) for n in (11, 12, 13, 14)),
    ("queue 71", f"{FAILED}/queues/{_id(71)}", {}, False),
    *(
        (f"queue {n} environment", f"{cluster}/queues/{_id(n)}/environment", {}, False)
        for n, cluster in ((11, FULL), (13, FULL), (71, FAILED))
    ),
    ("tokens", f"{FULL}/tokens", {}, False),
    ("tokens, page 2 of 2", f"{FULL}/tokens", {"per_page": 1, "page": 2}, False),
    ("tokens of a bare cluster", f"{BARE}/tokens", {}, False),
    *((f"token {n}", f"{FULL}/tokens/{_id(n)}", {}, False) for n in (50, 51)),
    ("revoked token", f"{FULL}/tokens/{_id(52)}", {}, False),
    ("registry, ready", f"{FULL}/registry", {}, False),
    ("registry, failed", f"{FAILED}/registry", {}, False),
    ("registry, none", f"{BARE}/registry", {}, False),
]


def _answer(client: Client, path: str, query: dict[str, Any], secure: bool) -> dict[str, Any]:
    response = client.get(path, query, secure=secure)
    return {
        "status": response.status_code,
        "content_type": response["Content-Type"],
        "link": response.get("Link"),
        "body": response.content.decode(),
    }


def test_every_read_answers_what_it_answered_before_byte_for_byte(world: Client) -> None:
    answers = {name: _answer(world, *request) for name, *request in REQUESTS}

    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert list(answers) == list(golden)
    for name, answer in answers.items():
        assert answer == golden[name], name


def test_the_golden_file_covers_what_it_says(world: Client) -> None:
    """The fixture has what the module's docstring promises (a guard against a fixture that
    silently lost a case)."""
    golden = json.loads(GOLDEN.read_text())
    clusters = json.loads(golden["clusters, 100 a page"]["body"])
    queues = json.loads(golden["queues, https"]["body"])
    tokens = json.loads(golden["tokens"]["body"])

    assert [c["name"] for c in clusters] == ["Bare", "Open Source", "Zeta"]
    assert [c["default_queue_url"] is None for c in clusters] == [True, False, False]
    assert [c["created_by"] is None for c in clusters] == [True, False, False]
    assert {("hosted_agents" in q, q["dispatch_paused"]) for q in queues} == {
        (True, False), (True, True), (False, True)
    }  # fmt: skip
    assert all(q["url"].startswith("https://") for q in queues)
    assert [t["description"] for t in tokens] == ["default", "ci"]  # newest first, not revoked
    assert golden["registry, none"]["status"] == 404
    assert 'rel="next"' in golden["clusters, page 2 of 3"]["link"]
    assert 'rel="prev"' in golden["clusters, page 2 of 3"]["link"]
