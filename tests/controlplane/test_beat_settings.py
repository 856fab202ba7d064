"""Which scheduler beat runs: RedBeat's (an active beat, standbys) on Redis, Celery's schedule
file on the embedded default's filesystem broker (controlplane/beat_settings.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from controlplane.beat_settings import (
    FILE_SCHEDULER,
    REDIS_SCHEDULER,
    beat_settings,
    check_beat_settings,
    takeover_seconds,
)


@pytest.mark.parametrize(
    "broker_url", ["redis://127.0.0.1:6379/0", "rediss://:secret@redis.example:6380/1"]
)
def test_redis_runs_redbeat_on_the_brokers_redis(broker_url: str) -> None:
    found = beat_settings(broker_url)

    assert found["CELERY_BEAT_SCHEDULER"] == REDIS_SCHEDULER
    assert found["CELERY_REDBEAT_REDIS_URL"] == broker_url
    assert (found["CELERY_BEAT_MAX_LOOP_INTERVAL"], found["CELERY_REDBEAT_LOCK_TIMEOUT"]) == (5, 25)


@pytest.mark.parametrize("broker_url", ["filesystem://localhost//", "memory://"])
def test_without_redis_beat_keeps_its_schedule_file(broker_url: str) -> None:
    assert beat_settings(broker_url) == {"CELERY_BEAT_SCHEDULER": FILE_SCHEDULER}


def test_the_lock_and_loop_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CELERY_BEAT_LOOP_SECONDS", "0.5")
    monkeypatch.setenv("CELERY_BEAT_LOCK_TIMEOUT_SECONDS", "2")

    found = beat_settings("redis://127.0.0.1:6379/0")

    assert found["CELERY_BEAT_MAX_LOOP_INTERVAL"] == 0.5
    assert found["CELERY_REDBEAT_LOCK_TIMEOUT"] == 2


def test_a_lock_that_would_lapse_between_renewals_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CELERY_BEAT_LOCK_TIMEOUT_SECONDS", "5")

    with pytest.raises(ImproperlyConfigured, match="must exceed CELERY_BEAT_LOOP_SECONDS"):
        beat_settings("redis://127.0.0.1:6379/0")


def test_the_settings_follow_the_broker() -> None:
    expected = REDIS_SCHEDULER if settings.CELERY_BROKER_URL.startswith("redis") else FILE_SCHEDULER
    assert expected == settings.CELERY_BEAT_SCHEDULER


def _configured(*, reconcile: float, loop: float = 5.0, lock_timeout: int = 25) -> SimpleNamespace:
    return SimpleNamespace(
        CELERY_BEAT_SCHEDULER=REDIS_SCHEDULER,
        CELERY_BEAT_MAX_LOOP_INTERVAL=loop,
        CELERY_REDBEAT_LOCK_TIMEOUT=lock_timeout,
        CELERY_BEAT_SCHEDULE={
            "registries.reconcile": {"schedule": reconcile},
            "registries.canaries": {"schedule": 60.0},
        },
    )


def test_the_defaults_replace_a_killed_beat_within_one_reconcile_interval() -> None:
    """Takeover <= 30 s after the kill; with the send just before it, at most 30 + 30 s between
    two passes: two intervals (docs/reliability.md)."""
    assert takeover_seconds(5.0, 25) == settings.REGISTRY_RECONCILE_INTERVAL_SECONDS == 30
    assert check_beat_settings(None, settings=_configured(reconcile=30.0)) == []


def test_a_shorter_interval_without_a_shorter_lock_is_warned_of() -> None:
    warnings = check_beat_settings(None, settings=_configured(reconcile=10.0))

    assert [w.id for w in warnings] == ["controlplane.W001"]
    assert "up to 30 s after the active one dies" in warnings[0].msg
    assert check_beat_settings(None, settings=_configured(reconcile=10.0, lock_timeout=10)) == []


def test_the_file_scheduler_is_not_checked() -> None:
    configured = _configured(reconcile=1.0)
    configured.CELERY_BEAT_SCHEDULER = FILE_SCHEDULER

    assert check_beat_settings(None, settings=configured) == []
