"""Rows in bulk for the measures at scale (P4, P9, P10): copied in with PostgreSQL's ``COPY``
from one ORM instance per table and state, so that every field's default is the models' own."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bench.latency import HOSTED_SHAPE, QUEUE_KEY
from bench.measures import progress

if TYPE_CHECKING:
    from django.db.models import Model

    from clusters.models import Organization

#: Rows per bulk insert, and per organization, when seeding.
SEED_BATCH = 5_000


def new_organization(slug: str) -> Organization:
    from clusters.services import organization_get_or_create

    return organization_get_or_create(slug=slug)[0]


def bulk_copy(model: type[Model], template: Model, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert one row per item of ``rows`` into ``model``'s table with ``COPY``: every column as
    the ORM prepares ``template`` (its defaults included, whatever fields the model has at run
    time), but for the fields (attribute names) each item sets. Database-generated keys are left
    to the database. Returns the number of rows."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from psycopg import sql

    connection = connections[DEFAULT_DB_ALIAS]  # not the proxy: it is asked once per value
    fields = [field for field in model._meta.concrete_fields if not field.db_returning]
    base = [
        field.get_db_prep_save(field.pre_save(template, add=True), connection) for field in fields
    ]
    position = {field.attname: (index, field) for index, field in enumerate(fields)}
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table),
        sql.SQL(", ").join([sql.Identifier(str(field.column)) for field in fields]),
    )
    written = 0
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for changes in rows:
            row = list(base)
            for name, value in changes.items():
                index, field = position[name]
                row[index] = field.get_db_prep_save(value, connection)
            copy.write_row(row)
            written += 1
    return written


def seed_registries(counts: Mapping[str, int], *, prefix: str) -> list[uuid.UUID]:
    """Bulk-insert registries in the given states (``ready``, ``pending``, ``failed``,
    ``deleted``), each but the deleted with its cluster and a hosted queue, each ready one with
    its URL published; SEED_BATCH registries per organization. Returns their ids.

    Rows are copied from one model instance per table and state (:func:`bulk_copy`), so they
    carry the defaults of the fields the models have at run time. Pending ones are in flight
    (due in a day: the reconciler leaves them); failed ones failed for good (not transiently);
    deleted ones have no cluster, as a deleted cluster leaves them.
    """
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from clusters.models import AgentEnvironmentVariable, Cluster, Queue
    from registries.models import REGISTRY_URL_VARIABLE, Registry, State
    from registries.services.lifecycle import ENVIRONMENT_SOURCE

    now = timezone.now()
    host = settings.REGISTRY_PUBLIC_HOST
    ids: list[uuid.UUID] = []
    for state, count in counts.items():
        registry = Registry(namespace="-", driver=settings.REGISTRY_DRIVER, state=state)
        if state == State.READY:
            registry.url, registry.ready_at = "-", now
        elif state == State.PENDING:
            registry.next_attempt_at = now + timedelta(days=1)
        elif state == State.FAILED:
            registry.last_error = "seeded by the bench"
        elif state == State.DELETED:
            registry.deprovision_requested_at = now
        for start in range(0, count, SEED_BATCH):
            organization = new_organization(f"{prefix}-{secrets.token_hex(4)}")
            size = min(SEED_BATCH, count - start)
            batch = [(uuid.uuid4(), uuid.uuid4(), secrets.token_hex(6)) for _ in range(size)]
            cluster = Cluster(organization=organization, name="-")
            with transaction.atomic():
                if state != State.DELETED:
                    bulk_copy(
                        Cluster, cluster, ({"id": c, "name": f"c-{c.hex}"} for _, c, _ in batch)
                    )
                    bulk_copy(
                        Queue,
                        Queue(cluster=cluster, key=QUEUE_KEY, instance_shape=HOSTED_SHAPE),
                        ({"id": uuid.uuid4(), "cluster_id": c} for _, c, _ in batch),
                    )
                if state == State.READY:
                    bulk_copy(
                        AgentEnvironmentVariable,
                        AgentEnvironmentVariable(
                            cluster=cluster, name=REGISTRY_URL_VARIABLE, value="-",
                            source=ENVIRONMENT_SOURCE,
                        ),
                        (
                            {"cluster_id": c, "value": f"{host}/{organization.slug}/{n}"}
                            for _, c, n in batch
                        ),
                    )  # fmt: skip
                bulk_copy(
                    Registry,
                    registry,
                    (
                        {
                            "id": r,
                            "cluster_id": None if state == State.DELETED else c,
                            "namespace": f"{organization.slug}/{n}",
                            **({"url": f"{host}/{organization.slug}/{n}"} if registry.url else {}),
                        }
                        for r, c, n in batch
                    ),
                )
            ids += [r for r, _, _ in batch]
    return ids


def seed_to(
    total: int,
    counts: Callable[[int], Mapping[str, int]],
    *,
    prefix: str,
    counted: Callable[[], int] | None = None,
) -> int:
    """Top the registries up to ``total`` (``counted()`` of them, by default every row;
    ``counts(missing)`` says in which states), then ``ANALYZE``, as autovacuum would have; how
    many rows were added."""
    from django.db import connection

    from registries.models import Registry

    missing = total - (counted or Registry.objects.count)()
    if missing > 0:
        started = time.perf_counter()
        seed_registries(counts(missing), prefix=prefix)
        progress(f"seeded {missing:,} registries in {time.perf_counter() - started:.1f}s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return max(missing, 0)


def ready_only(missing: int) -> dict[str, int]:
    return {"ready": missing}


def realistic_mix(missing: int) -> dict[str, int]:
    """Mostly ready: 3 % deleted, 1 % failed, 0.5 % in flight, the rest ready."""
    deleted, failed, pending = missing * 3 // 100, missing // 100, missing // 200
    return {
        "deleted": deleted,
        "failed": failed,
        "pending": pending,
        "ready": missing - deleted - failed - pending,
    }
