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
output may be logged and recorded. Except when the configuration cannot be parsed: Distribution
prints ``configuration error: ...`` with the parser's message, which may quote a value of the
file (a YAML type error does); that line and all that follows are replaced by a notice.

The digests of ``blob eligible for deletion`` lines are the blobs it deletes
(``CollectorResult.deleted_blobs``, ``CollectorError.deleted_blobs``): their entries in the
registry's blob-descriptor cache must go (``registries.drivers.storage.blob_cache_forget``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from registries.registry_config_rules import registry_environment

logger = logging.getLogger("registries.drivers")

#: How many of the last output lines a result or an error keeps.
TAIL_LINES = 40
SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
#: The one failure that means an empty storage: no repository was ever pushed to.
#: A blob garbage-collect deletes (printed before it deletes it).
ELIGIBLE_BLOB = re.compile(r"^blob eligible for deletion: (\S+:[0-9a-fA-F]+)$")
#: How Distribution reports a configuration it cannot parse; what follows may quote the file's
#: values (a YAML type error shows the value), secrets among them.
CONFIG_ERROR = "configuration error:"
CONFIG_ERROR_REDACTED = (
    "configuration error: (the rest is not shown: Distribution's message may quote the "
    "configuration's values, secrets among them; run garbage-collect on the file by hand)"
)
#: The one configuration error that quotes nothing of the file: it could not be opened.
UNREADABLE_CONFIG = re.compile(r"configuration error: open \S+: [^:]+$")
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
    one does; ``deleted_blobs`` are those it had started deleting (their cache entries must go
    too)."""

    def __init__(self, message: str, deleted_blobs: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.deleted_blobs = deleted_blobs


class _Output:
    """What garbage-collect prints, as kept: the tail, the summary, the deleted blobs; from a
    configuration error on, nothing more (it may quote secrets)."""

    def __init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.summary: re.Match[str] | None = None
        self.deleted: list[str] = []
        self.redacting = False

    def line(self, raw: str) -> str | None:
        """The line as it may be shown, None to drop it."""
        line = raw.rstrip("\n")
        if self.redacting:
            return None
        if line.lstrip().startswith(CONFIG_ERROR) and not UNREADABLE_CONFIG.match(line):
            self.redacting, line = True, CONFIG_ERROR_REDACTED
        self.tail.append(line)
        self.summary = SUMMARY.search(line) or self.summary
        eligible = ELIGIBLE_BLOB.match(line.strip())
        if eligible:
            self.deleted.append(eligible[1])
        return line


def _command(config_path: str, delete_untagged: bool) -> list[str]:
    untagged = ["--delete-untagged"] if delete_untagged else []
    return [settings.REGISTRY_GC_BINARY, "garbage-collect", *untagged, config_path]


def garbage_collect(
    config_path: str,
    *,
    delete_untagged: bool,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> CollectorResult:
    """Run ``REGISTRY_GC_BINARY garbage-collect [--delete-untagged] <config_path>`` and wait for
    it, calling ``on_line`` with each line it prints as it prints it (every line: throttle any
    write it makes). The replicas serving the storage must be read-only or stopped meanwhile:
    a push racing the collector loses blobs it uploaded.

    Killed after ``timeout`` seconds (default ``REGISTRY_GC_TIME_LIMIT_SECONDS``), and whenever
    this function does not return normally (``on_line`` raised, the task's soft time limit
    struck), or once ``stop`` is set (from another thread: the window was ended under it), so
    that no collector outlives the window that protects it. Whatever it raises carries
    ``deleted_blobs``: the blobs it had started deleting leave the cache all the same.
    """
    command = _command(config_path, delete_untagged)
    limit = settings.REGISTRY_GC_TIME_LIMIT_SECONDS if timeout is None else timeout
    output = _Output()
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
    done, stopped = threading.Event(), threading.Event()
    if stop is not None:
        threading.Thread(target=_kill_on, args=(stop, done, stopped, process), daemon=True).start()
    try:
        for raw in process.stdout or ():
            line = output.line(raw)
            if line is not None and on_line is not None:
                on_line(line)
        returncode = process.wait()
    except BaseException as exc:  # what it deleted so far must leave the cache all the same
        exc.deleted_blobs = tuple(output.deleted)  # type: ignore[attr-defined]
        raise
    finally:
        done.set()
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    output_tail, deleted = "\n".join(output.tail), tuple(output.deleted)
    if returncode != 0 and NOTHING_PUSHED.search(output_tail):
        return CollectorResult(0, 0, output_tail, returncode)
    if stopped.is_set():
        raise CollectorError(
            f"garbage-collect on {config_path} was stopped: its maintenance window was ended "
            f"meanwhile. Its output ended with:\n{output_tail or '(nothing)'}",
            deleted,
        )
    if returncode != 0:
        raise CollectorError(
            _failure(config_path, returncode, output_tail, expired.is_set(), limit), deleted
        )
    summary = output.summary
    blobs, manifests = (int(summary[2]), int(summary[3])) if summary else (0, 0)
    logger.info(
        "registry.gc.finished",
        extra={"config": config_path, "blobs_deleted": blobs, "manifests_deleted": manifests},
    )
    return CollectorResult(blobs, manifests, output_tail, returncode, deleted)


def _kill_on(
    stop: threading.Event,
    done: threading.Event,
    stopped: threading.Event,
    process: subprocess.Popen[str],
) -> None:
    """Kill ``process`` once ``stop`` is set, until ``done``: the collector may print nothing
    for minutes, so its output loop cannot be the one that notices."""
    while not done.wait(0.2):
        if stop.is_set():
            stopped.set()
            process.kill()
            return


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
