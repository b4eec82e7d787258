"""Typed values: the application's classes in the journal, by name, as data.

Theory of operation
-------------------
A value of a class the journal has no CBOR type for is written as CBOR tag 27
("an object with its type name and constructor arguments", in the IANA
registry): ``27([name, payload])``. The payload is plain journal data:

- a dataclass, an attrs class or a pydantic model: ``{field: value}`` of its
  fields (the ones its constructor takes), each value written the same way;
- an ``enum.Enum`` member: its value;
- the builtin types CBOR has no tag for, whose names are fixed: ``"tuple"``
  (a list: tuples stay tuples), ``"frozenset"`` (a set), ``"datetime.time"``
  (ISO 8601 text), ``"datetime.timedelta"`` (``[days, seconds, microseconds]``),
  ``"decimal.Decimal"`` (the text of a NaN or an infinity; finite decimals
  keep CBOR's tag 4).

The name of an application class is ``module.qualname``. Reading it back never
imports anything and never instantiates a class the code did not name: a name
resolves only to a class in the *named* registry, which holds the classes that
the annotations of every ``@durable.workflow`` and ``@durable.activity``
mention (``User``, ``list[User]``, ``User | None``, and the classes their fields
mention in turn), and those given to :func:`register`. The annotations are
read lazily, at the first name that is not known yet (a module's later classes
may not exist when its first decorator runs).

Writing a class that is not named is refused at once (``SerializationError``,
naming the class and the fix), so the journal only ever holds names the code
can read back, live and on replay alike. A tool that reads journals without
the application's code (``durable show``) gets a :class:`Shown` in place of
each such value: its name and fields, printed like the class.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .errors import SerializationError

#: The CBOR tag of a typed value (IANA: serialised language-independent object).
TAG = 27

#: The builtin types written by fixed names, and how each is rebuilt.
_BUILTIN_NAMES: dict[type, str] = {
    tuple: "tuple",
    frozenset: "frozenset",
    datetime.time: "datetime.time",
    datetime.timedelta: "datetime.timedelta",
    decimal.Decimal: "decimal.Decimal",
}

#: Application classes by name, once the code named them.
_named: dict[str, type] = {}
#: The same, by qualname alone (see _across_main).
_by_qualname: dict[str, list[type]] = {}
#: Decorated functions whose annotations have not been read yet.
_unread: list[Callable[..., Any]] = []
#: Called with each class as it is named (the encoder learns enums of int or str,
#: which CBOR's own encoders would otherwise write as plain numbers and text).
on_named: list[Callable[[type], None]] = []


def register(*classes: type) -> None:
    """Name classes for the journal beyond what annotations name (see the module docstring).

    A class that only travels unannotated (a signal payload a workflow reads
    without a type, a result of an activity annotated ``-> Any``) needs it.

    Raises:
        TypeError: a class durable cannot write (not a dataclass, an attrs class, a
            pydantic model or an ``Enum``).
    """
    for cls in classes:
        if not isinstance(cls, type) or _kind(cls) is None:
            raise TypeError(
                f"durable.register takes dataclasses, attrs classes, pydantic models and Enum "
                f"classes (got {cls!r})"
            )
        _name_class(cls)


def note_annotations(fn: Callable[..., Any]) -> None:
    """Remember a decorated function: its annotations name classes (read lazily)."""
    _unread.append(fn)


def name_of(cls: type) -> str:
    """The name a class is written under."""
    return f"{cls.__module__}.{cls.__qualname__}"


def problem(value: Any) -> str | None:
    """Why a value of an application class cannot be journaled (None: it can, or it is
    not one); the error path of the encoder, which names the part at fault."""
    if type(value) in _BUILTIN_NAMES or _kind(type(value)) is None:
        return None
    try:
        payload_of(value)
    except SerializationError as exc:
        return str(exc)
    return None


def fields(value: Any) -> dict[str, Any]:
    """The fields a value of an application class is written with ({} for an enum)."""
    shape = _shape(type(value))
    return {} if shape is None else _fields_of(value, shape)


def attributes(cls: type) -> tuple[str, ...]:
    """The attributes a value of ``cls`` is written with (none for a class durable does
    not write by its fields, or an enum)."""
    shape = _shape(cls)
    return () if shape is None else tuple(attribute for attribute, _, _ in shape.fields)


def is_typed(value: Any) -> bool:
    """Whether ``value`` is written as a typed value (tag 27)."""
    return type(value) in _BUILTIN_NAMES or _kind(type(value)) is not None


def payload_of(value: Any) -> tuple[str, Any]:
    """``(name, payload)`` of a typed value, for the encoder.

    Raises:
        SerializationError: an application class the code does not name.
    """
    cls = type(value)
    builtin = _BUILTIN_NAMES.get(cls)
    if builtin is not None:
        return builtin, _builtin_payload(value)
    shape = _shapes.get(cls) or _shape(cls)
    if shape is None or (_named.get(shape.name) is not cls and _lookup(shape.name) is not cls):
        raise SerializationError(
            f"has type {cls.__qualname__}, a class no workflow or activity annotation names, so "
            f"a journal could not read it back: annotate a parameter or result with it, or call "
            f"durable.register({cls.__qualname__})"
        )
    if shape.kind == "enum":
        return shape.name, value.value
    return shape.name, _fields_of(value, shape)


def rebuild(name: Any, payload: Any, *, shown: bool) -> Any:
    """The value a typed value's ``(name, payload)`` stands for.

    ``shown``: for a tool without the application's code, a class not named gives
    a :class:`Shown`. Otherwise it raises.

    Raises:
        ValueError: the name is not named by the code, or the payload does not fit
            its class (a field missing, a field the class no longer has).
        TypeError: the payload is not what its name needs (not durable's writing).
    """
    if not isinstance(name, str):
        raise TypeError(f"a typed value's name must be text (got {type(name).__name__})")
    if name in _BUILTINS_BY_NAME:
        return _BUILTINS_BY_NAME[name](payload)
    cls = _named.get(name) or _lookup(name)  # the dict first: this is replay's hot path
    shape = None if cls is None else _shapes.get(cls) or _shape(cls)
    if cls is None or shape is None:
        if shown:
            return Shown(name, payload)
        raise ValueError(
            f"it holds a value of class {name!r}, which no workflow, activity or durable.register "
            "in this process names: import the module that defines it (or register the class)"
        )
    if shape.kind == "enum":
        return cls(payload)
    if not isinstance(payload, Mapping):  # a frozendict where the value is a dict key
        raise TypeError(f"a value of class {name!r} holds {type(payload).__name__}, not its fields")
    return _construct(cls, shape, payload, name)


class Shown:
    """A typed value read without its class (a tool, not the workflow): name and fields.

    Prints like the class would (``User(name='ada', age=36)``) and compares by
    name and payload.
    """

    __slots__ = ("name", "payload")

    def __init__(self, name: str, payload: Any) -> None:
        self.name = name
        self.payload = payload

    def __repr__(self) -> str:
        short = self.name.rpartition(".")[2]
        if isinstance(self.payload, Mapping):
            inside = ", ".join(f"{key}={value!r}" for key, value in self.payload.items())
            return f"{short}({inside})"
        return f"{short}({self.payload!r})"  # an enum member, by its value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shown) and (self.name, self.payload) == (other.name, other.payload)

    def __hash__(self) -> int:
        return hash(self.name)


# --- the kinds of class ----------------------------------------------------------------


def _kind(cls: type) -> str | None:
    if isinstance(cls, enum.EnumMeta):
        return "enum"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if hasattr(cls, "__attrs_attrs__"):
        return "attrs"
    if _is_pydantic(cls):
        return "pydantic"
    return None


def _is_pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported here: a model exists only if it was
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


@attrs.frozen
class _Shape:
    """What durable needs of an application class, read once per class (every value
    written or read asks): its name, kind, and the fields its constructor takes."""

    name: str
    kind: str
    #: (attribute, constructor keyword, annotation) of each field; () for an enum.
    fields: tuple[tuple[str, str, Any], ...]
    keywords: frozenset[str]
    #: The keywords without a default, in field order.
    required: tuple[str, ...]


_shapes: dict[type, _Shape | None] = {}


def _shape(cls: type) -> _Shape | None:
    """The shape of ``cls``, or None for a class durable does not write by its fields."""
    try:
        return _shapes[cls]
    except KeyError:
        pass
    kind = _kind(cls)
    shape = None
    if kind is not None:
        fields, required = _read_fields(cls, kind)
        shape = _Shape(name_of(cls), kind, fields, frozenset(k for _, k, _ in fields), required)
    _shapes[cls] = shape
    return shape


def _read_fields(cls: type, kind: str) -> tuple[tuple[tuple[str, str, Any], ...], tuple[str, ...]]:
    """The constructor's fields of a dataclass, attrs class or pydantic model, and the
    keywords among them without a default (an enum has none)."""
    if kind == "dataclass":
        hints = _hints(cls)
        init = [f for f in dataclasses.fields(cls) if f.init]
        missing = (dataclasses.MISSING, dataclasses.MISSING)
        return (
            tuple((f.name, f.name, hints.get(f.name, f.type)) for f in init),
            tuple(f.name for f in init if (f.default, f.default_factory) == missing),
        )
    if kind == "attrs":
        hints = _hints(cls)  # resolves the text of `from __future__ import annotations`
        given = [a for a in attrs.fields(cls) if a.init]
        return (
            tuple((a.name, a.alias or a.name, hints.get(a.name, a.type)) for a in given),
            tuple(a.alias or a.name for a in given if a.default is attrs.NOTHING),
        )
    if kind == "pydantic":
        model_fields = cls.model_fields  # type: ignore[attr-defined]
        return (
            tuple((name, name, field.annotation) for name, field in model_fields.items()),
            tuple(name for name, field in model_fields.items() if field.is_required()),
        )
    return (), ()


def _fields_of(value: Any, shape: _Shape) -> dict[str, Any]:
    return {keyword: getattr(value, attribute) for attribute, keyword, _ in shape.fields}


def _construct(cls: type, shape: _Shape, payload: Mapping[str, Any], name: str) -> Any:
    if not payload.keys() <= shape.keywords:
        extra = next(key for key in payload if key not in shape.keywords)
        raise ValueError(
            f"a value of class {name!r} holds the field {extra!r}, which the class no longer has "
            "(keep the field, with a default, while journals that hold it may be read)"
        )
    try:
        if shape.kind == "pydantic":
            return cls.model_validate(dict(payload))  # type: ignore[attr-defined]
        return cls(**payload)
    except TypeError as exc:
        missing = [keyword for keyword in shape.required if keyword not in payload]
        field = f"the field {missing[0]!r}, which it lacks and which has no default" if missing else exc
        raise ValueError(f"a value of class {name!r} cannot be read into today's class: {field}") from None
    except Exception as exc:  # pydantic's ValidationError, a failing __post_init__...
        raise ValueError(
            f"a value of class {name!r} cannot be read into today's class: {type(exc).__name__}: {exc}"
        ) from None


# --- builtins ------------------------------------------------------------------------


def _builtin_payload(value: Any) -> Any:
    if type(value) is tuple:
        return list(value)
    if type(value) is frozenset:
        return set(value)
    if type(value) is datetime.time:
        return value.isoformat()
    if type(value) is datetime.timedelta:
        return [value.days, value.seconds, value.microseconds]
    return str(value)  # a Decimal NaN or infinity (finite ones have CBOR's tag 4)


def _timedelta(payload: Any) -> datetime.timedelta:
    if not (isinstance(payload, list) and len(payload) == 3 and all(type(p) is int for p in payload)):
        raise ValueError("a timedelta must be [days, seconds, microseconds]")
    return datetime.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])


def _text(build: Callable[[str], Any]) -> Callable[[Any], Any]:
    def rebuild_from_text(payload: Any) -> Any:
        if not isinstance(payload, str):
            raise TypeError(f"expected text, got {type(payload).__name__}")
        return build(payload)

    return rebuild_from_text


def _special_decimal(text: str) -> decimal.Decimal:
    value = decimal.Decimal(text)
    if value.is_finite():
        raise ValueError("a finite Decimal is written with CBOR's tag 4, not by name")
    return value


def _sequence(build: Callable[[Iterable[Any]], Any]) -> Callable[[Any], Any]:
    def rebuild_sequence(payload: Any) -> Any:
        if not isinstance(payload, list | set | frozenset | tuple):
            raise TypeError(f"expected a list, got {type(payload).__name__}")
        return build(payload)

    return rebuild_sequence


_BUILTINS_BY_NAME: dict[str, Callable[[Any], Any]] = {
    "tuple": _sequence(tuple),
    "frozenset": _sequence(frozenset),
    "datetime.time": _text(datetime.time.fromisoformat),
    "datetime.timedelta": _timedelta,
    "decimal.Decimal": _text(_special_decimal),
}


# --- the registry --------------------------------------------------------------------


def _lookup(name: str) -> type | None:
    cls = _named.get(name)
    if cls is None and _unread:
        _read_annotations()
        cls = _named.get(name)
    return cls if cls is not None else _across_main(name)


def _across_main(name: str) -> type | None:
    """A run started by ``python app.py`` names its classes ``__main__.User``, and a
    worker that imports ``app`` knows ``app.User`` (or the other way round): the one
    named class of that qualname, when one side is ``__main__``."""
    if name.startswith("__main__."):
        found = _by_qualname.get(name[len("__main__.") :], [])
    else:
        found = [
            cls
            for qualname, classes in _by_qualname.items()
            if name.endswith("." + qualname)
            for cls in classes
            if cls.__module__ == "__main__"
        ]
    return found[0] if len(found) == 1 else None


def read_annotations() -> None:
    """Name the classes of the decorated functions not read yet (before an encoding)."""
    if _unread:
        _read_annotations()


def _read_annotations() -> None:
    while _unread:
        fn = _unread.pop()
        for hint in _hints(fn).values():
            _name_hint(hint)


def _hints(thing: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(thing)
    except Exception:  # a forward reference that does not resolve: those names stay unnamed
        return dict(getattr(thing, "__annotations__", {}) or {})


def _name_hint(hint: Any, seen: set[int] | None = None) -> None:
    """Name every class a type hint mentions (``list[User | None]``...)."""
    seen = set() if seen is None else seen
    if id(hint) in seen:
        return
    seen.add(id(hint))
    if isinstance(hint, type) and _kind(hint) is not None:
        _name_class(hint, seen)
    for argument in typing.get_args(hint):  # list[User], User | None, dict[str, Money]...
        _name_hint(argument, seen)


def _name_class(cls: type, seen: set[int] | None = None) -> None:
    name = name_of(cls)
    if _named.get(name) is cls:
        return
    _named[name] = cls
    for tell in on_named:
        tell(cls)
    same = _by_qualname.setdefault(cls.__qualname__, [])
    if cls not in same:
        same.append(cls)
    shape = _shape(cls)
    for _, _, annotation in shape.fields if shape is not None else ():
        _name_hint(annotation, seen)
