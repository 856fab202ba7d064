"""Registry backends: creating one, changing it (weight, labels, capacity, state, addresses),
draining and activating it, and moving its registries to a new public host.

Every write validates first and writes nothing on bad input (``ValidationError`` naming the
field); then this process forgets its copy of the backends (``registries.backends``), and the
others see the change within ``REGISTRY_BACKENDS_CACHE_SECONDS``. A new ``public_host`` stamps
``hosts_changed_at``: the reconciler then republishes the URLs of the backend's ready registries,
a batch a pass (``registries.reconciler.repairs.registry_rehost``), and clears it once none is
left on the old host and no stale copy or attempt in flight can still use it
(``registries.reconciler.repairs.rehost_settle``).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clusters.interface import changes as changed_fields
from clusters.interface import snapshot
from registries.backends import backends_forget
from registries.models import (
    DEFAULT_BACKEND,
    BackendState,
    RegistryBackend,
    StorageKind,
)
from registries.services.audit import platform_audit

logger = logging.getLogger("registries.services")

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST = re.compile(r"[A-Za-z0-9.\-\[\]:]+(?:/[A-Za-z0-9._\-/]*[A-Za-z0-9])?")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,254}")
#: The largest weight or capacity: PostgreSQL's ``integer`` (the columns' type) holds no more.
MAX_WHOLE = 2**31 - 1

#: What an operator may change on an existing backend (its name and storage are its identity).
CHANGEABLE = (
    "api_url", "public_host", "token_service", "labels", "weight", "capacity", "state", "gc_config",
)  # fmt: skip


def backend_validate(backend: RegistryBackend) -> None:
    """Raise ``ValidationError`` (by field) unless ``backend`` may be saved as it is."""
    errors: dict[str, str] = {}
    default = backend.name == DEFAULT_BACKEND
    if not _SLUG.fullmatch(backend.name or ""):
        errors["name"] = "Use 1 to 63 lowercase letters, digits and hyphens."
    elif RegistryBackend.objects.filter(name=backend.name).exclude(pk=backend.pk).exists():
        errors["name"] = f"A backend named {backend.name!r} exists."
    url_ok = re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", backend.api_url or "")
    if (backend.api_url or not default) and not url_ok:
        errors["api_url"] = "Give the registry's API URL, http:// or https://host[:port]."
    host_ok = "://" not in backend.public_host and _HOST.fullmatch(backend.public_host or "")
    if (backend.public_host or not default) and not host_ok:
        errors["public_host"] = "Give host[:port] as jobs push to it, without a scheme."
    if backend.token_service or not default:
        if not _SERVICE.fullmatch(backend.token_service or ""):
            errors["token_service"] = "Give the service its registry names (letters, digits, .-_:)."  # noqa: S105
        elif _service_taken(backend):
            errors["token_service"] = f"Another backend uses the service {backend.token_service!r}."
    if backend.storage not in StorageKind.values:
        errors["storage"] = f"Give one of: {', '.join(StorageKind.values)}."
    if backend.state not in BackendState.values:
        errors["state"] = f"Give one of: {', '.join(BackendState.values)}."
    if (
        not isinstance(backend.weight, int)
        or isinstance(backend.weight, bool)
        or not 0 <= backend.weight <= MAX_WHOLE
    ):
        errors["weight"] = f"Give a whole number from 0 to {MAX_WHOLE} (0 takes no new registries)."
    capacity = backend.capacity
    if capacity is not None and (
        not isinstance(capacity, int)
        or isinstance(capacity, bool)
        or not 0 <= capacity <= MAX_WHOLE
    ):
        errors["capacity"] = f"Give a whole number from 0 to {MAX_WHOLE}, or null for no limit."
    labels = backend.labels
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 63 and len(v) <= 255
        for k, v in labels.items()
    ):
        errors["labels"] = 'Give an object of string labels, e.g. {"region": "eu-west"}.'
    if not _gc_config_ok(backend.gc_config):
        errors["gc_config"] = (
            "Give the absolute path of the registry configuration its replicas run on, as the "
            "maintenance workers see it (at most 512 characters), or leave it blank "
            "(REGISTRY_GC_CONFIG, the default backend)."
        )
    if errors:
        raise ValidationError(errors)


def _gc_config_ok(path: object) -> bool:
    """Blank, or an absolute path: garbage-collect runs in the worker's folder, whatever it is,
    so a relative one would name a different file on each worker."""
    if path == "":
        return True
    return (
        isinstance(path, str)
        and len(path) <= 512
        and os.path.isabs(path)
        and not any(c in path for c in "\0\n\r")
        and path == path.strip()
    )


def _service_taken(backend: RegistryBackend) -> bool:
    """Whether another backend already answers to ``backend``'s token service (the default's
    blank one is ``REGISTRY_TOKEN_SERVICE``)."""
    others = RegistryBackend.objects.exclude(pk=backend.pk)
    if others.filter(token_service=backend.token_service).exists():
        return True
    return backend.token_service == settings.REGISTRY_TOKEN_SERVICE and (
        others.filter(name=DEFAULT_BACKEND, token_service="").exists()
    )


def _shown(backend: RegistryBackend) -> dict[str, Any]:
    """What the audit log shows of a backend: what an operator sets (no secrets are set here)."""
    return snapshot(
        backend, "api_url", "public_host", "token_service", "storage", "labels", "weight",
        "capacity", "state", "gc_config",
    )  # fmt: skip


def backend_create(
    *,
    name: str,
    api_url: str,
    public_host: str,
    token_service: str,
    storage: str = StorageKind.FILESYSTEM,
    labels: dict[str, Any] | None = None,
    weight: int = 100,
    capacity: int | None = None,
    state: str = BackendState.ACTIVE,
    gc_config: str = "",
) -> RegistryBackend:
    """Add a registry backend; new registries may be placed on it at once if it is active."""
    backend = RegistryBackend(
        name=name,
        api_url=(api_url or "").rstrip("/"),
        public_host=(public_host or "").rstrip("/"),
        token_service=token_service,
        storage=storage,
        labels=labels if labels is not None else {},
        weight=weight,
        capacity=capacity,
        state=state,
        gc_config=gc_config,
    )
    with transaction.atomic():
        backend_validate(backend)
        backend.save()
        platform_audit(
            "REGISTRY_BACKEND_CREATED", "REGISTRY_BACKEND", backend.name, _shown(backend)
        )
        backends_forget()  # this process's next read sees it (its own transaction's reads too)
        transaction.on_commit(backends_forget)
    logger.info("registry.backend.created", extra={"backend": backend.name})
    return backend


def backend_update(*, backend: RegistryBackend, **changes: Any) -> RegistryBackend:
    """Change what ``CHANGEABLE`` names of ``backend``. A new public host stamps
    ``hosts_changed_at``: the reconciler republishes its registries' URLs."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise ValidationError({unknown[0]: f"Only these may change: {', '.join(CHANGEABLE)}."})
    with transaction.atomic():
        locked = RegistryBackend.objects.select_for_update().get(pk=backend.pk)
        shown_before = _shown(locked)
        before = locked.public_host or settings.REGISTRY_PUBLIC_HOST
        for name, value in changes.items():
            if name in ("api_url", "public_host") and isinstance(value, str):
                value = value.rstrip("/")
            setattr(locked, name, value)
        backend_validate(locked)
        locked.updated_at = timezone.now()
        if (locked.public_host or settings.REGISTRY_PUBLIC_HOST) != before:
            locked.hosts_changed_at = locked.updated_at
        locked.save()
        platform_audit(
            "REGISTRY_BACKEND_UPDATED",
            "REGISTRY_BACKEND",
            locked.name,
            changed_fields(shown_before, _shown(locked)),
        )
        backends_forget()  # this process's next read sees it (its own transaction's reads too)
        transaction.on_commit(backends_forget)
    logger.info(
        "registry.backend.updated", extra={"backend": locked.name, "changed": sorted(changes)}
    )
    return locked


def backend_drain(*, backend: RegistryBackend) -> RegistryBackend:
    """No new registries on ``backend``; those it has keep working."""
    return backend_update(backend=backend, state=BackendState.DRAINING)


def backend_activate(*, backend: RegistryBackend) -> RegistryBackend:
    """``backend`` takes new registries again."""
    return backend_update(backend=backend, state=BackendState.ACTIVE)
