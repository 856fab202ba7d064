"""The registry's events in (``POST /registry/notifications``) and applied to the inventory
(``registries.services.notifications``): authentication, validation, idempotence, application."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from controlplane.celery import app as celery_app
from registries import services
from registries.inventory import Manifest, RegistryNotification, Repository, Tag, UsageDay
from registries.models import Registry, State
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - scrape: a fixture
from tests.registries.factories import RegistryFactory
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

TOKEN = "notify-token-never-logged"
URL = "/registry/notifications"
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
AT = datetime(2026, 11, 28, 1, 34, 36, tzinfo=UTC)
MANIFEST, CONFIG, LAYER = "sha256:" + "a" * 64, "sha256:" + "c" * 64, "sha256:" + "1" * 64


@pytest.fixture(autouse=True)
def notifications_on(settings) -> None:
    settings.REGISTRY_NOTIFICATIONS_URL = "http://testserver/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = TOKEN
    settings.REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS = []


@pytest.fixture
def registry() -> Registry:
    return RegistryFactory(state=State.READY)


def event(
    event_id: str, action: str, repository: str, *, at: datetime = AT, **target: Any
) -> dict[str, Any]:
    """An event as Distribution 2.8 sends it (docs/usage.md#registry-events)."""
    return {
        "id": event_id,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "action": action,
        "target": {"repository": repository, **target},
        "request": {"id": "r", "addr": "127.0.0.1:1", "method": "PUT", "useragent": "skopeo"},
        "actor": {"name": "agent"},
        "source": {"addr": "registry:5000", "instanceID": "i"},
    }


def push(event_id: str, repository: str, *, tag: str | None = "latest", **kw: Any) -> dict:
    target: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "size": 349,
        "digest": MANIFEST,
        "length": 349,
        "references": [
            {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": 457,
                "digest": CONFIG,
            },
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": 1000,
                "digest": LAYER,
            },
        ],
    }
    if tag:
        target["tag"] = tag
    target.update(kw)
    return event(event_id, "push", repository, **target)


def post(
    client: Client,
    body: object,
    *,
    token: str | None = TOKEN,
    content_type: str = EVENTS_TYPE,
) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, **headers)


def test_a_batch_is_recorded_once_and_its_application_enqueued(
    client: Client, registry: Registry, broker_queue, django_capture_on_commit_callbacks
) -> None:
    body = {"events": [push("e1", f"{registry.namespace}/base")]}

    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, body)
    with django_capture_on_commit_callbacks(execute=True):
        again = post(client, body)

    assert (first.status_code, first.json()) == (200, {"accepted": 1})
    assert (again.status_code, again.json()) == (200, {"accepted": 1})
    row = RegistryNotification.objects.get()
    assert (row.pk, row.registry_id, row.action) == ("e1", registry.pk, "push")
    assert (row.repository, row.occurred_at, row.applied_at) == (
        f"{registry.namespace}/base",
        AT,
        None,
    )
    assert row.target["tag"] == "latest"
    # One message, for the first copy only: the duplicate recorded nothing new.
    assert broker_queue.drain() == [(services.NOTIFICATIONS_TASK, ([str(registry.pk)],))]


def test_a_duplicate_batch_is_counted_once(client: Client, registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    body = {
        "events": [
            push("e1", repository),
            event("e2", "pull", repository, mediaType=OCI_MANIFEST, digest=MANIFEST, tag="latest"),
        ]
    }
    assert post(client, body).status_code == 200
    services.notifications_apply(registry_id=registry.pk)
    assert post(client, body).json() == {"accepted": 2}
    assert services.notifications_apply(registry_id=registry.pk) == 0

    day = UsageDay.objects.get(registry=registry, repository="", day=AT.date())
    assert (day.pushes, day.pulls) == (1, 1)
    assert Tag.objects.get().last_pulled_at == AT


def test_the_endpoint_takes_three_queries(client: Client, registry: Registry) -> None:
    """One lookup of the batch's registries by namespace, one of the ids already recorded, one
    INSERT for the batch, whatever its length."""
    repository = f"{registry.namespace}/base"
    events = [push(f"e{n}", repository, tag=f"t{n}") for n in range(20)]
    with expected_queries("registry-notifications", "POST"):
        assert post(client, {"events": events}).status_code == 200
    assert RegistryNotification.objects.count() == 20


def test_blob_events_and_unknown_namespaces_are_dropped(client: Client, registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    blob = {"mediaType": "application/octet-stream", "digest": LAYER, "size": 1000}
    body = {
        "events": [
            event("b1", "push", repository, **blob),
            event("b2", "pull", repository, **blob),
            event("b3", "mount", repository, fromRepository=f"{registry.namespace}/x", **blob),
            push("u1", "controlplane.canary/0123456789ab/x"),
            push("m1", repository),
        ]
    }
    assert post(client, body).json() == {"accepted": 5}
    assert list(RegistryNotification.objects.values_list("pk", flat=True)) == ["m1"]


@pytest.mark.parametrize(
    ("token", "accepted"),
    [("old-token", True), ("forged-token", False), (TOKEN + "x", False), ("", False)],
)
def test_previous_tokens_are_accepted_for_rotation(
    client: Client, registry: Registry, settings, token: str, accepted: bool
) -> None:
    settings.REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS = ["old-token"]
    response = post(client, {"events": [push("e1", f"{registry.namespace}/base")]}, token=token)
    assert response.status_code == (200 if accepted else 401)
    assert RegistryNotification.objects.exists() is accepted


@pytest.mark.parametrize(
    "authorization", [None, f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer", f"Bearer  {TOKEN}x"]
)
def test_no_or_a_forged_token_is_401_and_records_nothing(
    client: Client, registry: Registry, authorization: str | None
) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    body = json.dumps({"events": [push("e1", f"{registry.namespace}/base")]})
    response = client.post(URL, data=body, content_type=EVENTS_TYPE, **headers)

    assert response.status_code == 401
    assert response.json() == {
        "message": "Send the registry's notifications token: Authorization: Bearer <token>."
    }
    assert not RegistryNotification.objects.exists()


def test_not_configured_is_404(client: Client, registry: Registry, settings) -> None:
    settings.REGISTRY_NOTIFICATIONS_TOKEN = ""
    response = post(client, {"events": [push("e1", f"{registry.namespace}/base")]}, token="")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Registry notifications are not configured here: set "
        "REGISTRY_NOTIFICATIONS_TOKEN."
    }
    assert not RegistryNotification.objects.exists()


def test_other_methods_and_content_types_are_refused(client: Client) -> None:
    assert client.get(URL).status_code == 405
    response = post(client, {"events": []}, content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["message"].endswith("not text/plain.")
    assert post(client, {"events": []}, content_type="application/json").status_code == 200


def _valid() -> dict[str, Any]:
    return push("e1", "acme/0123456789ab/base")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The body is not JSON: "),
        (b"\xff\xfe", "The body is not JSON: "),
        ([], 'Send {"events": [...]}: the body has no "events" list.'),
        ({"events": {}}, 'Send {"events": [...]}: the body has no "events" list.'),
        ({"events": [_valid()] * 1001}, "1001 events in one batch; at most 1000."),
        ({"events": [_valid(), 3]}, "events[1] is not an object."),
        (
            {"events": [{**_valid(), "id": ""}]},
            "events[0].id must be a string of 1 to 64 characters.",
        ),
        (
            {"events": [{k: v for k, v in _valid().items() if k != "id"}]},
            "events[0].id must be a string of 1 to 64 characters.",
        ),
        (
            {"events": [{**_valid(), "action": "tag"}]},
            "events[0].action 'tag' is not one of push, pull, delete, mount.",
        ),
        (
            {"events": [{**_valid(), "timestamp": "yesterday"}]},
            "events[0].timestamp must be an RFC 3339 time with its offset.",
        ),
        (
            {"events": [{**_valid(), "timestamp": "2026-11-28T01:34:36"}]},
            "events[0].timestamp must be an RFC 3339 time with its offset.",
        ),
        ({"events": [{**_valid(), "target": None}]}, "events[0].target is not an object."),
        (
            {"events": [{**_valid(), "target": {"digest": MANIFEST}}]},
            "events[0].target.repository must be a string of 1 to 255 characters.",
        ),
        (
            {"events": [push("e1", "acme/0123456789ab/base", size="349")]},
            "events[0].target.size must be a whole number of bytes.",
        ),
        (
            {"events": [push("e1", "acme/0123456789ab/base", tag=7)]},
            "events[0].target.tag must be a string.",
        ),
        (
            {"events": [push("e1", "acme/0123456789ab/base", references=[{"size": 1}])]},
            "events[0].target.references must be a list of {digest, size} objects.",
        ),
    ],
)
def test_a_malformed_batch_is_400_and_records_nothing(
    client: Client, body: object, message: str
) -> None:
    RegistryFactory(state=State.READY, namespace="acme/0123456789ab")
    response = post(client, body)

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    assert not RegistryNotification.objects.exists()


def test_a_body_over_the_limit_is_413(client: Client, registry: Registry, settings) -> None:
    settings.API_MAX_BODY_BYTES = 100
    response = post(client, {"events": [push("e1", f"{registry.namespace}/base")]})
    assert response.status_code == 413
    assert not RegistryNotification.objects.exists()


def test_nanosecond_timestamps_are_read(client: Client, registry: Registry) -> None:
    body = push("e1", f"{registry.namespace}/base")
    body["timestamp"] = "2026-11-28T01:34:36.384086698Z"
    assert post(client, {"events": [body]}).status_code == 200
    assert RegistryNotification.objects.get().occurred_at == AT.replace(microsecond=384086)


def receive(*events: dict[str, Any]) -> services.Received:
    from registries.notifications import parse_envelope

    return services.notifications_receive(parse_envelope(json.dumps({"events": events}).encode()))


def test_a_push_makes_the_tag_and_its_usage(registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    receive(push("e1", repository))

    assert services.notifications_apply(registry_id=registry.pk) == 1

    registry.refresh_from_db()
    assert (registry.usage_bytes, registry.usage_repositories, registry.usage_tags) == (
        349 + 457 + 1000,
        1,
        1,
    )
    assert registry.last_push_at == AT
    tag = Tag.objects.get()
    assert (tag.repository.name, tag.name, tag.digest, tag.bytes, tag.pushed_at) == (
        repository,
        "latest",
        MANIFEST,
        1806,
        AT,
    )
    manifest = Manifest.objects.get()
    assert (manifest.blobs, manifest.complete) == ({CONFIG: 457, LAYER: 1000}, True)
    day = UsageDay.objects.get(registry=registry, repository=repository, day=AT.date())
    assert (day.pushes, day.pulls) == (1, 0)
    assert RegistryNotification.objects.get().applied_at is not None


def test_an_index_counts_its_members_blobs_when_they_were_pushed_first(registry: Registry) -> None:
    repository = f"{registry.namespace}/multi"
    member = push("m", repository, tag=None)
    index = push(
        "i",
        repository,
        mediaType=OCI_INDEX,
        digest="sha256:" + "f" * 64,
        size=300,
        references=[{"mediaType": OCI_MANIFEST, "size": 349, "digest": MANIFEST}],
    )
    unknown_member = push(
        "j",
        repository,
        tag="other",
        mediaType=OCI_INDEX,
        digest="sha256:" + "e" * 64,
        size=300,
        references=[{"mediaType": OCI_MANIFEST, "size": 10, "digest": "sha256:" + "0" * 64}],
    )
    receive(member, index, unknown_member)
    services.notifications_apply(registry_id=registry.pk)

    complete = Manifest.objects.get(digest="sha256:" + "f" * 64)
    assert (complete.blobs, complete.complete) == ({MANIFEST: 349, CONFIG: 457, LAYER: 1000}, True)
    partial = Manifest.objects.get(digest="sha256:" + "e" * 64)
    assert (partial.blobs, partial.complete) == ({"sha256:" + "0" * 64: 10}, False)
    assert Tag.objects.get(name="latest").bytes == 300 + 349 + 457 + 1000
    assert UsageDay.objects.get(registry=registry, repository="", day=AT.date()).pushes == 2


def test_a_pull_records_when_and_a_delete_by_digest_forgets_the_tags(registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    later = AT + timedelta(minutes=5)
    receive(
        push("e1", repository),
        event("e2", "pull", repository, at=later, mediaType=OCI_MANIFEST, digest=MANIFEST),
    )
    services.notifications_apply(registry_id=registry.pk)
    assert Tag.objects.get().last_pulled_at == later
    assert Repository.objects.get().last_pull_at == later

    receive(
        event("e3", "delete", repository, at=later, digest=MANIFEST),
        event("e4", "delete", repository, at=later, tag="latest"),
    )
    services.notifications_apply(registry_id=registry.pk)

    registry.refresh_from_db()
    assert not Tag.objects.exists()
    assert not Manifest.objects.exists()
    assert (registry.usage_bytes, registry.usage_tags, registry.last_pull_at) == (0, 0, later)


def test_a_tag_deleted_then_pushed_again_stays(registry: Registry) -> None:
    """A tag's delete event applied after a newer push of that tag leaves the new tag."""
    repository = f"{registry.namespace}/base"
    receive(push("e1", repository, at=AT + timedelta(minutes=1)))
    receive(event("e0", "delete", repository, at=AT, tag="latest"))
    services.notifications_apply(registry_id=registry.pk)
    assert Tag.objects.get().pushed_at == AT + timedelta(minutes=1)


def test_an_older_push_applied_after_a_newer_one_leaves_the_newer(registry: Registry) -> None:
    """Each replica sends its own events, retried with backoff: they arrive out of order."""
    repository, newer = f"{registry.namespace}/base", "sha256:" + "b" * 64
    receive(push("e2", repository, at=AT + timedelta(seconds=5), digest=newer))
    receive(push("e1", repository, at=AT))
    services.notifications_apply(registry_id=registry.pk)
    tag = Tag.objects.get()
    assert (tag.digest, tag.pushed_at) == (newer, AT + timedelta(seconds=5))


def test_an_older_delete_by_digest_spares_the_tag_pushed_again_since(registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    receive(push("e1", repository, at=AT + timedelta(seconds=5)))
    receive(event("e0", "delete", repository, at=AT, digest=MANIFEST))
    services.notifications_apply(registry_id=registry.pk)
    assert Tag.objects.get().pushed_at == AT + timedelta(seconds=5)


def test_an_older_pull_applied_later_keeps_the_last_pull(registry: Registry) -> None:
    repository, later = f"{registry.namespace}/base", AT + timedelta(minutes=5)
    pull = {"mediaType": OCI_MANIFEST, "digest": MANIFEST}
    receive(push("e1", repository), event("e3", "pull", repository, at=later, **pull))
    receive(event("e2", "pull", repository, at=AT + timedelta(minutes=1), **pull))
    services.notifications_apply(registry_id=registry.pk)
    assert Tag.objects.get().last_pulled_at == later
    assert Repository.objects.get().last_pull_at == later


def test_head_requests_and_the_control_planes_own_reads_are_not_pulls(registry: Registry) -> None:
    """The usage scan and tag deletion read manifests with the control plane's tokens, and a
    client asks for a digest with HEAD: none of them is a pull."""
    repository = f"{registry.namespace}/base"
    pull = {"mediaType": OCI_MANIFEST, "digest": MANIFEST}
    head = event("h", "pull", repository, **pull)
    head["request"]["method"] = "HEAD"
    scan = event("s", "pull", repository, **pull)
    scan["actor"]["name"] = "controlplane"
    real = event("g", "pull", repository, **pull)
    real["request"]["method"] = "GET"

    received = receive(head, scan, real)

    assert (received.received, received.ignored) == (1, 2)
    assert list(RegistryNotification.objects.values_list("pk", flat=True)) == ["g"]


def test_events_apply_in_batches_in_the_order_received(registry: Registry) -> None:
    repository = f"{registry.namespace}/base"
    first = push("e1", repository, tag="v1")
    second = push("e2", repository, tag="v1", digest="sha256:" + "b" * 64)
    receive(first)
    receive(second)
    assert services.notifications_apply(registry_id=registry.pk, limit=1) == 2
    assert Tag.objects.get().digest == "sha256:" + "b" * 64
    assert not RegistryNotification.objects.filter(applied_at__isnull=True).exists()


def test_a_message_the_broker_refuses_leaves_the_rows_for_the_sweep(
    client: Client, registry: Registry, monkeypatch, caplog, django_capture_on_commit_callbacks
) -> None:
    def refuse(*args: object) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(celery_app.tasks[services.NOTIFICATIONS_TASK], "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"events": [push("e1", f"{registry.namespace}/base")]})

    assert response.status_code == 200
    assert "registry.notifications.enqueue_failed" in caplog.text
    assert services.notifications_sweep()["applied"] == 1
    assert Tag.objects.get().name == "latest"


def test_the_sweep_applies_what_no_message_did_and_prunes_old_events(
    registry: Registry, settings
) -> None:
    settings.REGISTRY_NOTIFICATIONS_KEEP_DAYS = 7
    repository = f"{registry.namespace}/base"
    receive(push("old", repository, tag="old"))
    RegistryNotification.objects.filter(pk="old").update(
        received_at=timezone.now() - timedelta(days=8)
    )
    receive(push("new", repository, tag="new"))

    assert services.notifications_sweep() == {"applied": 2, "pruned": 1}

    assert list(RegistryNotification.objects.values_list("pk", flat=True)) == ["new"]
    assert set(Tag.objects.values_list("name", flat=True)) == {"old", "new"}
    assert services.notifications_sweep() == {"applied": 0, "pruned": 0}


def test_events_and_refusals_are_counted_and_the_token_is_never_logged(
    client: Client,
    registry: Registry,
    scrape,  # noqa: F811 - the fixture
    caplog,
) -> None:
    caplog.set_level("DEBUG")
    repository = f"{registry.namespace}/base"
    blob = event("b1", "pull", repository, mediaType="application/octet-stream", digest=LAYER)
    body = {"events": [push("e1", repository), blob, push("u1", "other/0123456789ab/x")]}
    before = scrape()

    assert post(client, body).status_code == 200
    assert post(client, body).status_code == 200
    assert services.notifications_apply(registry_id=registry.pk) == 1
    assert post(client, body, token="forged").status_code == 401
    assert post(client, {"events": 1}).status_code == 400

    after = scrape()
    events = "controlplane_registry_notifications_total"
    expected = {"received": 1, "duplicate": 1, "ignored": 2, "unmatched": 2, "applied": 1}
    for outcome, count in expected.items():
        assert delta(before, after, events, outcome=outcome) == count, outcome
    refusals = "controlplane_registry_notification_refusals_total"
    for reason in ("unauthorized", "invalid"):
        assert delta(before, after, refusals, reason=reason) == 1, reason
    assert TOKEN not in caplog.text
    assert "forged" not in caplog.text
    assert not [r for r in caplog.records if r.name == "django.request"]  # refusals: counted


def test_a_registry_another_worker_holds_is_asked_once_more_a_second_later(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task leaves a held registry to its holder and sends one more message, a second later,
    for an event the holder may have read too early; that one sends none."""
    from registries import tasks

    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks, "notifications_apply_unless_busy", lambda registry_id: None)
    monkeypatch.setattr(
        tasks.apply_notifications,
        "apply_async",
        lambda args, countdown: sent.append((args, countdown)),
    )
    assert tasks.apply_notifications([str(registry.pk)]) == 0
    assert sent == [(([str(registry.pk)], False), 1)]
    assert tasks.apply_notifications([str(registry.pk)], again=False) == 0
    assert len(sent) == 1
