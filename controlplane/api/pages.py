"""A list's pages, compiled by the ORM once and read as rows to render: ``CompiledPage``.

A page of 100 clusters took ~8 ms of CPU in-process, and most of it was not the database: the
ORM compiling the same query again on every request (``QuerySet`` cloning, ``select_related``,
the window, ``SQLCompiler.as_sql``), building two model instances a row through
``Model.__init__`` (and its signals), Django's PostgreSQL ``timestamptz`` loader (a Python
subclass of psycopg's: ~5 µs a value, against well under 1 µs for psycopg's C loader), and
``str(uuid)`` (~2 µs, in Python) for every UUID each field and link of a response formats.

``CompiledPage`` keeps what the ORM compiled the first time, per database alias: the SQL (the
ORM's own, with ``LIMIT``/``OFFSET`` as parameters), its column converters, and where each model
of the ``select_related`` tree reads its fields in a row. A page runs only that SQL and gives,
for each row, a ``RowView`` of the listed model: its fields by attribute name, as a serializer
reads an instance, with each UUID as its text (what a response shows; PostgreSQL sends it as
text, so it is never parsed), the model's own properties, ``pk``, and each ``select_related``
relation as a real model instance (one a distinct related row: a page of 100 queues names the
same few users) or None. The count of the whole list is carried on every row
(``COUNT(*) OVER ()``), so that a page and its total are one query.

A ``RowView`` is for rendering only: it is not a model instance (no ``save()``, no other
relations, UUIDs as text). The serializers render it as they render an instance (the same
bytes: ``tests/api/test_golden_responses.py``), so they stay the one source of the response
and its schema.

What it takes: a function from the values to a ``QuerySet`` (filters, ``select_related`` of
forward relations, ordering) whose compiled parameters are exactly those values, prepared as the
named fields prepare them: the tenant's scope is in those values, which the caller passes. A
query that does not fit (other parameters, annotations, ``extra``, deferred fields of the listed
model, a lock, a combinator) is never kept: the ORM runs it every time and its instances are
rendered instead, so a wrong fit costs speed, not correctness.

Related instances skip ``Model.__init__`` only where that changes nothing: a model with Django's
own ``__init__`` and ``from_db`` and no ``pre_init``/``post_init`` receivers; otherwise
``Model.from_db`` builds them. psycopg's C loader reads ``timestamptz`` only on a connection
whose time zone is UTC, where it gives the value Django's loader gives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Model, UUIDField, Window
from django.db.models.base import ModelState

from controlplane.compiled import CompiledQuery, fast_init, read_without_ping

M = TypeVar("M", bound=Model)

#: The annotation that carries the list's length on each row of a page.
TOTAL = "pagination_total"

Row = Sequence[Any]


class RowView:
    """One row of a page, read as a serializer reads an instance of the listed model (see the
    module): ``RowView.of(model)`` is the class of the model's rows."""

    _classes: dict[type[Model], type[RowView]] = {}
    #: The model's columns, what every row holds as plain values: by attribute name, the
    #: internal type of each (``Field.get_internal_type()``, the target's for a foreign key).
    columns: Mapping[str, str] = {}

    @classmethod
    def of(cls, model: type[Model]) -> type[RowView]:
        """The row class of ``model``: the model's own properties (``Queue.hosted``), which
        read the row's attributes as they read an instance's (each row holds ``pk`` too)."""
        found = cls._classes.get(model)
        if found is None:
            namespace: dict[str, Any] = {
                "columns": {
                    field.attname: getattr(field, "target_field", field).get_internal_type()
                    for field in model._meta.concrete_fields
                },
                "__repr__": lambda row: f"<{model.__name__} row {row.pk}>",
            }
            for klass in reversed(model.__mro__):
                if issubclass(klass, Model) and klass is not Model and not klass._meta.abstract:
                    namespace.update(
                        (name, value)
                        for name, value in vars(klass).items()
                        if isinstance(value, property) and name != "pk"
                    )
            found = cls._classes[model] = type(f"{model.__name__}Row", (cls,), namespace)
        return found


@dataclass(frozen=True)
class _Klass:
    """Where one model of the ``select_related`` tree reads its fields in a row."""

    model: type[Model]
    start: int
    end: int
    attnames: tuple[str, ...]
    uuids: tuple[int, ...]  # the positions of its UUID columns
    pk_index: int  # the primary key's column, within [start, end)
    name: str | None  # the relation's name on the model above (None for the listed model)
    related: tuple[_Klass, ...]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    converters: tuple[tuple[int, tuple[list[Any], Any]], ...]
    klass: _Klass
    total: int  # the count's column


class Fetched:
    """A page's rows as the database sent them (``rows``: what its items are rendered from,
    the key of their memoized JSON; None for a page the ORM read) and, built on the first call
    of ``views()``, what ``CompiledPage.__call__`` gives for them."""

    __slots__ = ("rows", "_plan", "_views")

    def __init__(
        self, rows: tuple[Row, ...] | None, views: list[Any] | tuple[_Klass, str, bool]
    ) -> None:
        self.rows = rows
        self._views: list[Any] | None = views if isinstance(views, list) else None
        self._plan = None if isinstance(views, list) else views

    def views(self) -> list[Any]:
        """The page's ``RowView``s (the ORM's instances for a query that does not fit)."""
        if self._views is None:
            klass, using, uuids_as_text = cast(tuple[_Klass, str, bool], self._plan)
            self._views = _rows(klass, list(cast(tuple[Row, ...], self.rows)), using, uuids_as_text)
        return self._views

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.views())


class CompiledPage(CompiledQuery[M]):
    """Pages of ``build(*values)``'s rows, compiled by the ORM once per database (see the
    module): ``page(*values, offset=, limit=)`` is the page's rows (``RowView``s; the ORM's
    instances for a query that does not fit) and the length of the whole list (None for an
    empty page, which has no row to carry it)."""

    def __call__(
        self, *values: Any, offset: int, limit: int, using: str = DEFAULT_DB_ALIAS
    ) -> tuple[list[Any], int | None]:
        fetched, total = self.fetch(*values, offset=offset, limit=limit, using=using)
        return fetched.views(), total

    def fetch(
        self, *values: Any, offset: int, limit: int, using: str = DEFAULT_DB_ALIAS
    ) -> tuple[Fetched, int | None]:
        """The page as ``__call__`` reads it, its ``RowView``s built only when asked for
        (``Fetched``): a page whose items' JSON is all memoized never builds them."""
        if using not in self._compiled:
            self._compile(values, using)
        compiled = self._compiled[using]
        if compiled is None:  # does not fit: the ORM every time
            page, total = self._orm_page(values, offset, limit, using)
            return Fetched(None, page), total
        connection = connections[using]
        params = self.prepared(values, connection)
        params += [limit, offset]

        def read() -> tuple[list[Any], bool]:
            with connection.cursor() as cursor:
                uuids_as_text = _fast_loaders(cursor, connection)
                cursor.execute(compiled.sql, params)
                return cursor.fetchall(), uuids_as_text

        # A page is often a request's only query: the query is the connection's check.
        rows, uuids_as_text = read_without_ping(using, read)
        if not rows:
            return Fetched((), []), None
        if compiled.converters:  # as SQLCompiler.apply_converters
            rows = [_converted(row, compiled.converters, connection) for row in rows]
        total = int(rows[0][compiled.total])
        return Fetched(tuple(rows), (compiled.klass, using, uuids_as_text)), total

    def count(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> int:
        """The length of the whole list (for a page past its end, which carries no count)."""
        return self.build(*values).using(using).count()

    def _orm_page(
        self, values: tuple[Any, ...], offset: int, limit: int, using: str
    ) -> tuple[list[Any], int | None]:
        counted = self.build(*values).using(using).annotate(**{TOTAL: Window(Count("*"))})
        page = list(counted[offset : offset + limit])
        return page, getattr(page[0], TOTAL) if page else None

    def _compile(self, values: tuple[Any, ...], using: str) -> None:
        """Keep what the ORM compiles for ``build(*values)`` if the query fits (see the
        module); None otherwise."""
        connection = connections[using]
        queryset = self.build(*values).using(using)
        query = queryset.annotate(**{TOTAL: Window(Count("*"))}).query
        compiled: _Compiled | None = None
        if (
            queryset.model is self.model
            and len(query.annotation_select) == 1
            and not query.extra_select
            and not query.values_select
            and not query.select_for_update
            and not query.combinator
            and not query.is_sliced
            and len(values) == len(self.fields)
        ):
            compiler = query.get_compiler(using)
            sql, params = compiler.as_sql(with_limits=False)
            prepared = self.prepared(values, connection)
            info = compiler.klass_info
            klass = _klass(info, None, compiler.select) if info else None
            if list(params) == prepared and klass is not None and klass.model is self.model:
                expressions = [column[0] for column in compiler.select]
                total = compiler.annotation_col_map[TOTAL]
                converters = compiler.get_converters(expressions)
                converters.pop(total, None)  # the count is read once, from the first row
                compiled = _Compiled(
                    sql=f"{sql} LIMIT %s OFFSET %s",
                    converters=tuple(converters.items()),
                    klass=klass,
                    total=total,
                )
        with self._lock:
            self._compiled[using] = compiled


def _klass(info: dict[str, Any], name: str | None, select: list[Any]) -> _Klass | None:
    """The read plan of one ``klass_info`` of the ORM's compiler (and its relations), from the
    compiler's ``select``; None for what the plan does not cover: a reverse relation, columns
    out of order, deferred fields of the listed model (a related model's may be deferred, as
    ``defer("created_by__password")`` does: its instances load them if read, as Django's do)."""
    model: type[Model] = info["model"]
    positions: list[int] = info["select_fields"]
    if not positions:
        return None
    start, end = positions[0], positions[-1] + 1
    if positions != list(range(start, end)):
        return None
    fields = [column[0].target for column in select[start:end]]
    pk = model._meta.pk
    if pk not in fields or (name is None and len(fields) != len(model._meta.concrete_fields)):
        return None
    related = []
    for child in info.get("related_klass_infos", []):
        if child.get("reverse") or child.get("from_parent"):
            return None
        planned = _klass(child, child["field"].name, select)
        if planned is None:
            return None
        related.append(planned)
    attnames = tuple(field.attname for field in fields)
    return _Klass(
        model=model,
        start=start,
        end=end,
        attnames=attnames,
        uuids=tuple(
            start + index
            for index, field in enumerate(fields)
            if isinstance(getattr(field, "target_field", field), UUIDField)
        ),
        pk_index=start + fields.index(pk),
        name=name,
        related=tuple(related),
    )


def _converted(
    row: Row, converters: tuple[tuple[int, tuple[list[Any], Any]], ...], connection: Any
) -> tuple[Any, ...]:
    values = list(row)
    for position, (functions, expression) in converters:
        value = values[position]
        for function in functions:
            value = function(value, expression, connection)
        values[position] = value
    return tuple(values)  # hashable: a key of the memo


def _rows(klass: _Klass, rows: list[Any], using: str, uuids_as_text: bool) -> list[RowView]:
    """The page's ``RowView``s, with their related instances (see ``_attach``)."""
    row_class, new = RowView.of(klass.model), object.__new__
    start, end, attnames, uuids = klass.start, klass.end, klass.attnames, klass.uuids
    pk_index = klass.pk_index
    if uuids and not uuids_as_text:
        rows = [_texts(row, uuids) for row in rows]
    views = []
    for row in rows:
        view = new(row_class)
        values = view.__dict__
        values.update(zip(attnames, row[start:end], strict=True))
        values["pk"] = row[pk_index]  # an attribute, not a property: links read it often
        views.append(view)
    _attach(klass, rows, views, using, uuids_as_text)
    return views


def _texts(row: Row, positions: tuple[int, ...]) -> list[Any]:
    values = list(row)
    for position in positions:
        if values[position] is not None:
            values[position] = str(values[position])
    return values


def _attach(
    klass: _Klass, rows: list[Any], parents: list[Any], using: str, uuids_as_text: bool
) -> None:
    """Each relation of ``klass`` set on ``parents`` (one a row; None where a nullable relation
    above was empty) as ``select_related`` sets it: a model instance, one a distinct related
    row, or None where the relation is empty."""
    for child in klass.related:
        build, pk_index = _builder(child, using, uuids_as_text), child.pk_index
        name = cast(str, child.name)
        seen: dict[Any, Model] = {}
        built: list[Any] = []
        for row, parent in zip(rows, parents, strict=True):
            key = row[pk_index]
            value = None if key is None else seen.get(key)
            if value is None and key is not None:
                value = seen[key] = build(row)
            built.append(value)
            if parent is None:
                continue
            if isinstance(parent, RowView):
                parent.__dict__[name] = value
            else:  # as select_related caches it
                parent._meta.get_field(name).set_cached_value(parent, value)
        if child.related:
            _attach(child, rows, built, using, uuids_as_text)


def _builder(klass: _Klass, using: str, uuids_as_text: bool) -> Callable[[Row], Model]:
    """How one row's slice becomes ``klass.model``'s instance: what ``Model.from_db`` gives."""
    model, start, end, attnames = klass.model, klass.start, klass.end, klass.attnames
    texts = [position - start for position in klass.uuids] if uuids_as_text else []

    def values(row: Row) -> list[Any]:
        found = list(row[start:end])
        for position in texts:  # an instance's UUIDs are UUIDs
            if found[position] is not None:
                found[position] = uuid.UUID(found[position])
        return found

    if not fast_init(model):
        return lambda row: model.from_db(using, list(attnames), values(row))
    new = model.__new__

    def build(row: Row) -> Model:
        instance = new(model)
        found = values(row) if texts else row[start:end]
        instance.__dict__.update(zip(attnames, found, strict=True))
        state = instance._state = ModelState()
        state.adding, state.db = False, using
        return instance

    return build


def _fast_loaders(cursor: Any, connection: BaseDatabaseWrapper) -> bool:
    """On PostgreSQL (psycopg 3), read ``uuid`` as its text and, in UTC, ``timestamptz`` with
    psycopg's own loader (its C one where installed) instead of Django's Python subclass, which
    only sets the ``tzinfo`` to the connection's time zone: in UTC both give the same aware
    ``datetime``. Whether UUIDs come as text."""
    raw = getattr(cursor, "cursor", None)
    if connection.vendor != "postgresql" or not hasattr(raw, "adapters"):
        return False
    loaders = _psycopg_loaders()
    if loaders is None:
        return False
    text, timestamptz = loaders
    adapters = cast(Any, raw).adapters
    adapters.register_loader("uuid", text)
    if connection.timezone_name == "UTC":
        adapters.register_loader("timestamptz", timestamptz)
    return True


_loaders: list[tuple[Any, Any] | None] = []


def _psycopg_loaders() -> tuple[Any, Any] | None:
    """psycopg's default text loaders of ``text`` and ``timestamptz`` (C in psycopg's binary
    package), or None without psycopg 3."""
    if not _loaders:
        try:
            import psycopg
            from psycopg.pq import Format
        except ImportError:  # psycopg2: Django's loaders
            _loaders.append(None)
        else:
            types = psycopg.postgres.types
            _loaders.append(
                (
                    psycopg.adapters.get_loader(types["text"].oid, Format.TEXT),
                    psycopg.adapters.get_loader(types["timestamptz"].oid, Format.TEXT),
                )
            )
    return _loaders[0]
