"""Two ``celery beat`` processes on one Redis (controlplane/beat.py): exactly one sends the
schedule, once per interval; killed (SIGKILL), it is replaced by the other within two intervals,
and no interval is sent twice.

Nothing consumes the queues: each message beat sent stays in its Redis list, and says when it
was sent (its ``expires`` header is the send time plus the entry's interval).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.conf import settings
from redbeat.schedulers import RedBeatSchedulerEntry

from controlplane.beat import RETRY_SECONDS, LeaderScheduler
from controlplane.beat_settings import KEY_PREFIX, uses_redis
from controlplane.probes import BEAT, heartbeat_path, heartbeat_state
from tests.support.processes import ROOT, free_port, stop_process, wait_until
from tests.support.stack import RedisServer

pytestmark = pytest.mark.integration

RECONCILE = 2.0  # seconds: the shortest interval
CANARIES = 4.0
LOOP = "0.5"
LOCK_TIMEOUT = "2"
#: How far a send may stray from its interval (a tick's own delay, a busy machine).
SLACK = 0.5
QUEUES = {"registries.reconcile": "celery", "registries.canaries": "canaries"}


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """The tests' Redis (CELERY_BROKER_URL, as CI sets it), else a private one; RedBeat's keys
    are cleared before and after."""
    server = None
    url = settings.CELERY_BROKER_URL
    if not uses_redis(url):
        server = RedisServer(tmp_path / "redis").start()
        url = server.url(0)
    client = redis.Redis.from_url(url)
    _clear(client)
    try:
        yield url
    finally:
        _clear(client)
        if server is not None:
            server.stop()


def _clear(client: redis.Redis) -> None:
    keys = list(client.scan_iter(f"{KEY_PREFIX}*"))
    if keys:
        client.delete(*keys)


class Beat:
    """``celery -A controlplane beat`` with the production settings, its heartbeat its own."""

    def __init__(self, name: str, workdir: Path, redis_url: str) -> None:
        self.heartbeats = workdir / name
        self.log_path = workdir / f"{name}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CELERY_BROKER_URL": redis_url,
            "REDIS_URL": redis_url,
            "REGISTRY_RECONCILE_INTERVAL_SECONDS": str(RECONCILE),
            "REGISTRY_CANARY_INTERVAL_SECONDS": str(CANARIES),
            "CELERY_BEAT_LOOP_SECONDS": LOOP,
            "CELERY_BEAT_LOCK_TIMEOUT_SECONDS": LOCK_TIMEOUT,
            "PROBE_HEARTBEAT_DIR": str(self.heartbeats),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "-l", "INFO"],
                cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def state(self) -> str:
        """What its heartbeat says: active, standby, or "" before its first tick."""
        assert self.process.poll() is None, self.log()
        path = self.heartbeats / heartbeat_path(BEAT).name
        return path.read_text() if path.exists() else ""

    def sends(self) -> int:
        return self.log().count("Sending due task")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def queued(client: redis.Redis, since: float) -> list[tuple[str, float, bytes]]:
    """Each message beat sent since ``since`` (epoch seconds): its task, when it was sent, and
    the message as queued."""
    intervals = {"registries.reconcile": RECONCILE, "registries.canaries": CANARIES}
    found = []
    for queue in set(QUEUES.values()):
        for raw in client.lrange(queue, 0, -1):
            headers = json.loads(raw)["headers"]
            if headers["task"] in intervals:
                expires = datetime.fromisoformat(headers["expires"]).timestamp()
                at = expires - intervals[headers["task"]]
                if at >= since:
                    found.append((headers["task"], at, raw))
    return found


def gaps(times: list[float]) -> list[float]:
    return [round(later - earlier, 2) for earlier, later in zip(times, times[1:], strict=False)]


def test_one_beat_sends_and_a_standby_takes_over_when_it_is_killed(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    started = time.time()
    beats = [Beat("first", tmp_path, redis_url)]
    try:
        wait_until(lambda: beats[0].state() == "active", timeout=30, what="the first beat")
        beats.append(Beat("second", tmp_path, redis_url))
        wait_until(lambda: beats[1].state() == "standby", timeout=30, what="a standby")
        time.sleep(3 * RECONCILE)  # both running
        assert beats[1].sends() == 0, beats[1].log()
        assert beats[0].state() == "active"

        os.kill(beats[0].process.pid, signal.SIGKILL)
        killed = time.time()
        beats[0].process.wait(timeout=10)
        wait_until(lambda: beats[1].state() == "active", timeout=2 * RECONCILE, what="takeover")
        time.sleep(3 * RECONCILE)
        ended = time.time()
        log = beats[1].log()
    finally:
        for beat in beats:
            stop_process(beat.process)

    messages = queued(client, started)
    for task, _at, raw in messages:  # no later test's worker is to receive them
        client.lrem(QUEUES[task], 0, raw)
    reconciles = sorted(at for task, at, _raw in messages if task == "registries.reconcile")
    before = [at for at in reconciles if at < killed]
    after = [at for at in reconciles if at >= killed]
    context = f"sent at {gaps(reconciles)} s apart, killed {killed - started:.1f} s in\n{log}"
    # Once per interval with two beats running, and after the takeover: never twice, none missed.
    assert len(before) >= 3, context
    assert all(abs(gap - RECONCILE) <= SLACK for gap in gaps(before)), context
    assert all(abs(gap - RECONCILE) <= SLACK for gap in gaps(after)), context
    # The standby's first send within two intervals of the kill; the interval across it not
    # sent twice.
    assert after, context
    assert after[0] - killed <= 2 * RECONCILE, context
    assert after[0] - before[-1] >= RECONCILE - SLACK, context
    assert ended - after[-1] <= RECONCILE + SLACK, context
    # The canaries too: no interval sent twice, and the standby sends them.
    canaries = sorted(at for task, at, _raw in messages if task == "registries.canaries")
    assert all(gap >= CANARIES - SLACK for gap in gaps(canaries)), gaps(canaries)
    assert any(at >= killed for at in canaries), canaries


def _scheduler(redis_url: str, schedule: dict[str, float]) -> LeaderScheduler:
    """A beat's scheduler in this process, on an app of its own with ``schedule`` as settings."""
    app = Celery("beat-sync", set_as_current=False)
    app.conf.update(
        broker_url="memory://",  # what it sends goes nowhere
        redbeat_redis_url=redis_url,
        redbeat_key_prefix=KEY_PREFIX,
        redbeat_lock_timeout=5,
        redbeat_redis_options={},
        beat_schedule={
            name: {"task": f"tests.{name}", "schedule": interval}
            for name, interval in schedule.items()
        },
    )
    return LeaderScheduler(app)


def test_the_active_beat_writes_the_settings_schedule_and_a_standby_leaves_it(
    redis_url: str, settings, tmp_path: Path
) -> None:
    """A changed interval takes effect, and an entry removed from the settings stops, once the
    beat that takes the lock runs the new settings; last run times are kept."""
    settings.PROBE_HEARTBEAT_DIR = str(tmp_path)
    first = _scheduler(redis_url, {"kept": 60.0, "removed": 60.0})
    first.tick()  # takes the lock, writes the schedule, sends both
    app = first.app
    kept = RedBeatSchedulerEntry.from_key(f"{KEY_PREFIX}kept", app=app)
    assert heartbeat_state(BEAT) == "active"

    changed = _scheduler(redis_url, {"kept": 120.0})
    changed.tick()  # the lock is held: a standby, which writes nothing
    assert heartbeat_state(BEAT) == "standby"
    assert RedBeatSchedulerEntry.from_key(f"{KEY_PREFIX}removed", app=app).schedule.seconds == 60
    first.close()  # a clean stop lets go of the lock
    changed.tick()
    try:
        assert heartbeat_state(BEAT) == "active"
        entry = RedBeatSchedulerEntry.from_key(f"{KEY_PREFIX}kept", app=app)
        assert (entry.schedule.seconds, entry.last_run_at) == (120, kept.last_run_at)
        with pytest.raises(KeyError):
            RedBeatSchedulerEntry.from_key(f"{KEY_PREFIX}removed", app=app)
    finally:
        changed.close()


def test_a_beat_that_lost_its_lock_stands_by_then_takes_it_and_writes_the_schedule_again(
    redis_url: str, settings, tmp_path: Path
) -> None:
    """As after a Redis restart without persistence: the lock and the schedule are gone."""
    settings.PROBE_HEARTBEAT_DIR = str(tmp_path)
    scheduler = _scheduler(redis_url, {"kept": 60.0})
    scheduler.tick()
    _clear(redis.Redis.from_url(redis_url))
    try:
        assert scheduler.tick() == 0  # found the lock gone: stands by, and tries again at once
        assert heartbeat_state(BEAT) == "standby"
        scheduler.tick()
        assert heartbeat_state(BEAT) == "active"
        assert RedBeatSchedulerEntry.from_key(f"{KEY_PREFIX}kept", app=scheduler.app)
    finally:
        scheduler.close()


def test_a_beat_without_redis_stays_up_and_alive(settings, tmp_path: Path) -> None:
    """A Redis outage costs ticks, not the process (RedBeat's own scheduler would end it)."""
    settings.PROBE_HEARTBEAT_DIR = str(tmp_path)
    scheduler = _scheduler(f"redis://127.0.0.1:{free_port()}/0", {"kept": 60.0})

    assert scheduler.tick() == RETRY_SECONDS
    assert heartbeat_state(BEAT) == "standby"
    scheduler.close()
