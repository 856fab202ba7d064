"""``ReadSerializer``: a serializer whose responses skip DRF's per-field machinery.

DRF's ``Serializer.to_representation`` walks every field through ``get_attribute`` (a generic
attribute walk) and, for a ``SerializerMethodField``, a lookup of its method, for every item: on
a page of 100 that is most of the time not spent in the database. A ``ReadSerializer`` binds,
once per serializer, one getter per readable field, and builds each item's dict from those.

The JSON is the same: the declared fields, in their order, each rendered by its own
``to_representation`` (the fields stay the single source of the response and its schema), with
DRF's rules kept: ``None`` is rendered ``None``, a method field calls its method with the
instance. Only the common case takes the short way: a field reading one attribute of an object,
rendered by the field's ``to_representation`` or, for DRF's plain text, number, boolean and UUID
fields, the builtin that method amounts to (``CONVERTERS``). Anything else (dotted sources,
related fields, nested lists, a ``Mapping`` instance, an attribute that is missing or callable)
goes through DRF's own ``get_attribute`` for that field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar, cast

from rest_framework import serializers
from rest_framework.fields import Field, SkipField, empty
from rest_framework.relations import PKOnlyObject, RelatedField

from controlplane.api.fields import TimestampField, timestamp
from controlplane.api.pages import RowView

Getter = Callable[[Any], Any]


def drf_value(field: Field, instance: Any) -> Any:  # type: ignore[type-arg]
    """What DRF's ``Serializer.to_representation`` puts under ``field`` for ``instance`` (raises
    ``SkipField`` where DRF leaves the field out)."""
    attribute = field.get_attribute(instance)
    check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
    return None if check_for_none is None else field.to_representation(attribute)


def _boolean(field: Field) -> Getter:  # type: ignore[type-arg]
    to_representation = field.to_representation
    return lambda value: value if value is True or value is False else to_representation(value)


#: The ``to_representation`` of DRF's fields whose rendering is a builtin (or, for booleans,
#: the value itself), by exact class: subclasses may render otherwise.
CONVERTERS: dict[type, Callable[[Field], Getter]] = {  # type: ignore[type-arg]
    serializers.CharField: lambda field: str,
    serializers.IntegerField: lambda field: int,
    serializers.BooleanField: _boolean,
    serializers.UUIDField: lambda field: (
        str if getattr(field, "uuid_format", None) == "hex_verbose" else field.to_representation
    ),
    TimestampField: lambda field: timestamp,
}


def converter(field: Field) -> Getter:  # type: ignore[type-arg]
    """How ``field`` renders a value that is not None: its ``to_representation``, or the
    builtin that amounts to (``CONVERTERS``)."""
    found = CONVERTERS.get(type(field))
    return found(field) if found else field.to_representation


def getter(field: Field) -> Getter:  # type: ignore[type-arg]
    """How a ``ReadSerializer`` reads ``field`` from an instance."""
    if isinstance(field, serializers.SerializerMethodField):
        method: Getter = getattr(field.parent, field.method_name)
        return method  # DRF passes the instance itself (source "*")
    if len(field.source_attrs) != 1 or isinstance(field, RelatedField):
        return lambda instance: drf_value(field, instance)
    name = field.source_attrs[0]
    to_representation = converter(field)

    def get(instance: Any) -> Any:
        try:
            attribute = getattr(instance, name)
        except AttributeError:  # DRF's default, null, or skip; or a missing related object
            return drf_value(field, instance)
        if attribute is None:
            return None
        if callable(attribute):  # DRF calls simple callables
            return drf_value(field, instance)
        return to_representation(attribute)

    return get


#: Fields whose rendering of a value depends on nothing but the value (not the serializer they
#: are bound to, nor its context), by exact class: one bound copy serves every response.
SHARED_FIELDS: tuple[type, ...] = (
    serializers.CharField,
    serializers.IntegerField,
    serializers.BooleanField,
    serializers.UUIDField,
    serializers.ChoiceField,
)

#: How a serializer binds one field's getter: from the serializer, its getter.
Binder = Callable[["ReadSerializer"], Getter]


def _shared(field: Field) -> bool:  # type: ignore[type-arg]
    return (
        type(field) in SHARED_FIELDS or getattr(type(field), "renders_value_only", False)
    ) and field.default is empty


def _binder(field: Field) -> Binder | None:  # type: ignore[type-arg]
    """How each serializer gets ``field``'s getter without copying the declared fields (see
    ``ReadSerializer._binders``), or None for a field that needs its own copy."""
    if isinstance(field, serializers.SerializerMethodField):
        method_name: str = field.method_name
        return lambda serializer: cast(Getter, getattr(serializer, method_name))
    if isinstance(field, ReadSerializer) and field.default is empty:
        # A nested serializer of its own for each serializer (``UserSerializer`` keeps the
        # users it rendered for one response), built from the declared arguments.
        name, args, kwargs = cast(str, field.field_name), field._args, field._kwargs  # type: ignore[attr-defined]

        def nested(serializer: ReadSerializer) -> Getter:
            own = type(field)(*args, **kwargs)
            own.bind(name, serializer)
            return getter(own)

        return nested
    if _shared(field):
        get = getter(field)
        return lambda serializer: get
    return None


#: The columns (by ``Field.get_internal_type()``, of the target for a foreign key) whose values,
#: as a page's rows hold them (``RowView``: UUIDs as text), each field renders as themselves:
#: ``str`` of a string, ``bool`` of a boolean, ``int`` of an integer.
SAME_VALUE: dict[type, frozenset[str]] = {
    serializers.CharField: frozenset({"CharField", "TextField", "SlugField", "EmailField"}),
    serializers.UUIDField: frozenset({"UUIDField"}),
    serializers.BooleanField: frozenset({"BooleanField"}),
    serializers.IntegerField: frozenset(
        {"IntegerField", "BigIntegerField", "SmallIntegerField", "AutoField", "BigAutoField"}
    ),
}


def _same(value: Any) -> Any:
    return value


#: What a row plan does for one field: its name, and either the row's column and the field's
#: converter, or (column None) the serializer's getter.
PlanStep = tuple[str, str | None, Getter]


class ReadSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A serializer of responses (see the module's docstring); input fields work as usual."""

    #: Whether everything it renders is plain JSON (``controlplane.api.renderers.PlainJSON``:
    #: strings, 64-bit integers, booleans, None, UUIDs, lists and dicts of these; no float),
    #: so that a list of it may be written by orjson.
    PLAIN_JSON: ClassVar[bool] = False
    _class_binders: ClassVar[list[tuple[str, Binder]] | None]
    #: The shared plain fields (``SHARED_FIELDS``): the attribute each reads, its converter.
    _class_columns: ClassVar[dict[str, tuple[str, Getter, type]]]

    @classmethod
    def _binders(cls) -> list[tuple[str, Binder]] | None:
        """The class's readable fields, each with how a serializer binds its getter; None if
        one needs the serializer's own copy of its fields.

        DRF deep-copies every declared field for every serializer, that is for every response
        (and binding each getter walks them again): ~0.3 ms a list, more than rendering a few
        items. Method fields, nested ``ReadSerializer``s and the fields that render a value
        alone (``SHARED_FIELDS``) need no copy: a copy made once for the class serves, each
        serializer binding its methods and nested serializers to itself."""
        if "_class_binders" not in cls.__dict__:
            prototype = cls()
            binders = [
                (cast(str, field.field_name), _binder(field))
                for field in prototype._readable_fields
            ]
            cls._class_columns = {
                cast(str, field.field_name): (field.source_attrs[0], converter(field), type(field))
                for field in prototype._readable_fields
                if _shared(field)
                and len(field.source_attrs) == 1
                and not isinstance(field, RelatedField)
            }
            cls._class_binders = (
                None
                if any(binder is None for _, binder in binders)
                else cast(list[tuple[str, Binder]], binders)
            )
        found: list[tuple[str, Binder]] | None = cls.__dict__["_class_binders"]
        return found

    @cached_property
    def _getters(self) -> list[tuple[str, Getter]]:
        binders = self._binders()
        if binders is not None:
            return [(name, bind(self)) for name, bind in binders]
        return [(cast(str, field.field_name), getter(field)) for field in self._readable_fields]

    @cached_property
    def _row_plans(self) -> dict[type[RowView], list[PlanStep]]:
        return {}

    def _row_plan(self, row_class: type[RowView]) -> list[PlanStep] | None:
        """How this serializer renders a ``RowView`` of ``row_class`` (a page's row,
        ``controlplane.api.pages``): a plain field whose attribute is one of the row's columns
        is read from the row's values and converted, without its getter (a column is a value:
        never missing, never callable); anything else through its getter. None for a class
        whose fields need their own copies (no class plan)."""
        plan = self._row_plans.get(row_class)
        if plan is None:
            if self._binders() is None:
                return None
            columns, plan = self._class_columns, []
            for name, get in self._getters:
                column = columns.get(name)
                if column is None or column[0] not in row_class.columns:
                    plan.append((name, None, get))
                    continue
                attribute, convert, field_class = column
                kind = row_class.columns[attribute]
                if kind in SAME_VALUE.get(field_class, ()):
                    convert = _same
                plan.append((name, attribute, convert))
            self._row_plans[row_class] = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = {}
        plan = self._row_plans.get(type(instance))  # a page's row, after its first
        if plan is None and isinstance(instance, RowView):
            plan = self._row_plan(type(instance))
        if plan is not None:
            values = instance.__dict__
            for name, column, get in plan:
                if column is not None:
                    value = values[column]
                    data[name] = value if value is None or get is _same else get(value)
                    continue
                try:
                    data[name] = get(instance)
                except SkipField:
                    continue
            return data
        if isinstance(instance, Mapping):  # DRF reads keys, not attributes
            return dict(super().to_representation(instance))
        for name, get in self._getters:
            try:
                data[name] = get(instance)
            except SkipField:
                continue
        return data
