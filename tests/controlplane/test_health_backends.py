"""/readyz with several registry backends (review finding 1): every backend is asked at once,
within the registry check's share of the timeout, so one that accepts and never answers is named
``timeout`` while a healthy one keeps the API ready; the backends' read closes its connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from django.db import connection

from registries.backends import backends_all, backends_forget
from registries.models import DEFAULT_BACKEND, RegistryBackend
from registries.services import readiness_registry
from registries.services.backends import backend_create


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A port on 127.0.0.1 that accepts connections and never answers on them."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def _backends(settings, answering_url: str, hung_url: str) -> None:
    settings.REGISTRY_URL = answering_url  # the default backend answers
    RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)
    backend_create(
        name="hung",
        api_url=hung_url,
        public_host="hung.registry.example",
        token_service="registry-hung",
        weight=100,
    )
    backends_forget()


@pytest.mark.django_db
def test_a_hung_backend_beside_a_healthy_one_leaves_readyz_ready_and_named(
    client, settings, answering_url, hung_url
) -> None:
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
    _backends(settings, answering_url, hung_url)
    backends_all()  # this process's copy, as a web process has it between reads

    response = client.get("/readyz")

    # ok: within the check's timeout (one past it is "timeout", whatever its parts did).
    registry = response.json()["checks"]["registry"]
    assert registry["ok"] is True, response.json()
    # At the budget: abandoned ("timeout"), or its own read timeout at the same moment.
    assert registry["parts"]["default"] == "ok"
    assert registry["parts"]["hung"] in ("timeout", "ReadTimeout")


@pytest.mark.django_db
def test_every_backend_that_answers_is_named_ok(client, settings, answering_url) -> None:
    settings.REGISTRY_URL = answering_url
    for name in ("one", "two"):
        backend_create(
            name=name,
            api_url=answering_url,
            public_host=f"{name}.registry.example",
            token_service=f"registry-{name}",
        )
    backends_forget()

    assert readiness_registry() == {"default": "ok", "one": "ok", "two": "ok"}


@pytest.mark.django_db(transaction=True)
def test_the_backends_read_on_a_readyz_thread_closes_its_connection(
    settings, answering_url
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's in-memory test database is never closed")
    settings.REGISTRY_URL = answering_url
    RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)
    backends_forget()  # the check reads the backends itself
    seen: dict[str, object] = {}

    def on_a_readyz_thread() -> None:
        seen["parts"] = readiness_registry()
        seen["open"] = connection.connection is not None

    thread = threading.Thread(target=on_a_readyz_thread)
    thread.start()
    thread.join()

    assert seen == {"parts": {"default": "ok"}, "open": False}
