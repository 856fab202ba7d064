"""Placeholder (issue 18): H4 (storage) replaces this body; its signature is fixed."""

from __future__ import annotations


def delete_untagged_decision(backend_id: int) -> tuple[bool, str]:
    """Whether ``garbage-collect --delete-untagged`` is safe on the backend, and why (not)."""
    raise NotImplementedError
