"""/healthz and /readyz: answered before host checks and SSL redirects, each readiness check named,
503 when one fails, fast when one hangs."""

from __future__ import annotations

import time

import pytest
import requests
from kombu import Connection

from controlplane import health
from registries.key_store import key_store
from registries.models import TokenSigningKey
from tests.support.processes import closed_url

CHECKS = {"database", "broker", "signing_key", "registry"}


@pytest.fixture
def registry_answers(monkeypatch) -> None:
    """No registry in the fast tests: its check passes (the live server test has a real one)."""
    monkeypatch.setitem(health._checks, "registry", lambda: None)


def test_healthz_answers_without_any_dependency(client, monkeypatch) -> None:
    monkeypatch.setattr(health, "_checks", {"database": _fails})

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_probes_pass_host_checks_and_ssl_redirects(client, settings) -> None:
    """Kubernetes probes send the pod's address as Host, over plain HTTP."""
    settings.ALLOWED_HOSTS = ["api.example.com"]
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/v2/access-token", HTTP_HOST="10.1.2.3:8000").status_code == 400


@pytest.mark.django_db
def test_readyz_names_every_check_and_answers_200_when_all_pass(client, registry_answers) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    assert all(check["ok"] is True and check["ms"] >= 0 for check in body["checks"].values())


@pytest.mark.django_db
def test_readyz_is_503_when_the_registry_does_not_answer(client, settings) -> None:
    settings.REGISTRY_URL = closed_url()

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert body["checks"]["registry"] == {
        "ok": False,
        "error": "BackendsUnavailable",
        "parts": {"default": "ConnectionError"},
        "ms": body["checks"]["registry"]["ms"],
    }
    assert body["checks"]["database"]["ok"] is True


def test_readyz_is_503_without_a_signing_key(
    client, settings, tmp_path, registry_answers, transactional_db
) -> None:
    # Committed: the checks run on threads of their own (the session's keys come back after).
    TokenSigningKey.objects.all().delete()
    key_store().forget()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["signing_key"]["error"] == "SigningKeyMissing"
    # The body names the failure's kind; the command to run is in the log only.
    assert "registry_keys" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_does_not_answer(
    client, monkeypatch, registry_answers
) -> None:
    from controlplane.celery import app

    down = closed_url("redis")
    monkeypatch.setattr(app, "connection_for_write", lambda: Connection(down, connect_timeout=1))

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_a_check_that_hangs_fails_after_the_timeout(client, settings, monkeypatch) -> None:
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
    monkeypatch.setitem(health._checks, "registry", lambda: time.sleep(5))

    started = time.monotonic()
    response = client.get("/readyz")

    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["checks"]["registry"]["error"] == "timeout"
    assert response.json()["checks"]["database"]["ok"] is True


def test_a_failing_check_is_503_with_its_name(client, monkeypatch) -> None:
    monkeypatch.setattr(health, "_checks", {"ok": lambda: None, "broken": _fails})

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broken"]["error"] == "RuntimeError"
    assert response.json()["checks"]["ok"]["ok"] is True


def test_probes_take_get_and_head_only(client) -> None:
    assert client.head("/healthz").status_code == 200
    assert client.head("/healthz").content == b""
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_probes_answer_over_http(live_server, registry_settings) -> None:
    """Against the live server and the session's real registry: every check passes."""
    assert requests.get(f"{live_server.url}/healthz", timeout=5).json() == {"status": "ok"}

    response = requests.get(f"{live_server.url}/readyz", timeout=5)

    assert response.status_code == 200, response.text
    assert set(response.json()["checks"]) == CHECKS


def _fails() -> None:
    raise RuntimeError("down at 10.0.0.5")
