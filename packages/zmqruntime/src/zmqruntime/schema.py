"""Strict wire schemas: one generic parser driven by attrs fields and their type hints.

Every message of docs/protocol.md is a frozen, slotted, kw_only attrs class deriving from
`WireModel`. The class's type hints are the schema: `str`, `int`, `float`, `bool`, `bytes`,
`StrEnum` subclasses, `Literal["..."]`, `X | None`, `tuple[X, ...]`, nested `WireModel`s and
free-form JSON (`json_types.JsonValue`, `JsonObject`). `typing.Annotated` adds rules
(`Ge`, `Le`, `Gt`, `MinLen`, `MaxLen`, `Pattern`) or a whole custom `WireType`.

The rules of docs/protocol.md §4 hold in both directions:

- `from_wire(dict)` rejects unknown fields, missing required fields (a field with a default may
  be absent, unless its metadata sets `WIRE_REQUIRED`), a bool where a number belongs, a float
  where an int belongs (even `1.0`), NaN and infinities, enum values outside their set,
  non-strings where strings belong; a float field accepts an int and stores a float.
- Constructing a message in Python runs the same checks (`__attrs_post_init__`), so an invalid
  value object cannot exist. Python construction is a little more forgiving about *Python*
  types only (numpy scalars for numbers, a plain string for an enum member) and normalises them.
- Every failure is a `SchemaError` naming the field path (`progress.completed`,
  `submit.params.x`, `server_status.running[0].pid`), the reason and the bad value.

Parsing is built once per class and costs one Python call per field on the happy path; paths are
only assembled when an error is raised.
"""

from __future__ import annotations

import enum
import functools
import math
import numbers
import operator
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from itertools import repeat
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeAlias, Union

import attrs

__all__ = [
    "MAX_JSON_DEPTH",
    "MISSING",
    "WIRE_REQUIRED",
    "Ge",
    "Gt",
    "Le",
    "MaxLen",
    "MinLen",
    "NonEmptyStr",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Pattern",
    "Percent",
    "PositiveFloat",
    "PositiveInt",
    "SchemaError",
    "WireModel",
    "WireType",
    "json_type_name",
]

#: Integers on the wire are limited to signed 64 bits, so every peer can hold them.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1

#: Free-form JSON values nest at most this deep (deeper input is refused, never a RecursionError).
MAX_JSON_DEPTH: Final = 64

_REPR_LIMIT = 200

#: attrs field metadata key: the field must be present on the wire even though it has a
#: default in Python (ProgressUpdate's `type`).
WIRE_REQUIRED: Final = "zmqruntime.wire_required"


class _Missing:
    """Marker for 'this field was not in the message' (the `value` of such a SchemaError)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def json_type_name(value: object) -> str:
    """The JSON name of a value's type, for error messages ('integer', 'number', 'array'...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__qualname__


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the schema error itself
        text = f"<{type(value).__qualname__} object>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return text


def join_path(outer: str, inner: str) -> str:
    """Join path segments: `progress`+`completed` -> `progress.completed`, `running`+`[0]`
    -> `running[0]`."""
    if not inner:
        return outer
    if not outer:
        return inner
    if inner.startswith("["):
        return outer + inner
    return f"{outer}.{inner}"


def key_segment(key: str) -> str:
    """Path segment for a key of a free-form JSON object: `.x`, or `["a b"]` when not a name."""
    return key if key.isidentifier() else f"[{key!r}]"


class SchemaError(ValueError):
    """A value does not match its schema.

    `path` names the field (`progress.completed`, `submit.params.x`), `value` is the offending
    value (`MISSING` when the field is absent) and `reason` says what rule it broke.
    """

    def __init__(self, path: str, value: object, reason: str) -> None:
        super().__init__(path, value, reason)
        self.path = path
        self.value = value
        self.reason = reason

    def prefixed(self, segment: str) -> SchemaError:
        """Prepend a path segment in place (used while the error bubbles out of nested values)."""
        self.path = join_path(segment, self.path)
        self.args = (self.path, self.value, self.reason)
        return self

    def __str__(self) -> str:
        where = self.path or "<value>"
        if self.value is MISSING:
            return f"{where}: {self.reason}"
        return f"{where}: {self.reason} (value: {_short_repr(self.value)})"


def type_error(expected: str, value: object) -> SchemaError:
    """A SchemaError for a value of the wrong JSON type, at the (still empty) local path."""
    return SchemaError("", value, f"expected {expected}, not {json_type_name(value)}")


# -- rules carried by Annotated ---------------------------------------------------------------


@attrs.frozen
class Ge:
    """Number >= bound."""

    bound: float


@attrs.frozen
class Le:
    """Number <= bound."""

    bound: float


@attrs.frozen
class Gt:
    """Number > bound."""

    bound: float


@attrs.frozen
class MinLen:
    """String (or bytes) of at least this many characters."""

    length: int


@attrs.frozen
class MaxLen:
    """String (or bytes) of at most this many characters."""

    length: int


@attrs.frozen
class Pattern:
    """String that fully matches this regular expression."""

    regex: str


@attrs.frozen
class WireType:
    """Annotated metadata that defines a field's wire handling entirely.

    `parse` turns a wire value into the Python value, `check` validates (and may normalise) a
    value given in Python, `dump` turns the Python value into its wire form (None: as is).
    Each raises `SchemaError` with an empty or relative path. `may_hold_arrays` tells the codec
    that values of this field can contain numpy arrays to move into binary frames;
    `holds_arrays`, when given, tells cheaply whether one (valid) value does, so the codec
    skips its array walk for values without any (None: assume every value may).
    """

    parse: Callable[[Any], Any]
    check: Callable[[Any], Any]
    dump: Callable[[Any], Any] | None = None
    may_hold_arrays: bool = False
    holds_arrays: Callable[[Any], bool] | None = None


NonNegativeInt: TypeAlias = Annotated[int, Ge(0)]
PositiveInt: TypeAlias = Annotated[int, Ge(1)]
NonNegativeFloat: TypeAlias = Annotated[float, Ge(0)]
PositiveFloat: TypeAlias = Annotated[float, Gt(0)]
Percent: TypeAlias = Annotated[float, Ge(0), Le(100)]
NonEmptyStr: TypeAlias = Annotated[str, MinLen(1)]


# -- kinds: how one type is parsed, checked and dumped ----------------------------------------

_Fn = Callable[[Any], Any]


def _always(_: Any) -> bool:
    return True


@attrs.frozen
class _Kind:
    """How one type is parsed, checked and dumped; `holds_arrays` tells whether a valid value
    holds numpy arrays (None: values of this type never do)."""

    parse: _Fn
    check: _Fn
    dump: _Fn | None
    holds_arrays: Callable[[Any], bool] | None = None


def _then(first: _Fn, second: _Fn | None) -> _Fn:
    if second is None:
        return first

    def both(value: Any) -> Any:
        return second(first(value))

    return both


def _number_bounds(meta: list[object]) -> _Fn | None:
    lo = hi = gt = None
    for rule in meta:
        if isinstance(rule, Ge):
            lo = rule.bound
        elif isinstance(rule, Le):
            hi = rule.bound
        elif isinstance(rule, Gt):
            gt = rule.bound
    if lo is None and hi is None and gt is None:
        return None

    def bounded(value: Any) -> Any:
        if lo is not None and value < lo:
            raise SchemaError("", value, f"must be >= {lo:g}")
        if gt is not None and value <= gt:
            raise SchemaError("", value, f"must be > {gt:g}")
        if hi is not None and value > hi:
            raise SchemaError("", value, f"must be <= {hi:g}")
        return value

    return bounded


_FLOAT_MAX: Final = sys.float_info.max


_R = typing.TypeVar("_R")


def _rule(meta: list[object], kind: type[_R]) -> _R | None:
    """The last rule of this kind among Annotated metadata, or None."""
    found = None
    for rule in meta:
        if isinstance(rule, kind):
            found = rule
    return found


def _fast_parse(base: object, meta: list[object], slow: _Fn) -> _Fn:
    """`slow` with an inline fast path for the common case: a value of the exact wire type
    that already satisfies the rules is returned after one type test and one range test;
    anything else goes through `slow`, which converts or raises the precise error."""
    ge, le = _rule(meta, Ge), _rule(meta, Le)
    if _rule(meta, Gt) is not None:
        return slow
    if base is int:
        lo_i = INT_MIN if ge is None else max(INT_MIN, math.ceil(ge.bound))
        hi_i = INT_MAX if le is None else min(INT_MAX, math.floor(le.bound))

        def parse_int(value: Any) -> Any:
            if type(value) is int and lo_i <= value <= hi_i:
                return value
            return slow(value)

        return parse_int
    if base is float:
        lo_f = -_FLOAT_MAX if ge is None else float(ge.bound)
        hi_f = _FLOAT_MAX if le is None else float(le.bound)

        def parse_float(value: Any) -> Any:
            if type(value) is float and lo_f <= value <= hi_f:  # NaN and infinities fail
                return value
            return slow(value)

        return parse_float
    min_len = _rule(meta, MinLen)
    if base is str and _rule(meta, MaxLen) is None and _rule(meta, Pattern) is None:
        shortest = 0 if min_len is None else min_len.length

        def parse_str(value: Any) -> Any:
            if type(value) is str and len(value) >= shortest:
                return value
            return slow(value)

        return parse_str
    return slow


def _length_rules(meta: list[object], unit: str) -> _Fn | None:
    min_len = 0
    max_len: int | None = None
    pattern: re.Pattern[str] | None = None
    for rule in meta:
        if isinstance(rule, MinLen):
            min_len = rule.length
        elif isinstance(rule, MaxLen):
            max_len = rule.length
        elif isinstance(rule, Pattern):
            pattern = re.compile(rule.regex)
    if min_len == 0 and max_len is None and pattern is None:
        return None

    def sized(value: Any) -> Any:
        n = len(value)
        if n < min_len:
            reason = "must not be empty" if min_len == 1 else f"needs at least {min_len} {unit}"
            raise SchemaError("", value, reason)
        if max_len is not None and n > max_len:
            raise SchemaError("", value, f"must have at most {max_len} {unit}")
        if pattern is not None and pattern.fullmatch(value) is None:
            raise SchemaError("", value, f"must match {pattern.pattern!r}")
        return value

    return sized


def _parse_str(value: Any) -> str:
    if type(value) is not str:
        raise type_error("a string", value)
    return value


def _check_str(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    raise type_error("a string", value)


def _parse_int(value: Any) -> int:
    if type(value) is not int:
        raise type_error("an integer", value)
    if not INT_MIN <= value <= INT_MAX:
        raise SchemaError("", value, "must fit in a signed 64-bit integer")
    return value


def _check_int(value: Any) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise type_error("an integer", value)
        value = int(value)
    return _parse_int(value)


def _finite(value: float, original: object) -> float:
    if not math.isfinite(value):
        raise SchemaError("", original, "must be a finite number (NaN and infinities are not JSON)")
    return value


def _parse_float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return _finite(value, value)
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise SchemaError("", value, "too large for a float") from None
    raise type_error("a number", value)


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise type_error("a number", value)
    try:
        return _finite(float(value), value)
    except OverflowError:
        raise SchemaError("", value, "too large for a float") from None


def _parse_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise type_error("a boolean", value)
    return value


def _parse_hex_bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise type_error("a hex string", value)
    if len(value) % 2 or not _HEX.fullmatch(value):
        raise SchemaError("", value, "must be lowercase hex with an even number of digits")
    return bytes.fromhex(value)


def _check_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise type_error("bytes", value)


def _dump_hex(value: bytes) -> str:
    return value.hex()


_HEX = re.compile(r"[0-9a-f]*")


def _enum_kind(cls: type[enum.Enum]) -> _Kind:
    members = cls._value2member_map_
    allowed = ", ".join(repr(m.value) for m in cls)

    def parse(value: Any) -> enum.Enum:
        if type(value) is not str:
            raise type_error("a string", value)
        member = members.get(value)
        if member is None:
            raise SchemaError("", value, f"must be one of {allowed}")
        return member

    def check(value: Any) -> enum.Enum:
        if isinstance(value, cls):
            return value
        return parse(_check_str(value))

    def dump(value: enum.Enum) -> Any:
        return value._value_

    return _Kind(parse, check, dump)


def _literal_kind(values: tuple[object, ...]) -> _Kind:
    allowed = ", ".join(repr(v) for v in values)

    def parse(value: Any) -> Any:
        if type(value) is str and value in values:
            return value
        raise SchemaError("", value, f"must be {allowed}")

    return _Kind(parse, parse, None)


def _optional_kind(inner: _Kind) -> _Kind:
    inner_parse, inner_check = inner.parse, inner.check

    def parse(value: Any) -> Any:
        return None if value is None else inner_parse(value)

    def check(value: Any) -> Any:
        return None if value is None else inner_check(value)

    dump: _Fn | None = None
    if inner.dump is not None:
        inner_dump = inner.dump

        def dump(value: Any) -> Any:
            return None if value is None else inner_dump(value)

    holds: Callable[[Any], bool] | None = None
    if inner.holds_arrays is not None:
        inner_holds = inner.holds_arrays

        def holds(value: Any) -> bool:
            return value is not None and inner_holds(value)

    return _Kind(parse, check, dump, holds)


def _tuple_kind(item: _Kind) -> _Kind:
    def walk(value: Any, each: _Fn) -> tuple[Any, ...]:
        try:
            return tuple(map(each, value))
        except SchemaError:
            pass
        for index, element in enumerate(value):  # again, to name the bad element
            try:
                each(element)
            except SchemaError as exc:
                raise exc.prefixed(f"[{index}]") from None
        raise AssertionError("unreachable: an element failed once and then passed")

    item_parse, item_check, item_dump = item.parse, item.check, item.dump

    def parse(value: Any) -> tuple[Any, ...]:
        if type(value) is not list and type(value) is not tuple:
            raise type_error("an array", value)
        return walk(value, item_parse)

    def check(value: Any) -> tuple[Any, ...]:
        if type(value) is not tuple and not isinstance(value, list | tuple):
            raise type_error("a tuple", value)
        return walk(value, item_check)

    def dump(value: tuple[Any, ...]) -> list[Any]:
        if item_dump is None:
            return list(value)
        return list(map(item_dump, value))

    holds: Callable[[Any], bool] | None = None
    if item.holds_arrays is not None:
        item_holds = item.holds_arrays

        def holds(value: tuple[Any, ...]) -> bool:
            return any(map(item_holds, value))

    return _Kind(parse, check, dump, holds)


def _model_kind(cls: type[WireModel]) -> _Kind:
    spec = _spec(cls)
    spec_dump = spec.dump

    def check(value: Any) -> WireModel:
        if not isinstance(value, cls):
            raise type_error(f"a {cls.__name__}", value)
        return value

    def dump(value: WireModel) -> dict[str, Any]:
        return spec_dump(value) if type(value) is cls else value.to_wire()

    holds = spec.holds_arrays if spec.may_hold_arrays else None
    return _Kind(spec.parse_object, check, dump, holds)


_SCALARS: dict[object, _Kind] = {
    str: _Kind(_parse_str, _check_str, None),
    int: _Kind(_parse_int, _check_int, None),
    float: _Kind(_parse_float, _check_float, None),
    bool: _Kind(_parse_bool, _parse_bool, None),
    bytes: _Kind(_parse_hex_bytes, _check_bytes, _dump_hex),
}


def _kind_of(hint: Any) -> _Kind:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        custom = [m for m in meta if isinstance(m, WireType)]
        if custom:
            wt = custom[-1]
            holds = (wt.holds_arrays or _always) if wt.may_hold_arrays else None
            return _Kind(wt.parse, wt.check, wt.dump, holds)
        kind = _kind_of(base)
        if base in (int, float):
            rule = _number_bounds(meta)
        else:
            rule = _length_rules(meta, "bytes" if base is bytes else "characters")
        # Values of the exact wire type pass parse and check alike: one fast path serves both.
        parse = _fast_parse(base, meta, _then(kind.parse, rule))
        check = _fast_parse(base, meta, _then(kind.check, rule))
        return _Kind(parse, check, kind.dump, kind.holds_arrays)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(args) == len(typing.get_args(hint)):
            raise TypeError(f"only `X | None` unions are supported in schemas, not {hint!r}")
        return _optional_kind(_kind_of(args[0]))
    if origin is Literal:
        return _literal_kind(typing.get_args(hint))
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) != 2 or items[1] is not Ellipsis:
            raise TypeError(f"only `tuple[X, ...]` is supported in schemas, not {hint!r}")
        return _tuple_kind(_kind_of(items[0]))
    if hint in _SCALARS:
        return _SCALARS[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_kind(hint)
    if isinstance(hint, type) and issubclass(hint, WireModel):
        return _model_kind(hint)
    raise TypeError(f"unsupported type in a wire schema: {hint!r}")


# -- per-class specification ------------------------------------------------------------------


class _Required:
    """Default of a field that has none."""

    __slots__ = ()


_REQUIRED: Final = _Required()


_new = object.__new__
_setattr = object.__setattr__
_call = operator.call


def _getter(make: Callable[..., Any], names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """`operator.attrgetter` / `itemgetter` of these names that always returns a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = make(names[0])
        return lambda obj: (one(obj),)
    getter: Callable[[Any], tuple[Any, ...]] = make(*names)
    return getter


def _set_named(inst: Any, value: Any, *, name: str) -> None:
    _setattr(inst, name, value)


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """Per field, the `__set__` of its slot (what `object.__setattr__` ends up calling,
    without the attribute lookup), or an `object.__setattr__` for a field without one."""
    setters: list[Callable[[Any, Any], None]] = []
    for name in names:
        slot = getattr(cls, name, None)
        if type(slot) is types.MemberDescriptorType:
            setters.append(slot.__set__)
        else:
            setters.append(functools.partial(_set_named, name=name))
    return tuple(setters)


def _set_all(inst: object, setters: tuple[Callable[[Any, Any], None], ...], values: Any) -> None:
    """Set the fields of a fresh instance in one C-level pass (`any` only drains the map:
    every setter returns None)."""
    any(map(_call, setters, repeat(inst), values))


class _Spec:
    """The compiled schema of one WireModel class.

    Parsing and dumping have a fast path that handles the usual message in a few C-level
    passes over per-class tables (`operator.itemgetter` / `attrgetter`, `map`, slot setters);
    anything unusual (a missing or unknown field, a bad value) goes the field-by-field way,
    which names the bad field. Both paths apply exactly the same rules.
    """

    def __init__(self, cls: type[WireModel]) -> None:
        self.cls = cls
        self.name = cls.SCHEMA_NAME
        hints = typing.get_type_hints(cls, include_extras=True)
        parsers: list[tuple[str, _Fn, object, Callable[[], Any] | None]] = []
        kinds: list[tuple[str, _Kind]] = []
        for attribute in attrs.fields(typing.cast(Any, cls)):
            kind = _kind_of(hints[attribute.name])
            kinds.append((attribute.name, kind))
            default = attribute.default
            if default is attrs.NOTHING or attribute.metadata.get(WIRE_REQUIRED):
                parsers.append((attribute.name, kind.parse, _REQUIRED, None))
            elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                factory: Callable[[], Any] = default.factory
                parsers.append((attribute.name, kind.parse, None, factory))
            else:
                parsers.append((attribute.name, kind.parse, default, None))
        self.names = tuple(name for name, _ in kinds)
        self.name_set = frozenset(self.names)
        self.parsers = tuple(parsers)
        self.checkers = tuple((name, kind.check) for name, kind in kinds)
        self.omit_none = cls._OMIT_NONE
        self.has_check = cls._check is not WireModel._check
        # Fast paths. Parsing: every field present, or exactly the wire-required ones.
        self.values_of = _getter(operator.attrgetter, self.names)
        self.all_items = _getter(operator.itemgetter, self.names)
        self.all_parsers = tuple(kind.parse for _, kind in kinds)
        required = tuple(p for p in parsers if p[2] is _REQUIRED)
        self.required_names = tuple(p[0] for p in required)
        self.required_items = _getter(operator.itemgetter, self.required_names)
        self.required_parsers = tuple(p[1] for p in required)
        self.all_setters = _slot_setters(cls, self.names)
        self.required_setters = _slot_setters(cls, self.required_names)
        self.default_names = tuple(p[0] for p in parsers if p[2] is not _REQUIRED and not p[3])
        self.default_setters = _slot_setters(cls, self.default_names)
        self.default_values = tuple(p[2] for p in parsers if p[2] is not _REQUIRED and not p[3])
        self.factories = tuple((p[0], p[3]) for p in parsers if p[3] is not None)
        # Dumping: the values as they are, then the fields whose wire form differs.
        self.dumpers = tuple((name, kind.dump) for name, kind in kinds if kind.dump is not None)
        self.array_probes = tuple(
            (name, kind.holds_arrays) for name, kind in kinds if kind.holds_arrays is not None
        )
        self.may_hold_arrays = bool(self.array_probes)

    def parse_object(self, data: object) -> Any:
        if type(data) is dict:
            size = len(data)
            try:
                if size == len(self.names):  # every field, hence no unknown one
                    setters = self.all_setters
                    values = tuple(map(_call, self.all_parsers, self.all_items(data)))
                elif size == len(self.required_names):  # the required ones, nothing else
                    setters = self.required_setters
                    values = tuple(map(_call, self.required_parsers, self.required_items(data)))
                else:
                    return self.parse_fieldwise(data)
            except (KeyError, SchemaError):
                return self.parse_fieldwise(data)  # to name what is missing or wrong
            inst = _new(self.cls)
            _set_all(inst, setters, values)
            if setters is not self.all_setters:
                _set_all(inst, self.default_setters, self.default_values)
                for name, factory in self.factories:
                    _setattr(inst, name, factory())
            if self.has_check:
                inst._check()
            return inst
        return self.parse_fieldwise(data)

    def parse_fieldwise(self, data: object) -> Any:
        if not isinstance(data, dict | Mapping):
            raise type_error("an object", data)
        inst = _new(self.cls)
        get = data.get
        seen = 0
        for name, parse, default, factory in self.parsers:
            raw = get(name, MISSING)
            if raw is MISSING:
                if default is _REQUIRED:
                    raise SchemaError(name, MISSING, "required field is missing")
                _setattr(inst, name, default if factory is None else factory())
                continue
            seen += 1
            try:
                _setattr(inst, name, parse(raw))
            except SchemaError as exc:
                raise exc.prefixed(name) from None
        if seen != len(data):
            for key in data:
                if key not in self.name_set:
                    raise SchemaError(key_segment(str(key)), data[key], "unknown field")
        inst._check()
        return inst

    def validate(self, inst: WireModel) -> None:
        # Field by field: with a getattr and a check each, this beats any batched form.
        for name, check in self.checkers:
            value = getattr(inst, name)
            try:
                normalised = check(value)
            except SchemaError as exc:
                raise exc.prefixed(name) from None
            if normalised is not value:
                _setattr(inst, name, normalised)
        if self.has_check:
            inst._check()

    def dump(self, inst: WireModel) -> dict[str, Any]:
        pairs = zip(self.names, self.values_of(inst), strict=True)
        if self.omit_none:
            out = {name: value for name, value in pairs if value is not None}
            for name, dump in self.dumpers:
                if name in out:
                    out[name] = dump(out[name])
            return out
        out = dict(pairs)
        for name, dump in self.dumpers:
            value = out[name]
            if value is not None:
                out[name] = dump(value)
        return out

    def holds_arrays(self, inst: WireModel) -> bool:
        """Whether any free-form field of this instance (nested ones included) holds arrays."""
        return any(probe(getattr(inst, name)) for name, probe in self.array_probes)


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type[WireModel]) -> _Spec:
    try:
        return _SPECS[cls]
    except KeyError:
        spec = _SPECS[cls] = _Spec(cls)
        return spec


class WireModel:
    """Base of every wire message: strict `from_wire`, exact `to_wire`, validated construction.

    Subclasses are `@attrs.frozen(kw_only=True)` classes that set `SCHEMA_NAME` (the first
    segment of error paths; the envelope type for messages) and may override `_check` for
    rules across fields, raising `SchemaError` with the field's name as path.
    """

    __slots__ = ()

    SCHEMA_NAME: ClassVar[str] = "value"
    #: Leave fields that are None out of `to_wire()` (ProgressUpdate's optional fields).
    _OMIT_NONE: ClassVar[bool] = False

    def __attrs_post_init__(self) -> None:
        spec = _spec(type(self))
        try:
            spec.validate(self)
        except SchemaError as exc:
            raise exc.prefixed(spec.name) from None

    def _check(self) -> None:
        """Rules that involve several fields; the default has none."""

    @classmethod
    def from_wire(cls, data: Mapping[str, object]) -> Self:
        """Parse a wire dict strictly; `SchemaError` names the first field that is wrong."""
        spec = _spec(cls)
        try:
            result: Self = spec.parse_object(data)
        except SchemaError as exc:
            raise exc.prefixed(spec.name) from None
        return result

    def to_wire(self) -> dict[str, Any]:
        """The wire dict: exactly the schema's fields (numpy arrays stay in place for the codec)."""
        return _spec(type(self)).dump(self)

    @classmethod
    def may_hold_arrays(cls) -> bool:
        """Whether a message of this class can carry numpy arrays (free-form JSON fields)."""
        return _spec(cls).may_hold_arrays


def holds_arrays(model: WireModel) -> bool:
    """Whether this message holds numpy arrays now (a cheap test of its free-form fields only;
    the codec walks a body for arrays only when this is true)."""
    spec = _spec(type(model))
    return spec.may_hold_arrays and spec.holds_arrays(model)
