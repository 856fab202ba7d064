"""A prefork worker keeps its PostgreSQL connection from one task to the next
(``controlplane.celery.WorkerFixup``: Celery's own fixup closed a prefork child's connection pool
after every task), and a connection PostgreSQL dropped meanwhile is replaced, not a failed task.
Read from PostgreSQL's side: ``pg_stat_activity``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from controlplane.celery import app
from registries.models import Registry, State
from tests.registries.factories import RegistryFactory
from tests.support.processes import CeleryWorker, wait_until

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def prefork_worker(workdir: Path, broker_queue, registry_process) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(
        workdir,
        pool="prefork",
        REGISTRY_URL=registry_process.url,
        REGISTRY_PUBLIC_HOST=registry_process.host,
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def others() -> set[tuple[int, object]]:
    """(pid, backend_start) of every other connection to the tests' database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return set(cursor.fetchall())


def provision(worker: CeleryWorker) -> None:
    """One task on the worker: a registry provisioned, until it is ready."""
    registry = RegistryFactory()
    app.tasks["registries.provision"].delay(str(registry.pk))
    wait_until(
        lambda: Registry.objects.get(pk=registry.pk).state == State.READY,
        what="the worker to provision the registry",
        failure=lambda reason: f"{reason}\n{worker.log()[-3000:]}",
    )


def test_a_prefork_worker_keeps_its_connection_from_task_to_task(prefork_worker) -> None:
    provision(prefork_worker)
    after_one = others()

    provision(prefork_worker)
    provision(prefork_worker)

    assert after_one  # the child's connection stays open between tasks
    assert others() == after_one  # and is the one the next tasks used


def test_a_connection_postgresql_dropped_is_replaced_before_the_next_task(prefork_worker) -> None:
    provision(prefork_worker)
    dropped = others()
    with connection.cursor() as cursor:
        for pid, _ in dropped:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    provision(prefork_worker)

    assert others().isdisjoint(dropped)
    assert "Task registries.provision" in prefork_worker.log()
    assert "OperationalError" not in prefork_worker.log()
