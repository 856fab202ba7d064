"""Distribution's garbage collector (``docker-registry garbage-collect``), run on a backend's
registry configuration while its replicas are read-only (``registries.services.maintenance``).

It marks every blob a manifest of any repository references and deletes the rest; with
``--delete-untagged`` it first deletes the manifests no tag points to, which Distribution 2.8
gets wrong for image indexes (``registries.maintenance_selectors.delete_untagged_decision``).

What 2.8.2 prints, on standard output (checked against the binary)::

    <repository>
    <repository>: marking manifest sha256:...
    <repository>: marking blob sha256:...
    manifest eligible for deletion: sha256:...          (--delete-untagged)
    <empty line>
    N blobs marked, M blobs and K manifests eligible for deletion
    blob eligible for deletion: sha256:...

and, when the configuration's log level is info, a log line ``Deleting blob: <path>`` on
standard error for each blob. On success every eligible blob and manifest is deleted: the
counts come from the summary line. A storage no image was ever pushed to fails with ``failed to
mark: <driver>: Path not found: /docker/registry/v2/repositories``; that is nothing to collect,
not an error. Anything else that exits non-zero raises ``CollectorError``.

The configuration holds secrets, the output does not (digests, repository names, paths): the
output may be logged and recorded.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger("registries.drivers")

#: How many of the last output lines a result or an error keeps.
TAIL_LINES = 40
SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
#: The one failure that means an empty storage: no repository was ever pushed to.
NOTHING_PUSHED = re.compile(
    r"failed to mark: \S+: Path not found: /docker/registry/v2/repositories$", re.MULTILINE
)


@dataclass(frozen=True)
class CollectorResult:
    """What one run deleted, and the end of what it printed (for the collection's record)."""

    blobs_deleted: int
    manifests_deleted: int
    output_tail: str
    returncode: int
    #: The digests of the blobs it deleted (``blob_cache_forget`` drops their cache entries).
    deleted_blobs: tuple[str, ...] = ()


class CollectorError(Exception):
    """``garbage-collect`` failed; the message says how, with the end of its output, and what to
    do. Storage may be partly collected: blobs no manifest references may be gone, nothing that
    one does."""


def registry_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` for a Distribution process, as ``scripts/run-registry`` prepares it:
    Distribution reads every ``REGISTRY_*`` variable as an override of its configuration and the
    control plane's own settings share the prefix; its AWS SDK (2.8's) panics at start on S3
    storage when ``AWS_CA_BUNDLE`` is set, and Go reads the same bundle from ``SSL_CERT_FILE``."""
    prepared = {
        name: value
        for name, value in environment.items()
        if not name.startswith("REGISTRY_") and name != "AWS_CA_BUNDLE"
    }
    if environment.get("AWS_CA_BUNDLE"):
        prepared.setdefault("SSL_CERT_FILE", environment["AWS_CA_BUNDLE"])
    return prepared


def _command(config_path: str, delete_untagged: bool) -> list[str]:
    untagged = ["--delete-untagged"] if delete_untagged else []
    return [settings.REGISTRY_GC_BINARY, "garbage-collect", *untagged, config_path]


def garbage_collect(
    config_path: str,
    *,
    delete_untagged: bool,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> CollectorResult:
    """Run ``REGISTRY_GC_BINARY garbage-collect [--delete-untagged] <config_path>`` and wait for
    it, calling ``on_line`` with each line it prints as it prints it (every line: throttle any
    write it makes). The replicas serving the storage must be read-only or stopped meanwhile:
    a push racing the collector loses blobs it uploaded.

    Killed after ``timeout`` seconds (default ``REGISTRY_GC_TIME_LIMIT_SECONDS``), and whenever
    this function does not return normally (``on_line`` raised, the task's soft time limit
    struck), so that no collector outlives the window that protects it.
    """
    command = _command(config_path, delete_untagged)
    limit = settings.REGISTRY_GC_TIME_LIMIT_SECONDS if timeout is None else timeout
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    summary: re.Match[str] | None = None
    logger.info(
        "registry.gc.started",
        extra={"config": config_path, "delete_untagged": delete_untagged},
    )
    try:
        process = subprocess.Popen(  # noqa: S603 - the configured binary, no shell
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=registry_environment(os.environ),
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise CollectorError(
            f"Cannot run {command[0]}: {exc.strerror or exc}. Install Distribution on the "
            "maintenance worker (Debian: docker-registry) or set REGISTRY_GC_BINARY."
        ) from exc
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(limit, expire)
    timer.start()
    try:
        for raw in process.stdout or ():
            line = raw.rstrip("\n")
            tail.append(line)
            summary = SUMMARY.search(line) or summary
            if on_line is not None:
                on_line(line)
        returncode = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    output_tail = "\n".join(tail)
    if returncode != 0 and NOTHING_PUSHED.search(output_tail):
        return CollectorResult(0, 0, output_tail, returncode)
    if returncode != 0:
        raise CollectorError(
            _failure(config_path, returncode, output_tail, expired.is_set(), limit)
        )
    blobs, manifests = (int(summary[2]), int(summary[3])) if summary else (0, 0)
    logger.info(
        "registry.gc.finished",
        extra={"config": config_path, "blobs_deleted": blobs, "manifests_deleted": manifests},
    )
    return CollectorResult(blobs, manifests, output_tail, returncode)


def _failure(config_path: str, returncode: int, tail: str, timed_out: bool, limit: float) -> str:
    if timed_out:
        how = f"was stopped after {limit:g}s (REGISTRY_GC_TIME_LIMIT_SECONDS)"
    else:
        how = f"exited with status {returncode}"
    logger.warning(
        "registry.gc.failed",
        extra={"config": config_path, "returncode": returncode, "output": tail},
    )
    return (
        f"garbage-collect on {config_path} {how}. Its output ended with:\n{tail or '(nothing)'}\n"
        "Check that the file is the backend's registry configuration and that its storage is "
        "reachable from the maintenance worker, then start the collection again: blobs no "
        "manifest references may already be gone, none that one does."
    )
