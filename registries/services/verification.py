"""Verification after a garbage collection (owner: issue 18's verification work): every tag of
every ready registry on the collection's backend is checked (its manifest, an index's members,
every blob they reference); what is missing is recorded (``VerificationFailure``) against the
registry, raises its ``Verified`` condition, and is counted in the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from registries.maintenance import GarbageCollection


@dataclass(frozen=True)
class VerificationSummary:
    registries: int
    tags: int
    blobs: int
    missing: int


def collection_verify(
    collection: GarbageCollection, *, progress: Callable[[int, int], None] | None = None
) -> VerificationSummary:
    """Check every kept tag of the collection's backend; record the findings on ``collection``
    (``tags_verified``, ``blobs_verified``, ``missing``, ``failures``) and on each registry
    (condition ``Verified``). ``progress(done, total)`` is called as registries are checked."""
    raise NotImplementedError
