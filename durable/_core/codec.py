"""Journal contract v1, bytes level: header, record framing, checksums, torn-tail recovery.

Theory of operation
-------------------
A journal is a 16-byte header followed by records::

    header  = MAGIC (8) | version u16 | flags u16 | crc32(first 12 bytes) u32
    record  = b"\\xd5J" | length u32 | crc32(length bytes + payload) u32 | payload
    payload = CBOR array [type code, index, durable_upto, field...]

All integers are little-endian. ``index`` counts records from 0 and
``durable_upto`` is the highest index the writer knew to be on stable storage
when it wrote this record (-1 for none).

CBOR does not frame itself (trailing bytes are ignored and a flipped bit in a
string still decodes), so every record is framed and checksummed. A zero-filled
region can never pass: the marker is non-zero, the length must be positive, and
the index inside the checksummed payload must be the expected one.

Reading stops at the first record that fails. Whether that is a torn tail (a
crash mid-write: drop it) or damage (refuse: :class:`JournalCorruptError`) is
decided by what follows: if any later valid record says ``durable_upto >=`` the
bad record's index, the bad record had been made durable, so losing it would
lose an acknowledged step. Otherwise everything from the bad record on was
never acknowledged, and recovery truncates it.
"""

from __future__ import annotations

import operator
import struct
import zlib
from collections.abc import Callable
from typing import Any

import attrs
import cbor2

from . import events as ev
from .errors import ErrorInfo, JournalCorruptError, JournalVersionError, SerializationError
from .values import MAX_RECORD, VALUE_DECODERS, unknown_tag
from .values import loads as loads_value

MAGIC = b"\x89DUR\r\n\x1a\n"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")
HEADER_SIZE = _HEADER.size
MARKER = b"\xd5J"
_FRAME = struct.Struct("<2sII")
FRAME_SIZE = _FRAME.size
_LENGTH = struct.Struct("<I")


def encode_header(flags: int = 0) -> bytes:
    """The 16-byte header of a new journal."""
    head = MAGIC + struct.pack("<HH", VERSION, flags)
    return head + struct.pack("<I", zlib.crc32(head))


def _error_fields(error: ErrorInfo | None) -> list[str] | None:
    return None if error is None else [error.type, error.message, error.traceback]


def _encoder(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names = [f.name for f in attrs.fields(cls)]
    get = operator.attrgetter(*names)
    last = attrs.fields(cls)[-1]
    if last.metadata.get("omitted_when_default"):
        # A trailing field added within v1 that is written only when it says something
        # (RunStarted.traceparent): readers take a missing trailing field as its default.
        default = last.default

        def trimmed(event: Any) -> tuple[Any, ...]:
            values: tuple[Any, ...] = get(event)
            return values[:-1] if values[-1] == default else values

        return trimmed
    if "error" not in names:
        return get
    at = names.index("error")

    def fields(event: Any) -> tuple[Any, ...]:
        values = get(event)
        return (*values[:at], _error_fields(values[at]), *values[at + 1 :])

    return fields


# What a decoded field may hold, by its annotation in _events. A record whose
# checksum is right but whose fields have other types (a foreign writer, a bug)
# must be that run's JournalCorruptError, not a TypeError somewhere far away.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bytes": (bytes,),
    "int": (int,),
    "float": (float, int),
    "ErrorInfo": (list,),
    "ErrorInfo | None": (list, type(None)),
}
#: Times and durations in a journal lie within this many seconds of the epoch
#: (about 3,000 years): anything else is not a time durable wrote.
_MAX_SECONDS = 1e11
#: Step numbers, attempts, incarnations and process ids are non-negative and fit in
#: 63 bits: a negative step or one of 10**30 is not a number durable wrote.
_MAX_COUNT = 2**63


def _decoder(cls: type[Any]) -> Callable[[list[Any], str, int, int], Any]:
    """A function from a record's payload fields to its event (raising JournalCorruptError)."""
    fields_ = attrs.fields(cls)
    names = [f.name for f in fields_]
    count = len(names)
    required = sum(f.default is attrs.NOTHING for f in fields_)
    allowed = [_FIELD_TYPES[str(f.type)] for f in fields_]
    # The exact types a record written by durable has, for a fast check of the common case.
    expected = tuple(kinds[0] for kinds in allowed)
    floats = [i for i, kinds in enumerate(allowed) if kinds[0] is float]
    counts = [i for i, kinds in enumerate(allowed) if kinds == (int,)]
    error_at = names.index("error") if "error" in names else None

    def check(values: list[Any], path: str, offset: int, index: int) -> list[Any]:
        """Check each field's type and range; build the ErrorInfo. The slow, thorough path."""
        if len(values) < required:
            raise JournalCorruptError(path, offset, f"{cls.__name__} has too few fields", index)
        for at, value in enumerate(values):
            if type(value) not in allowed[at]:
                raise JournalCorruptError(
                    path,
                    offset,
                    f"{cls.__name__}.{names[at]} holds a {type(value).__name__} where "
                    f"{' or '.join(t.__name__ for t in allowed[at])} belongs",
                    index,
                )
            if at in floats and not -_MAX_SECONDS < value < _MAX_SECONDS:
                raise JournalCorruptError(
                    path, offset, f"{cls.__name__}.{names[at]} holds the impossible time {value!r}", index
                )
            if at in counts and not 0 <= value < _MAX_COUNT:
                raise JournalCorruptError(
                    path,
                    offset,
                    f"{cls.__name__}.{names[at]} holds the impossible number {value!r:.40}",
                    index,
                )
        if error_at is not None and error_at < len(values) and values[error_at] is not None:
            values[error_at] = _error_info(values[error_at], path, offset, index)
        return values

    if error_at is not None:  # failures are rare: the thorough path is fast enough

        def decode(fields: list[Any], path: str, offset: int, index: int) -> Any:
            # Fields added later within v1 are appended; a v1 reader ignores extras.
            return cls(*check(fields[3 : 3 + count], path, offset, index))

        return decode
    return _fast_decoder(cls, expected, floats, counts, check)


def _fast_decoder(
    cls: type[Any],
    expected: tuple[type, ...],
    floats: list[int],
    counts: list[int],
    check: Callable[..., list[Any]],
) -> Callable[[list[Any], str, int, int], Any]:
    """The decoder of an event without an error field, generated as straight-line code.

    Replay decodes two events per activity, so the check that each field has the
    exact type durable writes is unrolled, as attrs generates its ``__init__``:
    ``type(v0) is int and type(v1) is str and -1e11 < v3 < 1e11 ...``. Anything
    else (an older record with fewer fields, an int time) takes ``check``.
    """
    names = [f"v{at}" for at in range(len(expected))]
    tests = [f"type({name}) is {kind.__name__}" for name, kind in zip(names, expected, strict=True)]
    tests += [f"{-_MAX_SECONDS!r} < v{at} < {_MAX_SECONDS!r}" for at in floats]
    tests += [f"0 <= v{at} < {_MAX_COUNT}" for at in counts]
    # Every field set through its slot's descriptor on an object made without
    # __init__: what attrs' __init__ does for an event (no defaults applied, no
    # validators, no post-init: every field is in the record), without looking up
    # object.__setattr__ and each slot by name (about 0.1 us less per event).
    sets = "; ".join(f"set{at}(event, {name})" for at, name in enumerate(names))
    # A record of exactly these fields is unpacked from the payload's list in place
    # (no slice of it made); one with fields added later within v1 takes check's path.
    source = (
        "def decode(fields, path, offset, index):\n"
        f"    if len(fields) == {3 + len(names)}:\n"
        f"        _, _, _, {', '.join(names)} = fields\n"
        f"        if {' and '.join(tests)}:\n"
        "            event = new(cls)\n"
        f"            {sets}\n"
        "            return event\n"
        f"    return cls(*check(fields[3:{3 + len(names)}], path, offset, index))\n"
    )
    scope: dict[str, Any] = {"cls": cls, "check": check, "new": object.__new__}
    for at, field in enumerate(attrs.fields(cls)[: len(names)]):
        scope[f"set{at}"] = cls.__dict__[field.name].__set__
    exec(compile(source, f"<durable decoder of {cls.__name__}>", "exec"), scope)
    decode: Callable[[list[Any], str, int, int], Any] = scope["decode"]
    return decode


def _error_info(fields: list[Any], path: str, offset: int, index: int) -> ErrorInfo:
    if 2 <= len(fields) <= 3 and all(type(text) is str for text in fields):
        return ErrorInfo(*fields)
    raise JournalCorruptError(path, offset, "an error is not [type, message, traceback] text", index)


_ENCODERS = {cls: (code, _encoder(cls)) for cls, code in ev.EVENT_TYPES.items()}
#: A record's checksum covers its length's four bytes, then its payload: the CRC-32 of
#: the first part depends on the length alone, kept here for the lengths below
#: _CACHED_LENGTHS (most records; at most a few hundred KB).
_LENGTH_CRCS: dict[int, int] = {}
_CACHED_LENGTHS = 4096
_DECODERS = {code: (cls, _decoder(cls)) for cls, code in ev.EVENT_TYPES.items()}
#: The decoder of each type code alone: what scan's loop looks up per record.
_DECODE = {code: decode for code, (_cls, decode) in _DECODERS.items()}


def encode_record(event: ev.Event, index: int, durable_upto: int) -> bytes:
    """Frame one event as record ``index`` of a journal."""
    code, fields = _ENCODERS[type(event)]
    try:
        payload = cbor2.dumps([code, index, durable_upto, *fields(event)])
    except Exception as exc:  # a name or reason holding a lone surrogate, say
        raise SerializationError(
            f"a {type(event).__name__} record cannot be encoded ({exc}); nothing was written"
        ) from None
    size = len(payload)
    if size > MAX_RECORD:
        # Values are refused long before this (MAX_VALUE); this is the last guard that
        # no store ever acknowledges a record that every reader would refuse.
        raise SerializationError(
            f"a {type(event).__name__} record of {size:,} bytes is over the journal's limit of "
            f"{MAX_RECORD:,} bytes (64 MiB); nothing was written",
            size=size,
            limit=MAX_RECORD,
        )
    seed = _LENGTH_CRCS.get(size)
    if seed is None:
        seed = zlib.crc32(_LENGTH.pack(size))
        if size < _CACHED_LENGTHS:
            _LENGTH_CRCS[size] = seed
    return _FRAME.pack(MARKER, size, zlib.crc32(payload, seed)) + payload


@attrs.frozen
class Scan:
    """What a journal's bytes hold.

    Attributes:
        events: the valid events, in order.
        end: byte offset just after the last valid record (where the next append goes).
        torn: True when bytes after ``end`` were a torn tail that recovery must truncate.
        exists: False when the file holds no complete first record (its creation never
            finished: the creator fsyncs the header and the run's first record before
            reporting the run started).
    """

    events: list[ev.Event]
    end: int
    torn: bool
    exists: bool = True


class _BadRecord(Exception):
    pass


def _read_frame(data: bytes, pos: int) -> tuple[list[Any], int]:
    """Validate the record at ``pos``; return its decoded payload and the next offset."""
    if len(data) - pos < FRAME_SIZE:
        raise _BadRecord("incomplete record header")
    marker, length, crc = _FRAME.unpack_from(data, pos)
    if marker != MARKER:
        raise _BadRecord("no record marker")
    if length == 0 or length > MAX_RECORD:
        raise _BadRecord(f"impossible record length {length}")
    start = pos + FRAME_SIZE
    end = start + length
    if end > len(data):
        raise _BadRecord("record runs past the end of the file")
    payload = data[start:end]
    if zlib.crc32(payload, zlib.crc32(data[pos + 2 : pos + 6])) != crc:
        raise _BadRecord("checksum mismatch")
    try:
        fields = loads_value(payload)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise _BadRecord(f"payload is not valid CBOR ({exc})") from None
    if (
        type(fields) is not list
        or len(fields) < 3
        or type(fields[0]) is not int
        or type(fields[1]) is not int
    ):
        raise _BadRecord("payload is not a v1 record")
    return fields, end


def _event(fields: list[Any], path: str, offset: int, index: int) -> ev.Event:
    code = fields[0]
    entry = _DECODERS.get(code) if type(code) is int else None
    if entry is None:
        raise JournalCorruptError(
            path, offset, f"unknown event type {code!r}; was it written by a newer durable?", index
        )
    event: ev.Event = entry[1](fields, path, offset, index)
    return event


def decode_record(data: bytes, pos: int = 0) -> tuple[ev.Event, int, int, int]:
    """Decode the one record framed at ``pos``: ``(event, index, durable_upto, end offset)``.

    For tools that look at single records; journals are read with :func:`scan`.

    Raises:
        ValueError: there is no valid record at ``pos``.
    """
    try:
        fields, end = _read_frame(data, pos)
        event = _event(fields, "record", pos, fields[1])
    except (_BadRecord, JournalCorruptError) as exc:
        raise ValueError(f"no valid record at offset {pos}: {exc}") from None
    return event, fields[1], fields[2], end


def read_header(data: bytes, path: str) -> None:
    """Check magic, checksum and version of a journal header."""
    magic, version, _flags, crc = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise JournalCorruptError(path, 0, "not a durable journal (bad magic bytes)")
    if zlib.crc32(data[:12]) != crc:
        raise JournalCorruptError(path, 0, "header checksum mismatch")
    if version > VERSION:
        raise JournalVersionError(path, version, VERSION)


def scan(data: bytes, path: str) -> Scan:
    """Decode a whole journal, classifying any damage as a torn tail or as corruption.

    Raises:
        JournalCorruptError: damage before the tail, or a malformed header.
        JournalVersionError: the journal is from a newer format version.
    """
    if len(data) < HEADER_SIZE or (data[:HEADER_SIZE] == bytes(HEADER_SIZE) and not data.strip(b"\0")):
        # A creation that never finished: part of the header, or a file whose size
        # grew before its content landed (zeros).
        if MAGIC.startswith(data[: len(MAGIC)]) or not data.strip(b"\0"):
            return Scan(events=[], end=0, torn=bool(data), exists=False)
        raise JournalCorruptError(path, 0, "not a durable journal (bad magic bytes)")
    if not _header_or_unfinished(data, path):
        return Scan(events=[], end=0, torn=True, exists=False)
    events: list[ev.Event] = []
    append = events.append
    unpack, crc32, decoders = _FRAME.unpack_from, zlib.crc32, _DECODE
    loads, value_decoders, tag_hook = cbor2.loads, VALUE_DECODERS, unknown_tag  # loads_value, inline
    frame_size, max_record, marker_bytes = FRAME_SIZE, MAX_RECORD, MARKER  # globals, as locals
    seeds: dict[int, int] = {}  # record length -> CRC-32 of its four bytes
    pos = HEADER_SIZE
    size = len(data)
    index = 0
    # The loop is the replay hot path: it handles valid records inline and leaves
    # anything unusual to _stop(), which says what is wrong and whether it is a tail.
    while pos < size:
        if size - pos < frame_size:
            break
        marker, length, crc = unpack(data, pos)
        end = pos + frame_size + length
        if marker != marker_bytes or not 0 < length <= max_record or end > size:
            break
        payload = data[pos + frame_size : end]
        # The checksum covers the length's four bytes, then the payload: the first part
        # depends on the length alone, and most records of a journal share a few lengths.
        seed = seeds.get(length)
        if seed is None:
            seed = seeds[length] = crc32(data[pos + 2 : pos + 6])
        if crc32(payload, seed) != crc:
            break
        try:
            fields = loads(payload, semantic_decoders=value_decoders, tag_hook=tag_hook)
        except Exception:
            break
        if type(fields) is not list or len(fields) < 3 or fields[1] != index or type(fields[1]) is not int:
            break
        decode = decoders.get(fields[0]) if type(fields[0]) is int else None
        if decode is None:
            break
        append(decode(fields, path, pos, index))
        index += 1
        pos = end
    else:
        return Scan(events=events, end=pos, torn=False, exists=bool(events))
    return _stop(data, pos, events, path)


def _stop(data: bytes, pos: int, events: list[ev.Event], path: str) -> Scan:
    """The record at ``pos`` is not the next valid one: raise, or end the scan at a torn tail."""
    try:
        fields, _ = _read_frame(data, pos)
    except _BadRecord as bad:
        reason = str(bad)
    else:
        if fields[1] == len(events):
            _event(fields, path, pos, len(events))  # raises: unknown type or malformed
        reason = f"record index {fields[1]} out of sequence"
    _check_tail(data, pos, len(events), path, reason)
    return Scan(events=events, end=pos, torn=True, exists=bool(events))


def _header_or_unfinished(data: bytes, path: str) -> bool:
    """Check the header: True if it is sound, False for a creation that never finished.

    The creator fsyncs the header with the first record: a damaged header in front
    of no valid record at all is a creation that a crash tore (its bytes were never
    synced), not a journal anyone was told about (found by sim).
    """
    try:
        read_header(data, path)
    except JournalVersionError:
        raise
    except JournalCorruptError:
        if _holds_a_record(data):
            raise
        return False
    return True


def _holds_a_record(data: bytes) -> bool:
    probe = data.find(MARKER, HEADER_SIZE)
    while probe != -1:
        try:
            _read_frame(data, probe)
        except _BadRecord:
            probe = data.find(MARKER, probe + 1)
        else:
            return True
    return False


def _check_tail(data: bytes, bad_at: int, index: int, path: str, reason: str) -> None:
    """Raise if a valid record after ``bad_at`` proves record ``index`` had been durable."""
    probe = data.find(MARKER, bad_at)
    while probe != -1:
        try:
            fields, _ = _read_frame(data, probe)
        except _BadRecord:
            pass
        else:
            if fields[1] > index and type(fields[2]) is int and fields[2] >= index:
                raise JournalCorruptError(path, bad_at, reason, index, proven=True)
        probe = data.find(MARKER, probe + 1)
