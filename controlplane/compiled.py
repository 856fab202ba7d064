"""Statements the ORM compiles once per database and runs again with other values.

A hot path that runs the same small query for every task (a row lock by primary key, say)
spends most of its CPU in Django compiling it again each time (``QuerySet`` cloning, lookups,
``SQLCompiler.as_sql``), not in the database: about 0.5 ms of a 0.6 ms lock on this machine.
``CompiledSelect`` keeps what the ORM compiled the first time (the SQL, its column converters,
the model fields its columns fill) per database alias, and later runs only the SQL with the new
values and builds the instances as ``QuerySet`` does (``Model.from_db``). The SQL is the ORM's
own, for the backend it runs on (``FOR UPDATE`` where it has it, nothing on SQLite).

What it takes: a function from the values to a ``QuerySet`` of one model, with no
``select_related``, annotations or ``extra``, whose compiled parameters are exactly those values
(in that order), prepared as the named fields prepare them. A query that does not fit is never
kept: it is run by the ORM every time, so a wrong fit costs speed, not correctness. Like
``QuerySet``, a locking query refuses to run outside a transaction.

``save_fields`` does the same for ``save(update_fields=...)``: its ``UPDATE`` is kept per model,
fields and database, with the signals and checks ``save()`` has; ``insert_rows`` for
``bulk_create`` of new rows (an attempt's events), its ``INSERT`` kept per model, row count and
database; ``insert_row_ignoring_conflicts`` for ``bulk_create([row], ignore_conflicts=True)`` that
also says whether the row went in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
)
from django.db.models import Field, Model, QuerySet
from django.db.models.base import ModelState
from django.db.models.constants import OnConflict
from django.db.models.signals import post_init, post_save, pre_init, pre_save
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)
T = TypeVar("T")


def fast_init(model: type[Model]) -> bool:
    """Whether an instance of ``model`` may be built without ``Model.__init__``: nothing of the
    model's own, and no receiver, would run in it."""
    return (
        model.__init__ is Model.__init__
        and model.from_db.__func__ is Model.from_db.__func__  # type: ignore[attr-defined]
        and not pre_init.has_listeners(model)
        and not post_init.has_listeners(model)
    )


def from_db(model: type[M], using: str | None, attnames: Sequence[str], values: Sequence[Any]) -> M:
    """``model.from_db(using, attnames, values)``; for a row of every concrete field of a
    model that ``fast_init`` allows, its ``__dict__`` filled at once (what ``Model.__init__``
    sets for positional values: ~20 µs less an instance with its two signals' dispatch)."""
    if len(attnames) != len(model._meta.concrete_fields) or not fast_init(model):
        return model.from_db(using, list(attnames), list(values))
    instance = model.__new__(model)
    instance.__dict__.update(zip(attnames, values, strict=True))
    state = instance._state = ModelState()
    state.adding, state.db = False, using
    return instance


def read_without_ping(using: str, read: Callable[[], T]) -> T:
    """``read()``, a read-only query in autocommit, without the ``CONN_HEALTH_CHECKS`` ping
    (``SELECT 1``) Django sends before a request's first query on a kept connection: the read
    itself is the check. Where it fails because the connection broke meanwhile (PostgreSQL
    restarted, an idle connection cut), the connection is closed and ``read()`` runs once more
    on a new one, as the ping would have had it: the same answer, one round trip fewer on every
    other request. In a transaction, or once the check was done, ``read()`` as it is."""
    connection: Any = connections[using]  # django-stubs lack the health check's attributes
    if (
        connection.connection is None
        or connection.in_atomic_block
        or not connection.health_check_enabled
        or connection.health_check_done
    ):
        return read()
    connection.health_check_done = True
    try:
        return read()
    except (OperationalError, InterfaceError):
        if connection.is_usable():  # the query's own error, not the connection's
            raise
        connection.close()
    return read()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    attnames: list[str]
    converters: dict[int, Any]
    locks: bool


class CompiledQuery(Generic[M]):
    """What a query compiled once keeps (``CompiledSelect`` here, ``CompiledPage`` in
    ``controlplane.api.pages``): how to build it, the fields its values are prepared as, and per
    database alias what was compiled (None: it does not fit, and the ORM runs it every time)."""

    def __init__(
        self, model: type[M], build: Callable[..., QuerySet[M]], *fields: str | Field[Any, Any]
    ) -> None:
        self.model = model
        self.build = build
        #: The field each value is prepared as (``Field.get_db_prep_value``), in order: a name
        #: of the model's, or another model's field (a filter across a relation).
        self.fields = [
            field
            if isinstance(field, Field)
            else cast("Field[Any, Any]", model._meta.get_field(field))
            for field in fields
        ]
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def prepared(self, values: tuple[Any, ...], connection: Any) -> list[Any]:
        """``values`` as the database takes them, each prepared as its field prepares it."""
        return [
            field.get_db_prep_value(value, connection)
            for field, value in zip(self.fields, values, strict=True)
        ]


class CompiledSelect(CompiledQuery[M]):
    """``build(*values)``'s rows, compiled by the ORM once per database (see the module)."""

    def __call__(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> list[M]:
        connection = connections[using]
        if using not in self._compiled:
            return self._compile(values, using)
        compiled = self._compiled[using]
        if compiled is None:  # does not fit: the ORM every time
            return list(self.build(*values).using(using))
        if compiled.locks and connection.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = self.prepared(values, connection)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        model, converters = self.model, compiled.converters.items()
        instances = []
        for row in rows:
            if converters:  # as SQLCompiler.apply_converters
                row = list(row)
                for position, (functions, expression) in converters:
                    value = row[position]
                    for function in functions:
                        value = function(value, expression, connection)
                    row[position] = value
            instances.append(from_db(model, using, compiled.attnames, row))
        return instances

    def _compile(self, values: tuple[Any, ...], using: str) -> list[M]:
        """Run the query by the ORM (its own checks and all), keeping what it compiled if the
        query fits."""
        connection = connections[using]
        queryset = self.build(*values).using(using)
        query = queryset.query
        compiled: _Compiled | None = None
        if (
            queryset.model is self.model
            and not query.select_related
            and not query.annotation_select
            and not query.extra_select
            and not query.values_select
            and len(values) == len(self.fields)
        ):
            compiler = query.get_compiler(using)
            sql, params = compiler.as_sql()
            prepared = self.prepared(values, connection)
            info = compiler.klass_info or {}
            if (
                list(params) == prepared
                and info.get("model") is self.model
                and not info.get("related_klass_infos")
                and info.get("select_fields") == list(range(len(compiler.select)))
            ):
                expressions = [column[0] for column in compiler.select]
                compiled = _Compiled(
                    sql=sql,
                    attnames=[expression.target.attname for expression in expressions],
                    converters=compiler.get_converters(expressions),
                    # As the ORM: the check applies where FOR UPDATE exists (not on SQLite).
                    locks=query.select_for_update and connection.features.has_select_for_update,
                )
        with self._lock:
            self._compiled[using] = compiled
        return list(queryset)


#: ``save_fields``' UPDATEs: per model, field names and database alias, the SQL and its fields
#: (None: the model has its own ``save()`` or a field its own placeholder, so ``save()`` runs).
_Update = tuple[str, list["Field[Any, Any]"], "Field[Any, Any]"]
_updates: dict[tuple[type[Model], tuple[str, ...], str], _Update | None] = {}


def save_fields(instance: Model, fields: Iterable[str], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """``instance.save(update_fields=fields)``, its ``UPDATE`` compiled once per model, fields and
    database: the same ``pre_save`` and ``post_save`` signals (so the hot caches see it), the
    fields' own ``pre_save`` (``auto_now``), the same error when no row was updated. A model
    with its own ``save()``, a field with its own SQL placeholder or a value that is an
    expression goes through ``save()`` itself."""
    model, names = type(instance), tuple(sorted(fields))
    key = (model, names, using)
    if key not in _updates:
        _updates[key] = _compile_update(model, names, using)
    compiled = _updates[key]
    values = [getattr(instance, field.attname) for field in compiled[1]] if compiled else []
    if compiled is None or any(hasattr(value, "resolve_expression") for value in values):
        instance.save(update_fields=names, using=using)
        return
    sql, targets, pk = compiled
    update_fields = frozenset(names)
    pre_save.send(model, instance=instance, raw=False, using=using, update_fields=update_fields)
    connection = connections[using]
    params = [
        field.get_db_prep_save(field.pre_save(instance, False), connection) for field in targets
    ]
    params.append(pk.get_db_prep_value(instance.pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated = cursor.rowcount
    if not updated:
        raise DatabaseError("Save with update_fields did not affect any rows.")
    instance._state.adding, instance._state.db = False, using
    post_save.send(
        model,
        instance=instance,
        created=False,
        update_fields=update_fields,
        raw=False,
        using=using,
    )


def _compile_update(model: type[Model], names: tuple[str, ...], using: str) -> _Update | None:
    pk = model._meta.pk
    if model.save is not Model.save or pk is None:
        return None
    targets = [cast("Field[Any, Any]", model._meta.get_field(name)) for name in names]
    if any(
        not field.concrete or field.primary_key or hasattr(field, "get_placeholder")
        for field in targets
    ):
        return None
    quote = connections[using].ops.quote_name
    assignments = ", ".join(f"{quote(str(field.column))} = %s" for field in targets)
    sql = (
        f"UPDATE {quote(model._meta.db_table)} SET {assignments} "  # noqa: S608 - names from the model
        f"WHERE {quote(str(pk.column))} = %s"
    )
    return sql, targets, pk


#: ``insert_rows``' INSERTs: per model, row count and database alias, the SQL, the fields it
#: fills and the primary key it returns (None: the model does not fit, so ``bulk_create`` runs).
_Insert = tuple[str, list["Field[Any, Any]"], "Field[Any, Any]"]
_inserts: dict[tuple[type[Model], int, str], _Insert | None] = {}
#: ``insert_row_ignoring_conflicts``' INSERTs, per model and database alias (as ``_inserts``).
_inserts_ignoring_conflicts: dict[tuple[type[Model], str], _Insert | None] = {}


def insert_rows(instances: list[M], *, using: str = DEFAULT_DB_ALIAS) -> list[M]:
    """``Model.objects.bulk_create(instances)`` for new rows of one model whose primary key the
    database assigns, its ``INSERT ... RETURNING`` compiled once per model, row count and
    database: every field's ``pre_save`` (``auto_now_add``) and ``get_db_prep_save`` as the ORM
    applies them, the keys set on the instances, which are then saved (``_state``), and no
    signals, as ``bulk_create`` sends none.

    Why not ``bulk_create`` itself: for the two events of a provisioning attempt it compiled the
    same statement every time, about a quarter of the attempt's CPU. Anything that does not fit
    (a key already set, a related object not saved, an expression for a value, a field with its
    own placeholder or a database default, a model with parents) goes to ``bulk_create``."""
    if not instances:
        return instances
    model = type(instances[0])
    key = (model, len(instances), using)
    if key not in _inserts:
        _inserts[key] = _compile_insert(model, len(instances), using)
    compiled = _inserts[key]
    if compiled is None or any(
        type(instance) is not model or instance.pk is not None for instance in instances
    ):
        return model._default_manager.using(using).bulk_create(instances)
    sql, targets, pk = compiled
    connection = connections[using]
    params: list[Any] = []
    for instance in instances:
        values = _insert_values(instance, targets)
        if values is None:
            return model._default_manager.using(using).bulk_create(instances)
        params += [
            field.get_db_prep_save(value, connection)
            for field, value in zip(targets, values, strict=True)
        ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        keys = [row[0] for row in cursor.fetchall()]
    column = pk.get_col(model._meta.db_table)
    converters = connection.ops.get_db_converters(column) + pk.get_db_converters(connection)
    for instance, value in zip(instances, keys, strict=True):
        for function in converters:
            value = function(value, column, connection)
        setattr(instance, pk.attname, value)
        instance._state.adding, instance._state.db = False, using
    return instances


def insert_row_ignoring_conflicts(instance: Model, *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """``Model.objects.bulk_create([instance], ignore_conflicts=True)`` for a new row whose key
    the instance already has (a ``uuid4`` default, say), and whether it was inserted: ``INSERT
    ... ON CONFLICT DO NOTHING RETURNING`` its key (``INSERT OR IGNORE`` on SQLite), compiled
    once per model and database, which returns the key only if the row went in. Fields are
    prepared as ``insert_rows`` prepares them; no signals, as ``bulk_create`` sends none.

    Why not ``bulk_create`` itself: with ``ignore_conflicts`` it returns nothing, so a caller
    that must know whether its row went in (or lost to a constraint) read it back, one more
    round trip (a new registry's, between its ``created_at`` and the commit that P3 times). A
    model or backend that does not fit goes to ``bulk_create`` and that read."""
    model = type(instance)
    if instance.pk is None:  # nothing would say whether it went in
        raise ValueError(f"{model.__name__}: insert_row_ignoring_conflicts needs the row's key.")
    key = (model, using)
    if key not in _inserts_ignoring_conflicts:
        _inserts_ignoring_conflicts[key] = _compile_insert(model, 1, using, ignore_conflicts=True)
    compiled = _inserts_ignoring_conflicts[key]
    values = None if compiled is None else _insert_values(instance, compiled[1])
    if compiled is None or values is None:
        model._default_manager.using(using).bulk_create([instance], ignore_conflicts=True)
        return model._default_manager.using(using).filter(pk=instance.pk).exists()
    sql, targets, _ = compiled
    connection = connections[using]
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(targets, values, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone() is not None
    if inserted:
        instance._state.adding, instance._state.db = False, using
    return inserted


def _insert_values(instance: Model, targets: list[Field[Any, Any]]) -> list[Any] | None:
    """The values of ``targets`` as the ORM inserts them (each field's ``pre_save``), or None
    if one is an expression (``bulk_create`` handles those)."""
    # As bulk_create: a related object must be saved first (the same error).
    instance._prepare_related_fields_for_save(  # type: ignore[attr-defined]
        operation_name="bulk_create"
    )
    values = [field.pre_save(instance, True) for field in targets]
    if any(hasattr(value, "resolve_expression") for value in values):
        return None
    return values


def _compile_insert(
    model: type[Model], rows: int, using: str, *, ignore_conflicts: bool = False
) -> _Insert | None:
    """The ``INSERT`` of ``rows`` new rows returning their keys: keys the database assigns, or
    (``ignore_conflicts``) the one row's own key, returned only if it was inserted."""
    meta, connection = model._meta, connections[using]
    pk, features = meta.pk, connection.features
    if pk is None or meta.parents:
        return None
    if ignore_conflicts:
        fits = (
            rows == 1
            and features.supports_ignore_conflicts
            and features.can_return_columns_from_insert
            and not meta.db_returning_fields  # nothing to read back but the key
        )
        targets = [field for field in meta.concrete_fields if not field.generated]
    else:
        fits = (
            features.can_return_rows_from_bulk_insert
            and [field.attname for field in meta.db_returning_fields] == [pk.attname]
            and pk.db_returning
        )
        targets = [
            field for field in meta.concrete_fields if field is not pk and not field.generated
        ]
    if not fits or any(
        hasattr(field, "get_placeholder") or field.has_db_default() for field in targets
    ):
        return None
    quote, ops = connection.ops.quote_name, connection.ops
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    suffix = ops.on_conflict_suffix_sql(targets, on_conflict, None, None)
    row = f"({', '.join(['%s'] * len(targets))})"
    sql = (
        f"{ops.insert_statement(on_conflict=on_conflict)} {quote(meta.db_table)} "
        f"({', '.join(quote(str(field.column)) for field in targets)}) "
        f"VALUES {', '.join([row] * rows)} {suffix + ' ' if suffix else ''}"
        f"RETURNING {quote(str(pk.column))}"
    )
    return sql, targets, pk
