from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management.color import no_style
from django.db import connection
from django.test import Client

from clusters import services
from clusters.audit import SYSTEM, act_as, actor_scope
from clusters.models import Queue
from registries.backends import backends_forget
from registries.drivers.distribution import recent_checks
from registries.key_files import key_folder
from registries.key_store import KeyStore, _Loaded, key_store
from registries.keys import SigningKeys, issue_ca, issue_signing_key
from registries.models import (
    DEFAULT_BACKEND,
    RegistryBackend,
    TokenSigningAuthority,
    TokenSigningKey,
)
from registries.services.signing_keys import init_keys
from tests.clusters.factories import QueueFactory
from tests.support import broker, integration
from tests.support.http import stand_in_server
from tests.support.processes import CeleryWorker, RegistryProcess

STRICT = os.environ.get("CONTROLPLANE_TEST_STRICT") == "1"


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    return [
        f"database: {settings.DATABASES['default']['ENGINE']}",
        f"broker: {settings.CELERY_BROKER_URL.split('@')[-1]}",
        f"cache: {settings.CACHES['default']['BACKEND']}",
        f"strict (no skips for missing components): {STRICT}",
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use a process-starting fixture ``integration``; first, so that
    ``-m "not integration"`` sees the marks (tests/support/integration.py)."""
    integration.mark_items(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with integration.guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Skip (or, when strict, fail) a PostgreSQL-only test on another database; refuse processes
    to an unmarked test while its fixtures are set up."""
    if item.get_closest_marker("postgresql") and connection.vendor != "postgresql":
        message = "needs PostgreSQL: set DATABASE_URL=postgres://... (CI does)"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    with integration.guard(item):
        return (yield)


@pytest.fixture(autouse=True)
def _audit_actor_afresh() -> Iterator[None]:
    """Each test starts as the system, whatever actor a view called without the middleware
    (``clusters.actors``) named in an earlier test."""
    with actor_scope():
        act_as(SYSTEM)
        yield


@pytest.fixture(autouse=True)
def _backends_read_afresh() -> Iterator[None]:
    """Each test reads the registry backends from its own database (``registries.backends``
    keeps a per-process copy, which a rolled-back or flushed test would leave behind)."""
    backends_forget()
    yield
    backends_forget()


@pytest.fixture
def default_backend(db) -> RegistryBackend:
    """The migration's default backend, made again if a transactional test flushed it."""
    return RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)[0]


@pytest.fixture
def answering_url() -> Iterator[str]:
    """A registry's ``GET /v2/`` on 127.0.0.1: 401, as without a token."""
    with stand_in_server() as answer:
        answer.status, answer.headers, answer.body = 401, {}, ""
        yield answer.url


@pytest.fixture
def broker_queue() -> Iterator[object]:
    """The real broker's default queue, emptied before and after the test.

    ``broker_queue.drain()`` returns the ``(task, args)`` of every message published since.
    """
    broker.drain()
    yield broker
    broker.drain()


@pytest.fixture
def operator(client: Client) -> Client:
    """The test client, logged in to the console as the superuser ``operator``."""
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


@pytest.fixture
def start_worker(workdir: Path, broker_queue) -> Iterator[Callable[..., CeleryWorker]]:
    """``start_worker(**environment)`` starts a Celery worker process on the tests' database and
    broker (``environment`` on top); every worker it started is stopped at teardown."""
    workers: list[CeleryWorker] = []

    def start(**environment: str) -> CeleryWorker:
        worker = CeleryWorker(workdir, **environment).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session", autouse=True)
def metrics_files() -> None:
    """The metrics files of earlier runs go (PROMETHEUS_MULTIPROC_DIR, the tests' own): tests
    compare scrapes, but every file is read by every scrape."""
    for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        path.unlink()


@pytest.fixture(autouse=True)
def registry_checks_forgotten() -> None:
    """Every test starts with no registry check remembered (``recent_checks``), so whether
    provisioning asks the registry never depends on the tests that ran before."""
    recent_checks.forget()


#: The key store's rows as the session created them, put back after a test that flushed the
#: database (``pytest_runtest_teardown``).
_session_keys: list[list[TokenSigningAuthority] | list[TokenSigningKey]] = []


def _frozen_clock() -> float:
    return 0.0


@pytest.fixture(scope="session", autouse=True)
def registry_keys(django_db_setup: None, django_db_blocker: Any) -> KeyStore:
    """The CA (in REGISTRY_KEYS_DIR, the tests' own) and a signing key in the test database,
    created once and kept there (outside any test's transaction). The store's clock stands
    still, so no test's query count depends on when the re-check bound passes; the tests of
    the bound move a clock of their own."""
    KeyStore.clock = staticmethod(_frozen_clock)
    store = key_store()
    name, test_name = connection.settings_dict["NAME"], connection.settings_dict["TEST"]["NAME"]
    if not (name == test_name if test_name else str(name).startswith("test_")):
        # No test of this session uses the database (pytest-django set none up): a key of this
        # process alone, for the tests that sign tokens without one.
        ca_key, ca_certificate = issue_ca()
        store._cached = _Loaded(SigningKeys(issue_signing_key(ca_key, ca_certificate)), math.inf)
        return store
    with django_db_blocker.unblock():
        init_keys(key_folder())
        _session_keys[:] = [
            list(TokenSigningAuthority.objects.all()),
            list(TokenSigningKey.objects.all()),
        ]
        store.forget()
        store.load()
    return store


@pytest.fixture(autouse=True)
def registry_keys_cache(registry_keys: KeyStore) -> Iterator[None]:
    """Every test starts with the session's keys loaded, whatever the one before rotated."""
    cached, unknown = registry_keys._cached, registry_keys._unknown_checked_at
    yield
    registry_keys._cached, registry_keys._unknown_checked_at = cached, unknown


@pytest.fixture
def no_signing_keys(db: None, registry_keys: KeyStore) -> None:
    """No signing key in the database (for this test's transaction), none in this process."""
    TokenSigningKey.objects.all().delete()
    registry_keys.forget()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a test on a flushed database (``transactional_db``, ``live_server``), the
    session's keys go back in, for the tests (and the processes they start) after it."""
    yield
    fixtures = getattr(item, "fixturenames", ())
    marker = item.get_closest_marker("django_db")
    if (
        (
            "transactional_db" in fixtures
            or "live_server" in fixtures
            or (marker is not None and marker.kwargs.get("transaction"))
        )
        and _session_keys
        and nextitem is not None
    ):  # after the last, the database is gone
        from pytest_django.plugin import blocking_manager_key

        with item.config.stash[blocking_manager_key].unblock():
            for rows in _session_keys:
                type(rows[0]).objects.bulk_create(rows, ignore_conflicts=True)  # type: ignore[arg-type]
            # The flush restarted the tables' sequences: move them past the rows put back, or
            # the next key a test inserts takes id 1 again.
            models = [type(rows[0]) for rows in _session_keys]
            with connection.cursor() as cursor:
                for statement in connection.ops.sequence_reset_sql(no_style(), models):
                    cursor.execute(statement)


@pytest.fixture(scope="session")
def registry_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One real Distribution registry for the session, on a free port."""
    registry = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield registry
    registry.stop()


#: Files skopeo and buildah write outside the test's folders, as root, with no flag to move them:
#: the blob-info cache (which also makes clients try cross-repository mounts) and a CNI lock.
CONTAINER_TOOL_LEFTOVERS = (
    Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    Path("/etc/cni/net.d/cni.lock"),
)


@pytest.fixture(scope="session")
def container_tools() -> Iterator[None]:
    """For tests that run skopeo or buildah: removes what they leave behind, if it is new."""
    existed = {path for path in CONTAINER_TOOL_LEFTOVERS if path.exists()}
    yield
    for path in CONTAINER_TOOL_LEFTOVERS:
        if path not in existed:
            path.unlink(missing_ok=True)


@pytest.fixture
def registry_settings(settings, registry_process: RegistryProcess):
    """Point the control plane at the session's registry."""
    settings.REGISTRY_URL = registry_process.url
    settings.REGISTRY_PUBLIC_HOST = registry_process.host
    return settings


REGISTRY_URL_FIXTURE = "127.0.0.1:5000/acme/0123456789ab"


@pytest.fixture
def hosted_queue() -> Queue:
    """A hosted queue ``linux-small`` of cluster "Open Source", whose registry URL is published."""
    queue = QueueFactory(key="linux-small", hosted=True, cluster__name="Open Source")
    services.agent_environment_set(
        cluster=queue.cluster,
        name="BUILDKITE_HOSTED_REGISTRY_URL",
        value=REGISTRY_URL_FIXTURE,
        source="registry",
    )
    return queue
