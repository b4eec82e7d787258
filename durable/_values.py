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

import datetime
import decimal
import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import cbor2

from ._errors import SerializationError

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
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "datetime.datetime (timezone-aware), datetime.date, decimal.Decimal, uuid.UUID"
)
_PLAIN = (type(None), bool, int, float, str, bytes, bytearray)
_CONTAINERS = (list, tuple, dict, set, frozenset)
_TAGGED = (datetime.datetime, datetime.date, decimal.Decimal, uuid.UUID)

# Tags cbor2 decodes natively that the journal does not allow (the full list of
# cbor2 6's built-in tags, less ALLOWED_TAGS; a test rescans cbor2 for new ones).
# Refusing them keeps a crafted journal from building regexes, MIME messages,
# complex numbers, shared references...
_REFUSED_BUILTIN_TAGS = (5, 25, 28, 29, 30, 35, 36, 52, 54, 256, 260, 261, 43000, 55799)


def _refuse_tag(tag: int) -> Callable[..., NoReturn]:
    def refuse(*_: Any) -> NoReturn:
        raise cbor2.CBORDecodeError(f"CBOR tag {tag} is not allowed in a durable journal")

    return refuse


def _unknown_tag(tag: Any, *_: Any) -> NoReturn:
    number = getattr(tag, "tag", tag)
    raise cbor2.CBORDecodeError(f"CBOR tag {number} is not allowed in a durable journal")


_SEMANTIC_DECODERS = {tag: _refuse_tag(tag) for tag in _REFUSED_BUILTIN_TAGS}


def _refuse_encoding(_encoder: Any, value: Any) -> None:
    raise SerializationError(f"{type(value).__qualname__} is not a journal type")


def _encode_set(encoder: Any, value: set[Any] | frozenset[Any]) -> None:
    # Sets iterate in an order that depends on the interpreter's hash seed; the
    # journal must not, or a replay in another process would see other arguments.
    encoder.encode_length(6, 258)
    encoder.encode(sorted(value, key=lambda item: cbor2.dumps(item, encoders=_ENCODERS)))


def _encode_decimal(encoder: Any, value: decimal.Decimal) -> None:
    if not value.is_finite():
        raise SerializationError(f"Decimal({str(value)!r}) is not finite, which a journal cannot hold")
    sign, digits, exponent = value.as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    encoder.encode_length(6, 4)
    encoder.encode([exponent, -mantissa if sign else mantissa])


# The types the journal encodes its own way, and values cbor2 would encode that
# the decoder would still accept but the journal does not allow. Other types cbor2
# encodes natively (Fraction, IP addresses, regexes, complex...) get tags that the
# decoder refuses, so the verification in dumps() refuses them.
_ENCODERS: dict[type, Callable[[Any, Any], None]] = {
    set: _encode_set,
    frozenset: _encode_set,
    decimal.Decimal: _encode_decimal,
    cbor2.CBORTag: _refuse_encoding,
    cbor2.CBORSimpleValue: _refuse_encoding,
    type(cbor2.undefined): _refuse_encoding,
}


# CBOR without a byte in 0xc0-0xdb has no tag (and every tag-free encoding that
# cbor2 writes decodes), so verification can be skipped; that is the common case
# (ASCII text, small numbers) and saves a decode per value on the hot path.
_MAY_HOLD_TAGS = re.compile(b"[\xc0-\xdb]").search


def dumps(value: Any) -> bytes:
    """Encode a journal-safe value; raise :class:`SerializationError` otherwise.

    Every encoding is decoded once more before it is used, so the journal can
    never hold a value that replay would fail to read.
    """
    try:
        data = cbor2.dumps(value, encoders=_ENCODERS)
        if _MAY_HOLD_TAGS(data):
            loads(data)
    except Exception as exc:
        raise _explain(value, exc) from None
    return data


#: Decode bytes that :func:`dumps` produced. Raises ``cbor2.CBORDecodeError`` on bad data.
loads: Callable[[bytes], Any] = functools.partial(
    cbor2.loads, semantic_decoders=_SEMANTIC_DECODERS, tag_hook=_unknown_tag
)


def loads_value(data: bytes) -> Any:
    """Decode a journal value (CBOR that :func:`dumps` produced), accepting only the
    tags journal contract v1 defines. Raises ``cbor2.CBORDecodeError`` on bad data."""
    return loads(data)


#: Values of these exact types always encode, and decode back, without a tag.
_SCALARS = frozenset({int, str, bytes, float, bool, type(None)})


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
    return b"\x82" + bytes((0x80 | len(args),)) + b"".join(map(cbor2.dumps, args)) + b"\xa0"


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any], *, what: str) -> bytes:
    """Encode a call's arguments as ``[args, kwargs]``, naming the bad argument on failure."""
    if len(kwargs) > 1:
        kwargs = dict(sorted(kwargs.items()))  # the same call encodes the same, however written
    try:
        return dumps([args, kwargs])
    except SerializationError:
        pass
    for index, arg in enumerate(args):
        encode_value(arg, what=f"argument {index + 1} of {what}")
    for key, arg in kwargs.items():
        encode_value(arg, what=f"argument {key}= of {what}")
    raise SerializationError(f"the arguments of {what} cannot be stored in the journal")


def encode_value(value: Any, *, what: str) -> bytes:
    """Encode one value (a result, a payload), naming ``what`` it is on failure."""
    if type(value) in _SCALARS and (type(value) is not int or -(2**64) <= value < 2**64):
        return cbor2.dumps(value)
    try:
        return dumps(value)
    except SerializationError as exc:
        raise SerializationError(f"{what} cannot be stored in the journal: {exc}") from None


def _explain(value: Any, exc: Exception) -> SerializationError:
    path, bad, why = _find_unencodable(value, "value")
    if bad is None:
        return SerializationError(f"it cannot be encoded in CBOR ({exc})")
    return SerializationError(f"{path} {why} (allowed: {SUPPORTED})")


def _find_unencodable(value: Any, path: str) -> tuple[str, Any, str]:
    """Walk ``value`` to the first part the journal cannot hold (only on the error path)."""
    problem = _problem(value)
    if problem is not None:
        return path, value, problem
    if isinstance(value, dict):
        for key, item in value.items():
            for sub_path, sub in ((f"{path} key {key!r}", key), (f"{path}[{key!r}]", item)):
                found = _find_unencodable(sub, sub_path)
                if found[1] is not None:
                    return found
    elif isinstance(value, _CONTAINERS):
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{index}]")
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
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        return f"is the non-finite Decimal({str(value)!r}), which the journal cannot hold"
    if isinstance(value, _PLAIN + _TAGGED + _CONTAINERS):
        return None
    return f"has type {type(value).__qualname__}, which is not a journal type"
