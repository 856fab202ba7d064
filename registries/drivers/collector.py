"""Placeholder (issue 18): H4 (storage) replaces this body; its signature is fixed
(/work/plan/SHARED18.md). Distribution's ``garbage-collect`` on a registry configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CollectorResult:
    blobs_deleted: int
    manifests_deleted: int
    output_tail: str
    returncode: int


def garbage_collect(
    config_path: str, *, delete_untagged: bool, on_line: Callable[[str], None] | None = None
) -> CollectorResult:
    """Run ``garbage-collect`` on ``config_path``, each output line to ``on_line``."""
    raise NotImplementedError
