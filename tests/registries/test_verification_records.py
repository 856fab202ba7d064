"""What the verification after a garbage collection records when a registry cannot be checked,
and what the console shows of it. (Tags, blobs and index members against a real registry:
``test_verification.py``.)"""

from __future__ import annotations

import pytest
from django.test import Client

from clusters.audit import AuditEvent
from registries import conditions
from registries.maintenance import (
    CollectionState,
    CollectionTrigger,
    GarbageCollection,
    VerificationFailure,
)
from registries.models import Registry, State
from registries.services.verification import VerificationSummary, collection_verify
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture
from tests.registries.factories import RegistryFactory, add_backend
from tests.support.processes import closed_url

pytestmark = pytest.mark.django_db

MISSING = "controlplane_registry_verification_missing_total"


def verifying(backend_id: int) -> GarbageCollection:
    return GarbageCollection.objects.create(
        backend_id=backend_id, trigger=CollectionTrigger.SCHEDULE, state=CollectionState.VERIFYING
    )


def test_a_registry_that_does_not_answer_is_one_failure_of_kind_registry_and_not_verified(
    scrape,  # noqa: F811 - the imported fixture
    django_capture_on_commit_callbacks,
) -> None:
    down = add_backend("down", api_url=closed_url())
    registry = RegistryFactory(state=State.READY, backend=down)
    pending = RegistryFactory(backend=down)  # not ready: nothing of it to check
    elsewhere = RegistryFactory(state=State.READY)  # on the default backend
    gc = verifying(down.pk)
    audit_rows = AuditEvent.objects.count()
    before = scrape()

    with django_capture_on_commit_callbacks(execute=True):
        summary = collection_verify(gc)

    assert summary == VerificationSummary(registries=1, tags=0, blobs=0, missing=1, unverified=1)
    failure = VerificationFailure.objects.get()
    assert (failure.registry_id, failure.repository, failure.tag, failure.kind) == (
        registry.pk,
        registry.namespace,
        "",
        "registry",
    )
    assert (failure.digest, failure.parent_digest) == ("", "")
    assert failure.detail.startswith(f"GET {down.api_url}/v2/_catalog?n=100 failed: ")
    gc.refresh_from_db()
    assert (gc.tags_verified, gc.blobs_verified, gc.missing) == (0, 0, 1)
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.VERIFIED)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == (conditions.UNKNOWN, "NotVerified")
    # Tenants read what failed, not where: the address is the operators' (``detail``).
    assert "(The registry did not answer (connection refused))" in condition["message"]
    assert down.api_url not in condition["message"]
    assert condition["detail"] == failure.detail
    assert delta(before, scrape(), MISSING, kind="registry") == 1
    for untouched in (pending, elsewhere):
        untouched.refresh_from_db()
        assert conditions.condition_get(untouched, conditions.VERIFIED) is None
    assert AuditEvent.objects.count() == audit_rows

    # Run again for the same collection: its findings are replaced, not added to.
    assert collection_verify(gc).missing == 1
    assert VerificationFailure.objects.count() == 1


def test_the_registry_page_shows_the_failures_of_the_last_verification(operator: Client) -> None:
    registry = RegistryFactory(state=State.READY)
    older = GarbageCollection.objects.create(
        backend_id=registry.backend_id, trigger="schedule", state=CollectionState.SUCCEEDED
    )
    VerificationFailure.objects.create(
        collection=older, registry=registry, repository=f"{registry.namespace}/old", tag="1",
        kind="blob", digest="sha256:" + "0" * 64, parent_digest="sha256:" + "1" * 64,
    )  # fmt: skip
    page = f"/admin/registries/registry/{registry.pk}/change/"
    latest = verifying(registry.backend_id)
    latest.tags_verified, latest.blobs_verified, latest.missing = 7, 9, 1
    latest.save()
    VerificationFailure.objects.create(
        collection=latest, registry=registry, repository=f"{registry.namespace}/app", tag="v2",
        kind="manifest", digest="sha256:" + "a" * 64, parent_digest="sha256:" + "b" * 64,
        detail="index member: 404",
    )  # fmt: skip

    response = operator.get(page)

    assert response.status_code == 200
    text = response.content.decode()
    assert "7 tags and 9 blobs checked on the backend, 1 missing." in text
    assert (
        f"<tr><td>{registry.namespace}/app</td><td>v2</td><td>manifest</td>"
        f"<td>sha256:{'a' * 64}</td><td>sha256:{'b' * 64}</td><td>index member: 404</td></tr>"
    ) in text
    assert f"{registry.namespace}/old" not in text  # an earlier collection's
    listed = operator.get(
        f"/admin/registries/verificationfailure/?registry__id__exact={registry.pk}"
        f"&collection__id__exact={latest.pk}"
    )
    assert listed.status_code == 200
    assert "index member: 404" in listed.content.decode()
    assert f"{registry.namespace}/old" not in listed.content.decode()


def test_a_registry_page_before_any_verification_says_so(operator: Client) -> None:
    registry: Registry = RegistryFactory(state=State.READY)

    response = operator.get(f"/admin/registries/registry/{registry.pk}/change/")

    assert response.status_code == 200
    assert "No garbage collection has verified this registry&#x27;s backend yet." in (
        response.content.decode()
    )
