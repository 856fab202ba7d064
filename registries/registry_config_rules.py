"""Rules the generated registry configuration obeys that the maintenance window shares with it
(docs/retention.md#upload-purging): Go durations, and the age at which an abandoned upload may be
purged.

An upload is purged once it was started longer ago than ``REGISTRY_UPLOAD_PURGING_AGE``, whether
or not its client is still sending it. A push runs at most as long as one credential lets it
(the push token, or the job credential a pipeline step pushes with, whichever lives longer), so
an age shorter than that could delete a slow push's upload under it: ``registry_config`` refuses
it, and the window's own purge (``registries.drivers.storage.uploads_purge``) uses the same age.

Kept free of models: ``registry_config`` is imported before Django's apps are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings

#: A Go duration as Distribution parses it (time.ParseDuration): 168h, 90m, 1h30m.
GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class RegistryConfigError(ValueError):
    """A setting that cannot make a working configuration; its message names the setting and
    never holds its value (it may be a secret) unless the value is a plain duration."""


def go_duration(name: str) -> str:
    """The setting ``name``, checked to be a Go duration (RegistryConfigError otherwise)."""
    value = str(getattr(settings, name))
    if not GO_DURATION.fullmatch(value):
        raise RegistryConfigError(f"{name}={value!r} is not a duration such as 168h or 90m")
    return value


def duration_timedelta(value: str) -> timedelta:
    """A Go duration (``GO_DURATION``) as a timedelta."""
    return timedelta(
        seconds=sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(value))
    )


def _shown(delta: timedelta) -> str:
    """A whole number of seconds as the shortest Go duration that says it (8h, 90m, 45s)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def upload_purging_minimum() -> timedelta:
    """The longest a push can run with one credential: the push token's lifetime or the job
    credential's, whichever is longer."""
    return timedelta(
        seconds=max(
            settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS, settings.REGISTRY_JOB_CREDENTIAL_TTL_SECONDS
        )
    )


def upload_purging_age() -> timedelta:
    """``REGISTRY_UPLOAD_PURGING_AGE``: uploads started longer ago than this are abandoned.

    RegistryConfigError when it is not a Go duration, or when it is shorter than
    ``upload_purging_minimum()``: the purger would then delete the upload of a push still under
    way with a valid credential, and the push would fail with BLOB_UPLOAD_UNKNOWN.
    """
    age = duration_timedelta(go_duration("REGISTRY_UPLOAD_PURGING_AGE"))
    minimum = upload_purging_minimum()
    if age < minimum:
        raise RegistryConfigError(
            f"REGISTRY_UPLOAD_PURGING_AGE={settings.REGISTRY_UPLOAD_PURGING_AGE} is shorter than "
            f"{_shown(minimum)}, the longest a push can run with one credential (the longer of "
            f"REGISTRY_TOKEN_PUSH_TTL_SECONDS={settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS} and "
            "REGISTRY_JOB_CREDENTIAL_TTL_SECONDS="
            f"{settings.REGISTRY_JOB_CREDENTIAL_TTL_SECONDS}): the registry would purge a slow "
            f"push's upload while it runs. Set it to {_shown(minimum)} or more"
        )
    return age


def registry_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` for a Distribution process, as ``scripts/run-registry`` prepares it (here,
    in a module with no model import: the test support and ``python -m bench`` import it before
    Django is set up). Distribution reads every ``REGISTRY_*`` variable as an override of its
    configuration and the control plane's own settings share the prefix; its AWS SDK (2.8's)
    panics at start on S3 storage when ``AWS_CA_BUNDLE`` is set, and Go reads the same bundle
    from ``SSL_CERT_FILE``."""
    prepared = {
        name: value
        for name, value in environment.items()
        if not name.startswith("REGISTRY_") and name != "AWS_CA_BUNDLE"
    }
    if environment.get("AWS_CA_BUNDLE"):
        prepared.setdefault("SSL_CERT_FILE", environment["AWS_CA_BUNDLE"])
    return prepared
