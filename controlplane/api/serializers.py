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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FromColumns:
    """What a method's rendering of a page's row reads: ``bind(serializer)(*values,
    **keywords)`` of the row's ``columns`` (positional) and ``keywords`` (name -> column)."""

    bind: Callable[[Any], Callable[..., Any]]
    columns: tuple[str, ...]
    keywords: tuple[tuple[str, str], ...]


def plain(function: Callable[..., Any]) -> Callable[[Any], Callable[..., Any]]:
    """``from_columns``'s ``bind`` of a function that is the same for every serializer."""
    return lambda serializer: function


def from_columns(
    bind: Callable[[Any], Callable[..., Any]], *columns: str, **keywords: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares that a ``SerializerMethodField``'s method renders a page's row (``RowView``) as
    ``bind(serializer)`` renders the row's columns: ``bind(serializer)(*values of columns,
    **{name: value of column for name, column in keywords})``.

    Why: most method fields are one plain function of a column or two (``empty_to_none``, a
    ``graphql_id``, a link formatted with the primary key), and calling the method for every
    item of a page (the method, its attribute reads, then that function) was most of a page's
    rendering. A row plan (``ReadSerializer._row_plan``) calls the bound function with the
    values instead. The method itself stays what DRF, the schema (its return annotation) and
    model instances use, so it must render the same: the tests render every list's rows both
    ways (``tests/api/test_compiled_pages.py``) and byte for byte (the golden responses)."""
    spec = FromColumns(bind, columns, tuple(keywords.items()))
    if not all(name.isidentifier() for name in keywords):
        raise ValueError(f"keyword arguments must be identifiers: {keywords}")

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.from_columns = spec  # type: ignore[attr-defined]
        return method

    return mark


#: A row plan as one function: a page's row -> its item.
RowRenderer = Callable[[RowView], dict[str, Any]]


def _spec(get: Getter, row_class: type[RowView]) -> FromColumns | None:
    """What a method field's getter declares it reads (``from_columns``), if ``row_class``'s
    rows hold all of it."""
    spec: FromColumns | None = getattr(get, "from_columns", None)
    if spec is None:
        return None
    read = (*spec.columns, *(column for _, column in spec.keywords))
    held = all(column == "pk" or column in row_class.columns for column in read)
    return spec if held else None


def row_renderer_factory(
    plan: list[PlanStep], row_class: type[RowView]
) -> Callable[[Any, list[PlanStep]], RowRenderer]:
    """``factory(serializer, plan) -> render``: a serializer's ``plan`` of ``row_class`` as one
    function building the item's dict in one dict display: a column rendered as itself read
    from the row's values, a converted column converted, a method field that declares the
    row's columns it reads (``from_columns``) its bound function of them, any other field its
    getter.

    Why generated source (as ``collections.namedtuple`` and ``dataclasses`` build theirs): each
    step as a call of its own cost, for every field of every item, the loop, a branch, the
    method, its attribute reads and the function it calls; in one display that is the function
    alone (a page of 100 clusters: ~0.78 -> ~0.70 ms of rendering in-process). The source
    holds only the field and column names as ``repr`` literals and keyword names that are
    identifiers; the functions come in as arguments, so it is compiled once per serializer
    class and row class and each serializer binds its own. A step that raises ``SkipField``
    aborts the display: ``ReadSerializer`` then renders that item step by step."""
    arguments: list[str] = []
    entries: list[str] = []
    binders: list[tuple[int, FromColumns | None]] = []
    for index, (name, column, get) in enumerate(plan):
        spec = _spec(get, row_class) if column is None else None
        if column is not None and get is _same:
            entries.append(f"{name!r}: v[{column!r}]")
            continue
        function = f"f{len(arguments)}"
        arguments.append(function)
        binders.append((index, spec))
        if spec is not None:
            values = [f"v[{each!r}]" for each in spec.columns]
            values += [f"{keyword}=v[{each!r}]" for keyword, each in spec.keywords]
            entries.append(f"{name!r}: {function}({', '.join(values)})")
        elif column is None:
            entries.append(f"{name!r}: {function}(row)")
        else:
            entries.append(f"{name!r}: None if (x := v[{column!r}]) is None else {function}(x)")
    body = ",\n            ".join(entries)
    source = (
        f"def render_with({', '.join(arguments)}):\n"
        "    def render(row):\n"
        "        v = row.__dict__\n"
        f"        return {{\n            {body},\n        }}\n"
        "    return render\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<row renderer>", "exec"), namespace)  # noqa: S102
    render_with = namespace["render_with"]

    def factory(serializer: Any, plan: list[PlanStep]) -> RowRenderer:
        functions = [
            plan[index][2] if spec is None else spec.bind(serializer) for index, spec in binders
        ]
        return cast(RowRenderer, render_with(*functions))

    return factory


def renders_plain_json(serializer_class: type) -> bool:
    """Whether ``serializer_class`` itself says it renders plain JSON (``PLAIN_JSON``): not
    inherited, as a subclass may add a field that renders a float."""
    return bool(serializer_class.__dict__.get("PLAIN_JSON", False))


class ReadSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A serializer of responses (see the module's docstring); input fields work as usual."""

    #: Whether everything it renders is plain JSON (``controlplane.api.renderers.PlainJSON``:
    #: strings, 64-bit integers, booleans, None, UUIDs, lists and dicts of these; no float),
    #: so that a list of it may be written by orjson.
    PLAIN_JSON: ClassVar[bool] = False
    _class_binders: ClassVar[list[tuple[str, Binder]] | None]
    #: The shared plain fields (``SHARED_FIELDS``): the attribute each reads, its converter.
    _class_columns: ClassVar[dict[str, tuple[str, Getter, type]]]
    #: Per row class, the factory of its ``RowRenderer`` (``row_renderer_factory``).
    _class_row_factories: ClassVar[
        dict[type[RowView], Callable[[Any, list[PlanStep]], RowRenderer]]
    ]

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
                # a row holds a UUID as its hyphenated text: only that format renders as itself
                and getattr(field, "uuid_format", "hex_verbose") == "hex_verbose"
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

    @cached_property
    def _row_renderers(self) -> dict[type[RowView], RowRenderer]:
        return {}

    def _row_renderer(self, row_class: type[RowView]) -> RowRenderer | None:
        """This serializer's ``RowRenderer`` of ``row_class``'s rows (its plan, with the plan's
        functions bound to this serializer); None without a plan."""
        plan = self._row_plan(row_class)
        if plan is None:
            return None
        factories = type(self).__dict__.get("_class_row_factories")
        if factories is None:
            factories = {}
            type(self)._class_row_factories = factories
        factory = factories.get(row_class)
        if factory is None:
            factory = factories[row_class] = row_renderer_factory(plan, row_class)
        render = self._row_renderers[row_class] = factory(self, plan)
        return render

    def _render_by_plan(self, instance: RowView, plan: list[PlanStep]) -> dict[str, Any]:
        """The row's item as its plan says, step by step: where a getter raises ``SkipField``
        (the item then lacks that field, as DRF leaves it out)."""
        data = {}
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

    def to_representation(self, instance: Any) -> dict[str, Any]:
        render = self._row_renderers.get(type(instance))  # a page's row, after its first
        if render is None and isinstance(instance, RowView):
            render = self._row_renderer(type(instance))
        if render is not None:
            try:
                return render(instance)
            except SkipField:
                return self._render_by_plan(instance, self._row_plans[type(instance)])
        if isinstance(instance, Mapping):  # DRF reads keys, not attributes
            return dict(super().to_representation(instance))
        data = {}
        for name, get in self._getters:
            try:
                data[name] = get(instance)
            except SkipField:
                continue
        return data
