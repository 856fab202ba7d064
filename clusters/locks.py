"""Row locks of the clusters app, taken in ONE order by every transaction.

The order, outermost first (``LOCK_ORDER``):

1. the organization (``organization_lock``): a webhook event or a new webhook secret;
2. the cluster (``cluster_lock``): creating, deleting or changing its queues, deleting it;
3. the queue (``queue_lock_or_raise``): changing or pausing it;
4. rows of other apps that belong to the cluster: the registries app's ``Registry`` (its
   ``locks.registry_lock_with_cluster`` takes the cluster here first);
5. the cluster's agent environment variable (``agent_environment_variable_upsert``).

A transaction may skip a level but never goes back up: two transactions that take locks in
different orders can each wait for the other, and PostgreSQL then aborts one of them. The order
is not arbitrary. Provisioning a registry writes the cluster's agent environment while it holds
the registry row, and inserting or updating an agent environment variable takes a lock on its
cluster row (PostgreSQL's foreign key check, ``FOR KEY SHARE``). A cluster deletion holds the
cluster row and then reaches the registry (its ``cluster_deleted`` receiver). So the cluster row
comes before the registry, and the environment variable after both; provisioning that locked the
registry first deadlocked with a concurrent deletion (see docs/architecture.md, "Lock order",
and ``tests/registries/test_concurrency.py``). The webhook applies an organization's events one
at a time under its organization row, and then creates and deletes clusters and queues: so the
organization comes first.

Callers never write ``select_for_update`` themselves: they call these, so that every lock of
the app is here, next to the order it must follow. Each lock reads its one row without the
model's ordering: ordering a cluster by its organization's slug joined the organization, and
``FOR UPDATE`` then locked the organization row too (every provisioning of an organization
waited for the others). The hot ones are compiled once (``controlplane.compiled``).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.db.transaction import TransactionManagementError

from clusters.models import AgentEnvironmentVariable, Cluster, Organization, Queue
from controlplane.compiled import CompiledSelect

#: The rows a transaction may lock, outermost first (``app_label.Model``).
LOCK_ORDER = (
    "clusters.Organization",
    "clusters.Cluster",
    "clusters.Queue",
    "registries.Registry",
    "clusters.AgentEnvironmentVariable",
)

Pk = uuid.UUID | str


def organization_lock(pk: int) -> Organization | None:
    """Lock the organization row (first in the order); None if there is none."""
    return Organization.objects.select_for_update().filter(pk=pk).first()


_cluster_lock = CompiledSelect(
    Cluster, lambda pk: Cluster.objects.select_for_update().filter(pk=pk).order_by()[:1], "id"
)


def cluster_lock(pk: Pk) -> Cluster | None:
    """Lock the cluster row (after its organization); None if it is gone."""
    found = _cluster_lock(pk)
    return found[0] if found else None


def cluster_lock_or_raise(pk: Pk) -> Cluster:
    """Lock the cluster row; raises ``Cluster.DoesNotExist`` if it is gone (the API answers
    404: it was deleted by another request meanwhile)."""
    return Cluster.objects.select_for_update().get(pk=pk)


def queue_lock_or_raise(pk: Pk) -> Queue:
    """Lock the queue row (after its cluster, if the transaction takes that too); raises
    ``Queue.DoesNotExist`` if it is gone (the API answers 404)."""
    return Queue.objects.select_for_update().get(pk=pk)


#: The variable's upsert, per database alias: its SQL, the columns it returns and their
#: converters (the ORM's, as ``QuerySet`` applies them).
_variable_upserts: dict[str, tuple[str, list[str], list[tuple[int, list[Any], Any]]]] = {}

#: The columns the upsert inserts, by field name.
_UPSERT_FIELDS: dict[str, Field[Any, Any]] = {
    name: cast("Field[Any, Any]", AgentEnvironmentVariable._meta.get_field(name))
    for name in ("cluster", "name", "value", "source", "created_at", "updated_at")
}


def _variable_upsert_sql(
    connection: BaseDatabaseWrapper,
) -> tuple[str, list[str], list[tuple[int, list[Any], Any]]]:
    compiled = _variable_upserts.get(connection.alias)
    if compiled is not None:
        return compiled
    meta, quote = AgentEnvironmentVariable._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    column = {name: quote(str(field.column)) for name, field in _UPSERT_FIELDS.items()}
    value, source, updated_at = column["value"], column["source"], column["updated_at"]
    returned = list(meta.concrete_fields)
    # Names from the model's own metadata, quoted; every value a parameter.
    sql = (
        f"INSERT INTO {table} ({', '.join(column.values())}) "  # noqa: S608 - names from the model
        f"VALUES ({', '.join(['%s'] * len(column))}) "
        f"ON CONFLICT ({column['cluster']}, {column['name']}) DO UPDATE SET "
        f"{value} = CASE WHEN {table}.{source} = EXCLUDED.{source} "
        f"THEN EXCLUDED.{value} ELSE {table}.{value} END, "
        f"{updated_at} = CASE WHEN {table}.{source} = EXCLUDED.{source} "
        f"AND {table}.{value} <> EXCLUDED.{value} "
        f"THEN EXCLUDED.{updated_at} ELSE {table}.{updated_at} END "
        f"RETURNING {', '.join(quote(str(field.column)) for field in returned)}"
    )
    converters = []
    for position, field in enumerate(returned):
        column_expression = field.get_col(str(meta.db_table))
        functions = connection.ops.get_db_converters(column_expression) + field.get_db_converters(
            connection
        )
        if functions:
            converters.append((position, functions, column_expression))
    compiled = (sql, [field.attname for field in returned], converters)
    _variable_upserts[connection.alias] = compiled
    return compiled


def agent_environment_variable_upsert(
    *, cluster: Cluster, name: str, value: str, source: str
) -> tuple[AgentEnvironmentVariable, bool, bool]:
    """Lock the cluster's variable ``name`` (last in the order) in one statement, ``INSERT ...
    ON CONFLICT DO UPDATE ... RETURNING``: created with ``value`` if there is none, its value
    replaced if ``source`` owns it and it differs, left as it is otherwise (another source's: the
    caller refuses it). A concurrent insert is no error, so no savepoint is needed. Returns the
    row as it now is, whether it was created and whether its value changed. No ``post_save`` is
    sent: the caller announces what changed."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.get_autocommit():  # as a lock: it holds the row until the transaction ends
        raise TransactionManagementError("The variable's upsert locks it: run it in a transaction.")
    sql, attnames, converters = _variable_upsert_sql(connection)
    new = AgentEnvironmentVariable(cluster=cluster, name=name, value=value, source=source)
    params = [
        field.get_db_prep_save(getattr(new, field.attname), connection)
        for field in _UPSERT_FIELDS.values()
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = list(cursor.fetchone())
    for position, functions, expression in converters:
        for function in functions:
            row[position] = function(row[position], expression, connection)
    variable = AgentEnvironmentVariable.from_db(DEFAULT_DB_ALIAS, attnames, row)
    # Ours if it is what was inserted: its creation time is of this call, to the microsecond;
    # changed if its update time is.
    created = (variable.created_at, variable.source, variable.value) == (
        new.created_at,
        new.source,
        new.value,
    )
    changed = not created and variable.updated_at == new.updated_at
    return variable, created, changed
