"""SELECTs the ORM compiles once per database and runs again with other values.

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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model, QuerySet
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    attnames: list[str]
    converters: dict[int, Any]
    locks: bool


class CompiledSelect(Generic[M]):
    """``build(*values)``'s rows, compiled by the ORM once per database (see the module)."""

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]], *fields: str) -> None:
        self.model = model
        self.build = build
        #: The field each value is prepared as (``Field.get_db_prep_value``), in order.
        self.fields = [cast("Field[Any, Any]", model._meta.get_field(name)) for name in fields]
        self._compiled: dict[str, _Compiled | None] = {}
        self._lock = threading.Lock()

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
        params = [
            field.get_db_prep_value(value, connection)
            for field, value in zip(self.fields, values, strict=True)
        ]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        from_db, converters = self.model.from_db, compiled.converters.items()
        instances = []
        for row in rows:
            if converters:  # as SQLCompiler.apply_converters
                row = list(row)
                for position, (functions, expression) in converters:
                    value = row[position]
                    for function in functions:
                        value = function(value, expression, connection)
                    row[position] = value
            instances.append(from_db(using, compiled.attnames, row))
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
            prepared = [
                field.get_db_prep_value(value, connection)
                for field, value in zip(self.fields, values, strict=True)
            ]
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
