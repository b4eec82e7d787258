"""User values (arguments, results, payloads) to and from CBOR, under the journal's rules.

The journal is data, never code: values are plain CBOR, and both directions
accept only the types and tags that journal contract v1 lists (see
``docs/journal-v1.md``). Anything else is refused with a
:class:`~durable.SerializationError` that names the offending value's type and
where it sits, before anything is written.

Values always travel through the journal's bytes, live or on replay, so a
workflow sees exactly the same value either way (a tuple comes back as a list,
both times).
"""

from __future__ import annotations

import contextvars
import datetime
import decimal
import enum
import functools
import operator
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import cbor2

from . import named, payloads
from .errors import JournalCorruptError, SerializationError

#: The largest journal record, in bytes (the frame's length field allows no more;
#: journal contract v1). Readers refuse a longer frame, so writers must never make one.
MAX_RECORD = 64 * 1024 * 1024
#: The largest encoded value (a call's arguments, a result, a payload): a record
#: holds one value and small fields (names, ids, numbers, an error capped by
#: ErrorInfo), so this leaves them a mebibyte.
MAX_VALUE = MAX_RECORD - 1024 * 1024
#: How deeply lists, dicts and sets may nest in a value: cbor2 refuses to decode
#: deeper data, so a deeper value would be acknowledged and then unreadable.
MAX_DEPTH = 400
# Encodings this short cannot nest deeper than MAX_DEPTH (a level takes a byte at least).
_SHALLOW = MAX_DEPTH - 2
#: How deeply a value may nest before it is encoded at all: cbor2's encoder recurses
#: on the C stack with no limit, and a list nested about 10,000 deep crashes the
#: process (SIGSEGV), every time the step is tried again. Values between MAX_DEPTH and
#: this are encoded and refused by the decoding check, as always.
_ENCODABLE_DEPTH = 2 * MAX_DEPTH
_SEQUENCES = (list, tuple, set, frozenset)

#: CBOR tags a journal may contain, and the Python types they stand for.
ALLOWED_TAGS = {
    0: "datetime (text)",
    1: "datetime (epoch)",
    2: "positive bignum",
    3: "negative bignum",
    4: "decimal.Decimal",
    37: "uuid.UUID",
    258: "set / frozenset",
    100: "datetime.date (days)",
    1004: "datetime.date (text)",
}
SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, aware datetime, "
    "date, time, timedelta, Decimal, UUID, Enum, and the dataclasses, attrs classes and pydantic "
    "models the code names"
)
_PLAIN = (type(None), bool, int, float, str, bytes, bytearray, memoryview)
_CONTAINERS = (list, tuple, dict, set, frozenset)
_TAGGED = (datetime.datetime, datetime.date, decimal.Decimal, uuid.UUID)
_NAMED_BUILTINS = (datetime.time, datetime.timedelta)

# Tags cbor2 decodes natively that the journal does not allow (the full list of
# cbor2 6's built-in tags, less ALLOWED_TAGS; a test rescans cbor2 for new ones).
# Refusing them keeps a crafted journal from building regexes, MIME messages,
# complex numbers, shared references...
_REFUSED_BUILTIN_TAGS = (5, 25, 28, 29, 30, 35, 36, 52, 54, 256, 260, 261, 43000, 55799)


def _refuse_tag(tag: int) -> Callable[..., NoReturn]:
    def refuse(*_: Any) -> NoReturn:
        raise cbor2.CBORDecodeError(f"CBOR tag {tag} is not allowed in a durable journal")

    return refuse


def unknown_tag(tag: Any, *_: Any) -> NoReturn:
    """The ``tag_hook`` of every journal decode: a tag contract v1 does not define is refused."""
    number = getattr(tag, "tag", tag)
    raise cbor2.CBORDecodeError(f"CBOR tag {number} is not allowed in a durable journal")


#: The message of the last typed value that today's code could not read (see load_stored).
_typed_failure: contextvars.ContextVar[str | None] = contextvars.ContextVar("typed_failure", default=None)


class TypedValueError(cbor2.CBORDecodeError):
    """A typed value that today's code cannot read: a class it does not name, a field
    the class no longer has or lacks. The journal is intact; the code changed."""


def _typed_decoder(*, shown: bool) -> Callable[[Any, bool], Any]:
    """cbor2's decoder of tag 27, a typed value: ``[name, payload]`` read into the class
    the code names (see named.py), or a ``named.Shown`` for a tool (``shown``)."""

    def decode(value: Any, _immutable: bool) -> Any:
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise cbor2.CBORDecodeError("a typed value (CBOR tag 27) must be [name, payload]")
        try:
            return named.rebuild(value[0], value[1], shown=shown)
        except (ValueError, TypeError) as exc:
            # cbor2 wraps what this raises in a plain CBORDecodeError (the type and the
            # cause are lost): load_stored learns of it here.
            _typed_failure.set(str(exc))
            raise TypedValueError(str(exc)) from None

    return decode


_SEMANTIC_DECODERS = {tag: _refuse_tag(tag) for tag in _REFUSED_BUILTIN_TAGS}


def _refuse_encoding(_encoder: Any, value: Any) -> None:
    raise SerializationError(f"{type(value).__qualname__} is not a journal type")


def _encode_set(encoder: Any, value: set[Any] | frozenset[Any]) -> None:
    # Sets iterate in an order that depends on the interpreter's hash seed; the
    # journal must not, or a replay in another process would see other arguments.
    encoder.encode_length(6, 258)
    encoder.encode(
        sorted(value, key=lambda item: cbor2.dumps(item, encoders=_ENCODERS, default=_encode_typed))
    )


def _encode_typed(encoder: Any, value: Any) -> None:
    """A value of a class the journal names (tag 27: ``[name, payload]``; see named.py)."""
    if not named.is_typed(value):
        if isinstance(value, tuple):  # a NamedTuple or another tuple subclass: a list, as always
            encoder.encode(list(value))
            return
        raise SerializationError(f"{type(value).__qualname__} is not a journal type")
    name, payload = named.payload_of(value)
    encoder.encode_length(6, named.TAG)
    encoder.encode([name, payload])


def _encode_memoryview(encoder: Any, value: memoryview) -> None:
    # cbor2 would write a memoryview as a list of ints; it is bytes, like bytearray.
    encoder.encode(value.tobytes())


def _encode_decimal(encoder: Any, value: decimal.Decimal) -> None:
    if not value.is_finite():  # NaN, Infinity: by name (tag 27), which tag 4 cannot hold
        _encode_typed(encoder, value)
        return
    sign, digits, exponent = value.as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    encoder.encode_length(6, 4)
    encoder.encode([exponent, -mantissa if sign else mantissa])


# The types the journal encodes its own way, and values cbor2 would encode that
# the decoder would still accept but the journal does not allow. Other types cbor2
# encodes natively (Fraction, IP addresses, regexes, complex...) get tags that the
# decoder refuses, so the verification in dumps() refuses them.
_ENCODERS: dict[type, Callable[[Any, Any], None]] = {
    # Before the types they subclass: cbor2 takes the first encoder whose type matches.
    enum.Enum: _encode_typed,
    tuple: _encode_typed,
    frozenset: _encode_typed,
    datetime.time: _encode_typed,
    datetime.timedelta: _encode_typed,
    set: _encode_set,
    decimal.Decimal: _encode_decimal,
    memoryview: _encode_memoryview,
    cbor2.CBORTag: _refuse_encoding,
    cbor2.CBORSimpleValue: _refuse_encoding,
    type(cbor2.undefined): _refuse_encoding,
}


def _learn_enum(cls: type) -> None:
    # An enum of int or str: cbor2 would take its int or str encoder before ours (it
    # looks for the first type the value is an instance of); its exact type comes first.
    if isinstance(cls, enum.EnumMeta):
        _ENCODERS[cls] = _encode_typed


named.on_named.append(_learn_enum)


# CBOR without a byte in 0xc0-0xdb has no tag (and every tag-free encoding that
# cbor2 writes decodes), so verification can be skipped; that is the common case
# (ASCII text, small numbers) and saves a decode per value on the hot path.
_MAY_HOLD_TAGS = re.compile(b"[\xc0-\xdb]").search


def dumps(value: Any) -> bytes:
    """Encode a journal-safe value; raise :class:`SerializationError` otherwise.

    Every encoding that could fail to decode (it holds a tag, or it is long enough
    to nest too deeply) is decoded once more before it is used, so the journal can
    never hold a value that replay would fail to read. An encoding over
    :data:`MAX_VALUE` bytes is refused: its record could not be read back.
    """
    named.read_annotations()  # the enums they name must be known before cbor2 sees one
    try:
        _check_nesting(value)
        data = cbor2.dumps(value, encoders=_ENCODERS, default=_encode_typed)
        if len(data) > _SHALLOW or _MAY_HOLD_TAGS(data):
            check_size(len(data))
            loads(data)
    except SerializationError as exc:
        if exc.size is not None:
            raise
        raise _explain(value, exc) from None
    except Exception as exc:  # cbor2's errors, UnicodeEncodeError, RecursionError...
        raise _explain(value, exc) from None
    return data


def _check_nesting(value: Any) -> None:
    """Refuse a value whose containers nest deeper than cbor2's encoder can go.

    Depth first, pushing only what can hold more (containers, application classes'
    fields): a flat value costs a look at each item, and the work grows with the
    containers, never past _ENCODABLE_DEPTH levels."""
    if type(value) in _FLAT:
        return
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            held: Any = item.values()  # keys: text, numbers, or tuples (walked by the encoder)
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            held = item
        else:
            held = _held_by(item)
        if depth == _ENCODABLE_DEPTH:
            raise SerializationError(
                f"it nests more than {_ENCODABLE_DEPTH} levels deep (lists, dicts, sets, fields); a "
                f"journal value nests at most {MAX_DEPTH} levels"
            )
        for inner in held:
            if type(inner) not in _FLAT:
                push((inner, depth + 1))


def _held_by(item: Any) -> Any:
    """What a value of another type holds that the encoder writes: a container subclass's
    items, an application class's fields (nothing, for anything else); how to get them is
    found once per type."""
    kind = type(item)
    held = _HELD.get(kind)
    if held is None:
        held = _HELD[kind] = _holding(kind)
    return held(item)


def _holding(kind: type) -> Callable[[Any], Any]:
    if issubclass(kind, dict):
        return dict.values
    if issubclass(kind, list | tuple | set | frozenset):
        return _itself
    names = named.attributes(kind)
    if not names:
        return _nothing
    fields = operator.attrgetter(*names)
    return fields if len(names) > 1 else lambda item: (fields(item),)


def _itself(item: Any) -> Any:
    return item


def _nothing(item: Any) -> tuple[()]:
    return ()


#: How to get what a value of each type seen holds (see _held_by).
_HELD: dict[type, Callable[[Any], Any]] = {}


def check_size(size: int) -> None:
    """Refuse an encoded value of ``size`` bytes if it is over :data:`MAX_VALUE`."""
    if size > MAX_VALUE:
        raise SerializationError(
            f"it encodes to {size:,} bytes, over the journal's limit of {MAX_VALUE:,} bytes for one "
            f"value (a record holds at most {MAX_RECORD // (1024 * 1024)} MiB); keep large data "
            "outside the journal (a file, a bucket, a database row) and pass a reference to it",
            size=size,
            limit=MAX_VALUE,
        )


#: Decode bytes that :func:`dumps` produced. Raises ``cbor2.CBORDecodeError`` on bad data,
#: and for a typed value this process cannot read into a class its code names.
#: The tags a journal value may hold, and how each decodes (see :func:`loads`).
VALUE_DECODERS: dict[int, Callable[..., Any]] = {**_SEMANTIC_DECODERS, named.TAG: _typed_decoder(shown=False)}


def loads(
    data: bytes,
    _loads: Callable[..., Any] = cbor2.loads,
    _decoders: dict[int, Callable[..., Any]] = VALUE_DECODERS,
    _hook: Callable[..., Any] = unknown_tag,
) -> Any:
    """Decode a journal value: ``cbor2.loads`` with durable's tags, anything else refused.

    Replay decodes every record and every recorded value through this: the defaults
    bind its globals as locals, and the keywords are passed here rather than kept in
    a ``functools.partial``, which merges them into a new dict on every call (about
    0.2 us of a 0.7 us decode).
    """
    return _loads(data, semantic_decoders=_decoders, tag_hook=_hook)


def _encoded(value: Any, _immutable: bool) -> payloads.Encoded:
    """A sealed payload (see payloads.py) shown without its codec: ``<encoded by NAME>``."""
    try:
        return payloads.Encoded(payloads.codec_names(value))
    except ValueError as exc:
        raise cbor2.CBORDecodeError(str(exc)) from None


_loads_shown: Callable[[bytes], Any] = functools.partial(
    cbor2.loads,
    semantic_decoders={
        **_SEMANTIC_DECODERS,
        named.TAG: _typed_decoder(shown=True),
        payloads.TAG: _encoded,
    },
    tag_hook=unknown_tag,
)


def loads_shown(data: bytes) -> Any:
    """Decode a journal value for a tool that shows journals without the application's
    code (``durable show``): a typed value of a class the code does not name comes back
    as a stand-in that prints like the class, ``Customer(name='ada', tier=Tier('pro'))``,
    and a payload still encoded by a codec as ``<encoded by NAME>``.
    Raises ``cbor2.CBORDecodeError`` on bad data."""
    return _loads_shown(data)


def loads_value(data: bytes) -> Any:
    """Decode a journal value (CBOR that :func:`dumps` produced), accepting only the
    tags journal contract v1 defines. Raises ``cbor2.CBORDecodeError`` on bad data."""
    return loads(data)


def _encode_loosely(encoder: Any, value: Any) -> None:
    if type(value) is tuple:
        encoder.encode(list(value))
    elif type(value) is frozenset:
        _encode_set(encoder, value)
    else:
        _encode_typed(encoder, value)


_LOOSE_ENCODERS = {**_ENCODERS, tuple: _encode_loosely, frozenset: _encode_loosely}


def same_value(recorded: bytes, today: bytes) -> bool:
    """Whether a value the journal holds and today's encoding of a value are the same.

    Equal bytes are (the hot path). Else both are read with today's code and written
    again with tuples as lists and frozensets as sets: a journal written before
    tuples stayed tuples, or before a field with a default was added to a class,
    holds the same call as today's code makes (journal contract v1, typed values).
    """
    if recorded == today:
        return True
    try:
        return _loosely(loads(recorded)) == _loosely(loads(today))
    except Exception:  # one of them does not read into today's classes: not the same
        return False


def _loosely(value: Any) -> bytes:
    data: bytes = cbor2.dumps(value, encoders=_LOOSE_ENCODERS, default=_encode_typed)
    return data


def load_stored(data: bytes, *, run_id: str, what: str) -> Any:
    """Decode a value the journal of ``run_id`` holds (``what`` it is, for the error).

    Its record passed the checksum, so a value that does not decode (a tag the
    journal does not allow, nesting too deep, bytes that are not CBOR) was
    written by something other than durable: that run's ``JournalCorruptError``,
    never a raw decoder error.
    """
    _typed_failure.set(None)
    try:
        return loads(data)
    except Exception as exc:
        if payloads.is_sealed(data):  # the store was opened without the codec that wrote it
            raise payloads.missing_codec(data, run_id=run_id, what=what) from None
        typed = _typed_failure.get()
        if typed is not None:
            raise SerializationError(
                f"run {run_id!r}: {what} cannot be read with today's code: {typed}; the journal is "
                "intact, and the run goes on once the code reads it again (see 'Change a class without "
                "breaking runs in flight' in docs/howto/types.md)"
            ) from None
        raise JournalCorruptError(f"run {run_id!r}", None, f"{what}: cannot be decoded ({exc})") from None


def load_call(data: bytes, *, run_id: str, what: str) -> tuple[list[Any], dict[str, Any]]:
    """Decode a call's ``[args, kwargs]`` the journal of ``run_id`` holds."""
    call = load_stored(data, run_id=run_id, what=what)
    if type(call) is not list or len(call) != 2 or type(call[0]) is not list or type(call[1]) is not dict:
        raise JournalCorruptError(f"run {run_id!r}", None, f"{what} are not [arguments, keyword arguments]")
    return call[0], call[1]


#: Values of these exact types always encode, and decode back, without a tag.
_SCALARS = frozenset({int, str, bytes, float, bool, type(None)})
#: Types whose values hold nothing that could nest (see _check_nesting): the scalars, and
#: what the encoder writes as a scalar or a short fixed structure.
_FLAT = _SCALARS | {
    decimal.Decimal,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
}


#: ``[args, kwargs]``'s array header and the header of ``args``, by the number of args.
_CALL_HEADS = tuple(b"\x82" + bytes((0x80 | count,)) for count in range(24))


def encode_plain_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes | None:
    """The fast path of :func:`encode_call` for the common call of a few scalars; None otherwise.

    Produces the same bytes as the general path: a definite-length array is its
    header followed by its items.
    """
    if kwargs or len(args) > 23:
        return None
    for arg in args:
        if type(arg) not in _SCALARS or (type(arg) is int and not -(2**64) <= arg < 2**64):
            return None
    try:
        if len(args) == 1:  # the most common call: one join and one concatenation less
            data = _CALL_HEADS[1] + cbor2.dumps(args[0]) + b"\xa0"
        else:
            data = _CALL_HEADS[len(args)] + b"".join(map(cbor2.dumps, args)) + b"\xa0"
    except Exception:  # a str with a lone surrogate: the general path names it
        return None
    return data if len(data) <= MAX_VALUE else None


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any], *, what: str) -> bytes:
    """Encode a call's arguments as ``[args, kwargs]``, naming the bad argument on failure."""
    if len(kwargs) > 1:
        kwargs = dict(sorted(kwargs.items()))  # the same call encodes the same, however written
    try:
        return dumps([list(args), kwargs])  # the call's own tuple is a list, as always
    except SerializationError as exc:
        too_large = exc
    # Name the argument at fault (encoding each one alone, on the error path only).
    for index, arg in enumerate(args):
        encode_value(arg, what=f"argument {index + 1} of {what}")
    for key, arg in kwargs.items():
        encode_value(arg, what=f"argument {key}= of {what}")
    if too_large.size is not None:  # every one fits, but not all together
        raise SerializationError(
            f"the arguments of {what} cannot be stored in the journal together: {too_large}",
            size=too_large.size,
            limit=too_large.limit,
        )
    raise SerializationError(f"the arguments of {what} cannot be stored in the journal: {too_large}")


def encode_value(value: Any, *, what: str, name: str | None = None) -> bytes:
    """Encode one value (a result, a payload), naming ``what`` it is on failure.

    ``name``, when given, is quoted after ``what`` ("the result of activity 'charge'"):
    on the hot path the message is then only formatted when it is needed.
    """
    try:
        if type(value) in _SCALARS and (type(value) is not int or -(2**64) <= value < 2**64):
            data: bytes = cbor2.dumps(value)
            if len(data) > MAX_VALUE:
                check_size(len(data))
            return data
        return dumps(value)
    except SerializationError as exc:
        raise SerializationError(
            f"{_what(what, name)} cannot be stored in the journal: {exc}", size=exc.size, limit=exc.limit
        ) from None
    except Exception as exc:  # a scalar cbor2 refuses: a str holding a lone surrogate
        raise SerializationError(
            f"{_what(what, name)} cannot be stored in the journal: {_explain(value, exc)}"
        ) from None


def _what(what: str, name: str | None) -> str:
    return what if name is None else f"{what} {name!r}"


def _explain(value: Any, exc: Exception) -> SerializationError:
    """The error that says which part of ``value`` the journal cannot hold. It never
    raises itself: user objects whose ``repr`` raises only make the path vaguer."""
    try:
        return _explain_path(value, exc)
    except Exception as failure:
        return SerializationError(
            f"it cannot be encoded in CBOR ({_safe_text(exc)}); finding the part at fault failed too "
            f"({type(failure).__name__})"
        )


def _safe_text(thing: object) -> str:
    """``str(thing)``, or its type's name when that raises."""
    try:
        return "".join([str(thing)])  # a str subclass becomes a plain str
    except Exception:
        return f"<{type(thing).__name__}>"


def _safe_repr(thing: object) -> str:
    """``repr(thing)`` shortened, or a description when it raises (an int too large to
    print, a user object's broken ``__repr__``)."""
    try:
        text = "".join([repr(thing)])
    except Exception:
        return f"<{type(thing).__name__} that cannot be shown>"
    return text if len(text) <= 60 else text[:57] + "..."


def _explain_path(value: Any, exc: Exception) -> SerializationError:
    path, bad, why = _find_unencodable(value, "value")
    if bad is None:
        return SerializationError(f"it cannot be encoded in CBOR ({_safe_text(exc)})")
    allowed = f" (allowed: {SUPPORTED})" if why.endswith("not a journal type") else ""
    if len(path) > 160:  # a deep path: its start and its end say where
        path = f"{path[:80]}...{path[-60:]}"
    return SerializationError(f"{path} {why}{allowed}")


def _find_unencodable(
    value: Any, path: str, depth: int = 0, inside: frozenset[int] = frozenset()
) -> tuple[str, Any, str]:
    """Walk ``value`` to the first part the journal cannot hold (only on the error path).

    ``inside`` holds the ids of the containers on the way down, so a container
    that holds itself is named instead of walked forever; ``depth`` stops the walk
    where the decoder would stop.
    """
    problem = _problem(value)
    if problem is not None:
        return path, value, problem
    if not isinstance(value, _CONTAINERS):
        return _find_in_fields(value, path, depth, inside)
    if id(value) in inside:
        return path, value, "is a container that holds itself (a cycle), which the journal cannot hold"
    if depth >= MAX_DEPTH - 2:  # the call's [args, kwargs] takes two levels
        return (
            path,
            value,
            (
                f"nests containers too deeply for a journal to read back (at most {MAX_DEPTH} levels; "
                f"{MAX_DEPTH - 2} for a call's arguments, whose [args, kwargs] take two)"
            ),
        )
    inside = inside | {id(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            shown = _safe_repr(key)
            for sub_path, sub in ((f"{path} key {shown}", key), (f"{path}[{shown}]", item)):
                found = _find_unencodable(sub, sub_path, depth + 1, inside)
                if found[1] is not None:
                    return found
    else:
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{index}]", depth + 1, inside)
            if found[1] is not None:
                return found
    return path, None, ""


def _find_in_fields(value: Any, path: str, depth: int, inside: frozenset[int]) -> tuple[str, Any, str]:
    """:func:`_find_unencodable` in the fields of a dataclass, attrs class or pydantic model."""
    for field, item in named.fields(value).items():
        found = _find_unencodable(item, f"{path}.{field}", depth + 1, inside)
        if found[1] is not None:
            return found
    return path, None, ""


def _problem(value: Any) -> str | None:
    """Why this one value (not its contents) cannot be journaled, or None."""
    if isinstance(value, datetime.datetime):
        offset = value.utcoffset()
        if offset is None:
            return (
                "has type datetime without a timezone, which is not a journal type "
                "(use a timezone-aware datetime)"
            )
        if offset.total_seconds() % 60:
            return "is a datetime whose UTC offset is not a whole number of minutes"
        return None
    if isinstance(value, str):
        try:
            str.encode(value)  # not value.encode: a subclass may override it
        except UnicodeEncodeError as exc:
            return (
                f"is a str holding a lone surrogate ({value[exc.start]!r} at index {exc.start}), which "
                "UTF-8, and so the journal, cannot hold (decode the bytes it came from with "
                "errors='replace', or keep them as bytes)"
            )
    if isinstance(value, _PLAIN + _TAGGED + _CONTAINERS + _NAMED_BUILTINS):
        return None
    if named.is_typed(value):
        return named.problem(value)
    return f"has type {type(value).__qualname__}, which is not a journal type"
