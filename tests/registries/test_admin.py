"""The operators' console for registries, with Django's test client: badges, actions, the
overview page, and who may do what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from registries import conditions
from registries.models import Registry, RegistryEvent, State
from tests.registries.factories import RegistryFactory
from tests.support.processes import closed_url

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/registries/registry/"


def make_registry(state: str = State.READY, **fields: object) -> Registry:
    return RegistryFactory(
        state=state, url="127.0.0.1:5000/x" if state == State.READY else "", **fields
    )


def act(client: Client, action: str, *registries: Registry, **extra: str):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(r.pk) for r in registries], **extra},
        follow=True,
    )


def test_registries_and_clusters_show_a_state_badge(operator: Client) -> None:
    registry = make_registry(State.FAILED)

    registries = operator.get(CHANGELIST).content.decode()
    clusters = operator.get("/admin/clusters/cluster/").content.decode()

    for page in (registries, clusters):
        assert 'class="registry-badge registry-failed" style="background:#dc3545' in page
    assert registry.namespace in registries
    assert 'href="/admin/registries/registry/overview/"' in registries


def test_retry_moves_a_failed_registry_to_pending_and_says_so_for_others(
    operator: Client, broker_queue, django_capture_on_commit_callbacks
) -> None:
    failed, ready = make_registry(State.FAILED), make_registry(State.READY)

    with django_capture_on_commit_callbacks(execute=True):
        page = act(operator, "retry", failed, ready).content.decode()

    failed.refresh_from_db()
    assert failed.state == State.PENDING
    assert f"Registry {failed.namespace}: now pending." in page
    assert (
        f"Registry {ready.namespace}: Only a failed registry can be retried; this one is ready."
        in page
    )
    assert broker_queue.drain() == [("registries.provision", (str(failed.pk),))]


def test_deprovision_asks_first_and_acts_only_once_confirmed(
    operator: Client, broker_queue, django_capture_on_commit_callbacks
) -> None:
    registry = make_registry(State.READY)

    asked = act(operator, "deprovision", registry)
    registry.refresh_from_db()
    assert registry.state == State.READY
    assert "Deprovisioning deletes <strong>every image</strong>" in asked.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        done = act(operator, "deprovision", registry, confirmed="yes")

    registry.refresh_from_db()
    assert registry.state == State.DEPROVISIONING
    assert registry.events.last().message == "deprovisioned by operator in the console"
    assert f"Registry {registry.namespace}: deprovisioning." in done.content.decode()
    assert broker_queue.drain() == [("registries.deprovision", (str(registry.pk),))]


def test_verify_now_records_what_the_registry_answered(
    operator: Client, registry_settings, settings
) -> None:
    registry = make_registry(State.READY)

    good = act(operator, "verify", registry).content.decode()
    registry.refresh_from_db()
    assert registry.verified_ok is True
    assert registry.verification.endswith("401 with our token challenge, 200 with our token")
    assert registry.verification in good
    assert registry.state == State.READY

    settings.REGISTRY_URL = closed_url()
    act(operator, "verify", registry)
    registry.refresh_from_db()
    assert registry.verified_ok is False
    assert "Connection refused" in registry.verification
    assert registry.state == State.READY  # verifying changes no state


def test_the_overview_shows_states_provisioning_times_failures_and_events(
    operator: Client,
) -> None:
    registry = make_registry(State.READY)
    for seconds in range(1, 21):  # 20 provisionings of 1..20 s in the last day
        RegistryEvent.objects.create(
            registry=registry,
            from_state=State.PROVISIONING,
            to_state=State.READY,
            duration=timedelta(seconds=seconds),
        )
    RegistryEvent.objects.create(  # older than the window: not counted
        registry=registry,
        from_state=State.PROVISIONING,
        to_state=State.READY,
        duration=timedelta(hours=1),
        created_at=timezone.now() - timedelta(days=2),
    )
    failed = make_registry(State.FAILED, last_error="GET /v2/ answered 503")

    page = operator.get("/admin/registries/registry/overview/").content.decode()

    assert "20 registries provisioned;\n  p50 10 s, p95 19 s." in page
    assert failed.namespace in page
    assert "GET /v2/ answered 503" in page
    assert "<th>ready</th>" in page
    assert page.count("<td>20 s</td>") >= 1  # the newest event


def test_only_staff_with_permissions_may_see_and_act(client: Client) -> None:
    registry = make_registry(State.FAILED)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_registry"))
    plain_staff = User.objects.create_user("staff", password="pw", is_staff=True)
    not_staff = User.objects.create_user("user", password="pw")

    client.force_login(not_staff)
    assert client.get(CHANGELIST).status_code == 302  # to the login page

    client.force_login(plain_staff)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get("/admin/registries/registry/overview/").status_code == 403

    client.force_login(viewer)
    page = client.get(CHANGELIST).content.decode()
    assert registry.namespace in page
    assert 'value="retry"' not in page  # actions need the change permission
    assert client.get("/admin/registries/registry/overview/").status_code == 200
    act(client, "retry", registry)
    registry.refresh_from_db()
    assert registry.state == State.FAILED


def test_registries_show_their_conditions_in_the_list_and_in_full(operator: Client) -> None:
    registry = make_registry(State.READY, canary_ok=False)
    conditions.ready_from_state(registry)
    conditions.condition_set(
        registry, "Ready", "False", "CanaryFailed", "The health canary failed: POST answered 503"
    )
    conditions.SyncedCondition.true("Provisioned.").set_on(registry)
    registry.save()

    listed = operator.get(CHANGELIST).content.decode()
    detail = operator.get(f"{CHANGELIST}{registry.pk}/change/").content.decode()

    assert (
        '<span class="registry-condition condition-false" title="The health canary failed: POST '
        'answered 503" style="color:#dc3545;font-weight:600">✖ CanaryFailed</span>'
    ) in listed
    assert 'class="registry-condition condition-true" title="Provisioned."' in listed
    assert '<table class="registry-conditions">' in detail
    assert "<td>Ready</td><td>False</td><td>CanaryFailed</td>" in detail
    assert "<td>Synced</td><td>True</td><td>ReconcileSuccess</td><td>Provisioned.</td>" in detail
    # Failing canaries can be listed on their own.
    assert registry.namespace in operator.get(f"{CHANGELIST}?canary_ok__exact=0").content.decode()
    assert (
        registry.namespace not in operator.get(f"{CHANGELIST}?canary_ok__exact=1").content.decode()
    )


def test_the_signing_keys_are_listed_read_only_without_private_material(
    operator: Client, settings
) -> None:
    from registries.key_files import KeyFolder
    from registries.models import TokenSigningKey
    from registries.services.signing_keys import rotate_keys

    rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))
    rows = list(TokenSigningKey.objects.order_by("-issued_at"))

    response = operator.get("/admin/registries/tokensigningkey/")

    page = response.content.decode()
    assert response.status_code == 200
    assert rows[0].kid in page
    assert rows[1].kid in page
    assert ">current<" in page
    assert ">accepted<" in page
    for row in rows:
        assert row.encrypted_private_key not in page
        detail = operator.get(f"/admin/registries/tokensigningkey/{row.pk}/change/")
        assert detail.status_code == 200
        assert row.encrypted_private_key not in detail.content.decode()
        assert "PRIVATE KEY" not in detail.content.decode()
    assert operator.get("/admin/registries/tokensigningkey/add/").status_code == 403
