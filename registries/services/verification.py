"""Verification after a garbage collection (docs/retention.md#verification): every tag of every
ready registry on the collection's backend is checked (its manifest, an index's members, every
blob they reference: ``registries.drivers.verification``); what is missing is recorded
(``VerificationFailure``) against the registry, sets its ``Verified`` condition, and is counted
in the metrics. Nothing is deleted or changed in the registry, so nothing is audited: the
collection's own audit rows (``services.maintenance``) cover the window.

Each registry is read over the network outside any transaction, then its findings are written in
one transaction holding its row (the condition shares the row with the other services' writes).
A registry the check could not read (it did not answer, or answered what a registry configured
for us does not) is recorded as one failure of kind ``registry`` with the driver's account, its
condition ``Unknown``, and counted among ``missing``: a window whose verification did not cover
every registry must not read as passed. Running it again for the same collection replaces that
registry's findings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from controlplane import metrics
from registries import conditions
from registries.backends import backend_get
from registries.drivers import DriverError
from registries.drivers.verification import Finding, NamespaceVerification, namespace_verify
from registries.inventory import Tag
from registries.locks import registry_lock
from registries.maintenance import CollectionState, GarbageCollection, VerificationFailure
from registries.models import Registry, State
from registries.services.placement import registry_driver

logger = logging.getLogger("registries.services")

#: The kind of a failure that is a whole registry the check could not read.
REGISTRY = "registry"
#: How many ``repository:tag`` of the missing content a condition's detail names.
DETAIL_EXAMPLES = 5


@dataclass(frozen=True)
class VerificationSummary:
    """What one collection's verification covered and found, for the window that ran it
    (``services.maintenance``): ``missing`` above 0 means a kept tag cannot be pulled whole, or
    a registry could not be checked."""

    registries: int
    tags: int
    blobs: int
    #: Failures recorded: manifests and blobs missing (for each tag that needs them), and the
    #: registries that could not be checked (``unverified`` of them).
    missing: int
    unverified: int = 0


def collection_verify(
    collection: GarbageCollection, *, progress: Callable[[int, int], None] | None = None
) -> VerificationSummary:
    """Check every kept tag of the collection's backend; record the findings on ``collection``
    (``tags_verified``, ``blobs_verified``, ``missing``, ``failures``) and on each registry
    (condition ``Verified``). ``progress(done, total)`` is called as registries are checked."""
    registries = list(
        Registry.objects.ready().filter(backend_id=collection.backend_id).order_by("pk")
    )
    backend = backend_get(collection.backend_id)
    backend_name = backend.name if backend is not None else str(collection.backend_id)
    tags = blobs = missing = unverified = 0
    for done, registry in enumerate(registries, start=1):
        checked, error = _check(registry)
        if _record(collection, registry, checked, error, backend=backend_name):
            tags, blobs = tags + checked.tags, blobs + checked.blobs
            missing += len(checked.findings) + (error is not None)
            unverified += error is not None
        if progress is not None:
            progress(done, len(registries))
    collection.tags_verified, collection.blobs_verified, collection.missing = tags, blobs, missing
    GarbageCollection.objects.filter(pk=collection.pk).update(
        tags_verified=tags, blobs_verified=blobs, missing=missing
    )
    logger.info(
        "registry.verification.finished",
        extra={
            "collection_id": str(collection.pk),
            "backend_id": collection.backend_id,
            "registries": len(registries),
            "tags": tags,
            "blobs": blobs,
            "missing": missing,
            "unverified": unverified,
        },
    )
    return VerificationSummary(len(registries), tags, blobs, missing, unverified)


def _check(registry: Registry) -> tuple[NamespaceVerification, DriverError | None]:
    """Read the registry's namespace (network, no transaction); the error if it could not."""
    expected = {
        (repository, name): digest
        for repository, name, digest in Tag.objects.filter(
            repository__registry=registry
        ).values_list("repository__name", "name", "digest")
    }
    try:
        driver = registry_driver(registry)
        return namespace_verify(driver, namespace=registry.namespace, expected=expected), None
    except DriverError as exc:
        return NamespaceVerification(), exc


def _record(
    collection: GarbageCollection,
    registry: Registry,
    checked: NamespaceVerification,
    error: DriverError | None,
    *,
    backend: str,
) -> bool:
    """Write one registry's findings and its condition; False if it is no longer ready (being
    deleted: nothing of it to keep). The metrics count once it is committed."""
    findings = checked.findings
    if error is not None:
        findings = [Finding(registry.namespace, "", REGISTRY, "", "", error.detail[:512])]
    with transaction.atomic():
        locked = registry_lock(registry.pk)
        if locked is None or locked.state != State.READY:
            return False
        VerificationFailure.objects.filter(collection=collection, registry=locked).delete()
        VerificationFailure.objects.bulk_create(
            VerificationFailure(
                collection=collection,
                registry=locked,
                repository=finding.repository,
                tag=finding.tag,
                kind=finding.kind,
                digest=finding.digest,
                parent_digest=finding.parent_digest,
                detail=finding.detail[:512],
            )
            for finding in findings
        )
        if _condition(locked, collection, checked, error):
            Registry.objects.filter(pk=locked.pk).update(conditions=locked.conditions)
        transaction.on_commit(lambda: _count(backend, checked.tags, findings))
    for finding in findings:
        logger.warning(
            "registry.verification.missing",
            extra={
                "collection_id": str(collection.pk),
                "registry_id": str(registry.pk),
                "repository": finding.repository,
                "tag": finding.tag,
                "kind": finding.kind,
                "digest": finding.digest,
                "parent_digest": finding.parent_digest,
                "detail": finding.detail,
            },
        )
    return True


def _condition(
    registry: Registry,
    collection: GarbageCollection,
    checked: NamespaceVerification,
    error: DriverError | None,
) -> bool:
    """Set ``Verified`` on the locked registry (not saved); whether it changed."""
    at = collection.started_at or collection.created_at
    after = f"after the garbage collection of {at:%Y-%m-%d %H:%M} UTC"
    if error is not None:
        return conditions.condition_set(
            registry,
            conditions.VERIFIED,
            conditions.UNKNOWN,
            conditions.NOT_VERIFIED,
            f"The registry could not be checked {after} ({error.public}); the next garbage "
            "collection checks it again.",
            detail=error.detail,
        )
    if not checked.findings:
        return conditions.condition_set(
            registry,
            conditions.VERIFIED,
            conditions.TRUE,
            conditions.VERIFICATION_PASSED,
            f"Every tag ({checked.tags}) served its manifests and blobs ({checked.blobs}) {after}.",
        )
    broken = sorted({(f.repository, f.tag) for f in checked.findings})
    examples = ", ".join(
        f"{f.repository}:{f.tag} {f.kind} {f.digest or '(digest unknown)'}"
        for f in checked.findings[:DETAIL_EXAMPLES]
    )
    return conditions.condition_set(
        registry,
        conditions.VERIFIED,
        conditions.FALSE,
        conditions.CONTENT_MISSING,
        f"{len(checked.findings)} manifest(s) or blob(s) that {len(broken)} tag(s) need were "
        f"missing {after}: push those tags again ({', '.join(_tag(b) for b in broken[:3])}"
        f"{', …' if len(broken) > 3 else ''}), or ask an operator to restore them from backup.",
        detail=f"Missing: {examples}{', …' if len(checked.findings) > DETAIL_EXAMPLES else ''}",
    )


def _tag(repository_tag: tuple[str, str]) -> str:
    return f"{repository_tag[0]}:{repository_tag[1]}"


def _count(backend: str, tags: int, findings: list[Finding]) -> None:
    metrics.VERIFICATION_TAGS.labels(backend).inc(tags)
    for finding in findings:
        metrics.VERIFICATION_MISSING.labels(finding.kind).inc()


def registry_verification_latest(
    registry: Registry, *, limit: int = 20
) -> tuple[GarbageCollection | None, list[VerificationFailure]]:
    """The last collection that verified ``registry``'s backend and, at most ``limit``, the
    failures it recorded against the registry (for the console)."""
    verified = Q(state__in=[CollectionState.VERIFYING, CollectionState.SUCCEEDED]) | Q(
        state=CollectionState.FAILED, finished_at__isnull=False, tags_verified__gt=0
    )
    verified |= Q(state=CollectionState.FAILED, missing__gt=0)
    collection = (
        GarbageCollection.objects.filter(verified, backend_id=registry.backend_id)
        .order_by("-created_at")
        .first()
    )
    if collection is None:
        return None, []
    failures = VerificationFailure.objects.filter(collection=collection, registry=registry)
    return collection, list(failures[:limit])
