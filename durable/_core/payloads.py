"""Payload codecs: what a store's ``codec=`` does to the bytes of user values.

A payload codec is any object with a ``name`` and two functions from bytes to
bytes, ``encode`` and ``decode`` (:class:`PayloadCodec`); ``durable.codecs``
ships compression and authenticated encryption. A store given one (or a list,
applied in order) *seals* every payload of every event it writes (arguments,
results, side-effect values, signal payloads) and *unseals* them when it reads,
so the replay core, the executor and the determinism check only ever see the
plain CBOR of a value. Error messages, names and ids stay clear: tools list and
explain runs without the key.

A sealed payload is itself one CBOR item, so a record's payload field stays a
byte string and the record format is unchanged (journal contract v1, section
8.2, an additive change)::

    tag 1685418593 ([codec name, ...], encoded bytes)

The names are listed in the order the codecs were applied when writing; reading
undoes them in reverse, finding each codec by its name among the store's (so a
codec may be added to a store later: payloads written before it stay plain, and
read as they are). Without the codec, a tool shows ``<encoded by NAME>``
(:class:`Encoded`) and a runtime refuses the run with a
:class:`~durable.PayloadCodecError` naming the codec it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import cbor2

from . import events as ev
from .errors import PayloadCodecError

#: The CBOR tag of a sealed payload: the bytes ``dura`` read as a number.
TAG = 0x64757261
#: How every sealed payload begins (a four-byte tag number, major type 6).
PREFIX = b"\xda" + TAG.to_bytes(4, "big")

# The payload fields of each event type; every other field stays clear.
_FIELDS: dict[type[Any], str] = {
    ev.RunStarted: "args",
    ev.ActivityScheduled: "args",
    ev.ActivityCompleted: "result",
    ev.SideEffectRecorded: "value",
    ev.ChildStarted: "args",
    ev.ChildCompleted: "result",
    ev.SignalReceived: "payload",
    ev.RunContinuedAsNew: "args",
    ev.RunCompleted: "result",
    ev.AttemptHeartbeat: "details",
}


@runtime_checkable
class PayloadCodec(Protocol):
    """What ``codec=`` takes: a name and two functions from bytes to bytes.

    ``decode(encode(data)) == data`` for all bytes. The name is written beside every
    payload the codec encoded, so it must stay the same for as long as journals
    written with it are kept (the class may change: it is found by this name).
    """

    name: str

    def encode(self, data: bytes) -> bytes:
        """The bytes to store for the payload ``data``."""
        ...

    def decode(self, data: bytes) -> bytes:
        """The payload that ``encode`` turned into ``data``; raise if it is not one."""
        ...


class Encoded:
    """A sealed payload read without its codec (a tool): prints as ``<encoded by NAME>``."""

    __slots__ = ("names",)

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __repr__(self) -> str:
        return f"<encoded by {'+'.join(self.names)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encoded) and self.names == other.names

    def __hash__(self) -> int:
        return hash(self.names)


def is_sealed(data: bytes) -> bool:
    """Whether a payload field holds a sealed payload."""
    return data.startswith(PREFIX)


def codec_names(value: Any) -> tuple[str, ...]:
    """The codec names of a sealed payload's tag content; ValueError if it is not ``[names, bytes]``."""
    if not (isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], bytes)):
        raise ValueError("a sealed payload must be [codec names, encoded bytes]")
    names = value[0]
    if not (isinstance(names, list | tuple) and names and all(type(n) is str for n in names)):
        raise ValueError("a sealed payload must name the codecs that encoded it")
    return tuple(names)


def missing_codec(data: bytes, *, run_id: str, what: str) -> PayloadCodecError:
    """The error for a sealed payload that reached a reader without a codec."""
    try:
        names = codec_names(cbor2.loads(data).value)
    except Exception:
        names = ("?",)
    return PayloadCodecError(
        f"run {run_id!r} holds {what} encoded by {'+'.join(names)!r}, and this store was opened "
        "without that codec; pass the same codec= to the store (on the command line: "
        "--codec MODULE:ATTR)",
        codec="+".join(names),
        run_id=run_id,
    )


def payloads_from(codec: PayloadCodec | Sequence[PayloadCodec] | None) -> Payloads | None:
    """The :class:`Payloads` of a store's ``codec=`` argument (None: no codec), checked."""
    if codec is None:
        return None
    codecs = tuple(codec) if isinstance(codec, list | tuple) else (codec,)
    if not codecs:
        return None
    for each in codecs:
        if isinstance(each, type):
            raise TypeError(
                f"codec= takes codec objects, not classes: pass {each.__name__}(), not {each.__name__}"
            )
        name = getattr(each, "name", None)
        if not (isinstance(name, str) and name) or not (
            callable(getattr(each, "encode", None)) and callable(getattr(each, "decode", None))
        ):
            raise TypeError(
                f"codec= takes an object with a non-empty `name` (str) and `encode(bytes) -> bytes` "
                f"and `decode(bytes) -> bytes` methods, or a list of them; got a {type(each).__name__}"
            )
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise ValueError(f"codec= lists the codec name {_first_repeated(names)!r} twice; names must differ")
    return Payloads(codecs)


def _first_repeated(names: list[str]) -> str:
    return next(name for at, name in enumerate(names) if name in names[:at])


def _replacer(cls: type[Any], field: str) -> Callable[[Any, bytes], Any]:
    """A function making a copy of an event of ``cls`` with ``field`` replaced: the
    constructor called with the fields in order (attrs.evolve costs several times more,
    and replay with a codec does this for every payload)."""
    names = [f.name for f in attrs.fields(cls)]
    arguments = ", ".join("value" if name == field else f"event.{name}" for name in names)
    namespace: dict[str, Any] = {"cls": cls}
    # The source holds nothing but the event class's own field names (as codec.py does).
    exec(f"def replace(event, value):\n    return cls({arguments})\n", namespace)
    replace: Callable[[Any, bytes], Any] = namespace["replace"]
    return replace


_REPLACERS = {cls: (field, _replacer(cls, field)) for cls, field in _FIELDS.items()}


def _byte_string_head(size: int) -> bytes:
    """The head of a CBOR byte string of ``size`` bytes (major type 2)."""
    if size < 24:
        return bytes([0x40 | size])
    for code, width in ((0x58, 1), (0x59, 2), (0x5A, 4), (0x5B, 8)):
        if size < 1 << (8 * width):
            return bytes([code]) + size.to_bytes(width, "big")
    raise ValueError(f"a payload of {size} bytes is too large")


class Payloads:
    """A store's payload codecs, applied in order when writing and undone when reading.

    Made by :func:`payloads_from`. Sealing writes the CBOR of section 8.2 directly:
    every sealed payload of one store starts with the same bytes (the tag and the
    codec names), worked out once; reading takes the same fast path when a payload
    starts with them, and the general one (any codec names, any order) otherwise.
    """

    __slots__ = ("_by_name", "_head", "codecs")

    def __init__(self, codecs: tuple[PayloadCodec, ...]) -> None:
        self.codecs = codecs
        self._by_name = {codec.name: codec for codec in codecs}
        # tag, array of 2, the names: then the byte string of what the codecs returned.
        self._head = PREFIX + b"\x82" + cbor2.dumps([codec.name for codec in codecs])

    def __repr__(self) -> str:
        return f"Payloads({self.name!r})"

    @property
    def name(self) -> str:
        """The codec names joined with ``+``, as messages and ``<encoded by ...>`` show them."""
        return "+".join(c.name for c in self.codecs)

    def seal(self, event: Any) -> Any:
        """``event`` with its payload sealed (itself if it has none, or it is sealed already)."""
        found = _REPLACERS.get(type(event))
        if found is None:
            return event
        field, replace = found
        data = getattr(event, field)
        if data.startswith(PREFIX):
            return event
        return replace(event, self.seal_bytes(data))

    def seal_bytes(self, data: bytes) -> bytes:
        """A payload's bytes sealed: each codec applied in order, in the tag of section 8.2."""
        for codec in self.codecs:
            data = _checked(codec, "encode", codec.encode, data)
        return b"".join((self._head, _byte_string_head(len(data)), data))

    def unseal(self, event: Any, run_id: str) -> Any:
        """``event`` with its payload unsealed (a plain payload is left as it is).

        Raises:
            PayloadCodecError: a codec it names is not among this store's, or one
                refuses its bytes (a wrong key, tampered data).
        """
        found = _REPLACERS.get(type(event))
        if found is None:
            return event
        field, replace = found
        data = getattr(event, field)
        if not data.startswith(PREFIX):
            return event
        return replace(event, self.unseal_bytes(data, run_id))

    def unseal_all(self, events: list[Any], run_id: str) -> list[Any]:
        """Every event of a run's journal (or inbox) unsealed; see :meth:`unseal`."""
        unseal = self.unseal
        return [unseal(event, run_id) for event in events]

    def unseal_bytes(self, data: bytes, run_id: str) -> bytes:
        """The plain payload of a sealed one (see :meth:`unseal`)."""
        names, encoded = self._parse(data, run_id)
        for name in reversed(names):
            codec = self._by_name.get(name)
            if codec is None:
                raise PayloadCodecError(
                    f"run {run_id!r}: a payload is encoded by {'+'.join(names)!r}, but this store's "
                    f"codecs are {self.name!r}; add a codec named {name!r} to codec= (keep old codecs "
                    "for as long as journals written with them are kept)",
                    codec=name,
                    run_id=run_id,
                )
            try:
                encoded = _checked(codec, "decode", codec.decode, encoded)
            except PayloadCodecError as exc:
                message = f"run {run_id!r}: {exc}"
                raise PayloadCodecError(message, codec=name, run_id=run_id) from exc.__cause__
        return encoded

    def _parse(self, data: bytes, run_id: str) -> tuple[tuple[str, ...], bytes]:
        """The codec names and encoded bytes of a sealed payload."""
        head = self._head
        if data.startswith(head):  # written by this chain: only the byte string is left
            at = len(head)
            first = data[at] if at < len(data) else 0
            size = first & 0x1F
            width = {24: 1, 25: 2, 26: 4, 27: 8}.get(size, 0)
            if first >> 5 == 2 and size < 28:
                start = at + 1 + width
                if width:
                    size = int.from_bytes(data[at + 1 : start], "big")
                if start + size == len(data):
                    return tuple(self._by_name), data[start:]
        try:
            value = cbor2.loads(data).value
            return codec_names(value), value[1]
        except Exception as exc:
            raise PayloadCodecError(
                f"run {run_id!r}: a payload marked as encoded cannot be read ({exc})",
                codec="?",
                run_id=run_id,
            ) from None


def _checked(codec: PayloadCodec, what: str, call: Callable[[bytes], bytes], data: bytes) -> bytes:
    """``call(data)``, and its result must be bytes; any failure is the codec's, by name."""
    try:
        result = call(data)
    except Exception as exc:
        raise PayloadCodecError(
            f"codec {codec.name!r} could not {what} a payload: {type(exc).__name__}: {exc}", codec=codec.name
        ) from exc
    if not isinstance(result, bytes):
        raise PayloadCodecError(
            f"codec {codec.name!r}.{what} returned {type(result).__name__}, not bytes", codec=codec.name
        )
    return result
