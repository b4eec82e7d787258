"""Journal contract v1 at the bytes level: layout, round trips, torn tails, corruption, versions.

The constants below are the contract (docs/journal-v1.md), written out here
rather than imported, so a change in the code that changes the bytes fails.
The recovery rule under test: reading stops at the first bad record; it is a
torn tail (dropped) unless a later valid record has ``durable_upto`` >= its
index, in which case it is corruption (:class:`durable.JournalCorruptError`).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import durable
from durable import ErrorInfo
from durable.lowlevel import (
    EVENT_TYPES,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    AttemptHeartbeat,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    OsFileSystem,
    PatchRecorded,
    RunCancelled,
    RunCompleted,
    RunContinuedAsNew,
    RunFailed,
    RunResumed,
    RunRetried,
    RunStarted,
    Scan,
    SideEffectRecorded,
    SignalAwaited,
    SignalReceived,
    StepCancelled,
    TimerFired,
    TimerStarted,
    encode_header,
    encode_record,
    scan,
)

MAGIC = bytes.fromhex("894455520d0a1a0a")
HEADER_SIZE = 16
MARKER = b"\xd5J"
FRAME_SIZE = 10
MAX_RECORD = 64 * 1024 * 1024
PATH = "runs/test.journal"

#: Type code and field names, in order, of every event of journal contract v1.
V1_LAYOUT: dict[type[Any], tuple[int, tuple[str, ...]]] = {
    RunStarted: (1, ("run_id", "workflow", "args", "t", "incarnation", "first_seq", "traceparent")),
    ActivityScheduled: (2, ("seq", "name", "args", "t")),
    AttemptFailed: (3, ("seq", "attempt", "error", "retry_at", "t")),
    ActivityCompleted: (4, ("seq", "result", "attempts", "t")),
    ActivityFailed: (5, ("seq", "error", "attempts", "t")),
    TimerStarted: (6, ("seq", "seconds", "fire_at", "t")),
    TimerFired: (7, ("seq", "t")),
    SideEffectRecorded: (8, ("seq", "name", "value", "error", "t")),
    RunCompleted: (13, ("result", "t")),
    RunFailed: (14, ("error", "t")),
    RunResumed: (17, ("t", "pid")),
    PatchRecorded: (18, ("change_id", "t")),
    StepCancelled: (19, ("seq", "t")),
    SignalReceived: (9, ("name", "payload", "t", "message_id")),
    CancelRequested: (12, ("reason", "t", "message_id")),
    RunCancelled: (15, ("reason", "t")),
    RunContinuedAsNew: (16, ("args", "t")),
    ChildStarted: (10, ("seq", "workflow", "args", "run_id", "t")),
    ChildCompleted: (11, ("seq", "result", "error", "t")),
    AttemptHeartbeat: (20, ("seq", "attempt", "details", "t")),
    RunRetried: (21, ("t", "reason")),
    SignalAwaited: (22, ("seq", "name", "t")),
}

# Each example scans a journal many times; fewer examples keep the file fast (CI runs 50).
fewer = settings(max_examples=40)

# --- strategies --------------------------------------------------------------

# Step numbers, attempts and counts: non-negative and within 63 bits (what a reader accepts).
uints = st.integers(min_value=0, max_value=2**63 - 1)
# Times and durations within the range a journal accepts (about 3,000 years around the epoch).
times = st.floats(min_value=-1e11, max_value=1e11, exclude_min=True, exclude_max=True)
texts = st.text(max_size=12)
blobs = st.binary(max_size=24)
errors = st.builds(ErrorInfo, texts, texts, texts)
EVENTS: dict[type[Any], st.SearchStrategy[Any]] = {
    RunStarted: st.builds(RunStarted, texts, texts, blobs, times, uints, uints, texts),
    ActivityScheduled: st.builds(ActivityScheduled, uints, texts, blobs, times),
    AttemptFailed: st.builds(AttemptFailed, uints, uints, errors, times, times),
    ActivityCompleted: st.builds(ActivityCompleted, uints, blobs, uints, times),
    ActivityFailed: st.builds(ActivityFailed, uints, errors, uints, times),
    RunResumed: st.builds(RunResumed, times, uints),
    RunCompleted: st.builds(RunCompleted, blobs, times),
    RunFailed: st.builds(RunFailed, errors, times),
    TimerStarted: st.builds(TimerStarted, uints, times, times, times),
    TimerFired: st.builds(TimerFired, uints, times),
    SideEffectRecorded: st.builds(SideEffectRecorded, uints, texts, blobs, st.none() | errors, times),
    PatchRecorded: st.builds(PatchRecorded, texts, times),
    StepCancelled: st.builds(StepCancelled, uints, times),
    SignalReceived: st.builds(SignalReceived, texts, blobs, times, texts),
    CancelRequested: st.builds(CancelRequested, texts, times, texts),
    RunCancelled: st.builds(RunCancelled, texts, times),
    RunContinuedAsNew: st.builds(RunContinuedAsNew, blobs, times),
    ChildStarted: st.builds(ChildStarted, uints, texts, blobs, texts, times),
    ChildCompleted: st.builds(ChildCompleted, uints, blobs, st.none() | errors, times),
}
events = st.one_of(*EVENTS.values())


@attrs.frozen
class Journal:
    """A journal's events, the ``durable_upto`` of each record, its bytes and record offsets.

    ``offsets[k]`` is where record ``k`` starts; ``offsets[-1]`` is the end of the file.
    """

    events: list[Any]
    uptos: list[int]
    data: bytes
    offsets: list[int]

    def proven(self, index: int, intact: Callable[[int], bool] = lambda _: True) -> bool:
        """Whether an intact later record says record ``index`` had been made durable."""
        return any(self.uptos[j] >= index for j in range(index + 1, len(self.events)) if intact(j))


def journal(evs: list[Any], uptos: list[int] | None = None) -> Journal:
    """Encode ``evs`` as a journal; by default each record says every earlier one is durable."""
    uptos = [index - 1 for index in range(len(evs))] if uptos is None else uptos
    data = bytearray(encode_header())
    offsets = []
    for index, (event, upto) in enumerate(zip(evs, uptos, strict=True)):
        offsets.append(len(data))
        data += encode_record(event, index, upto)
    offsets.append(len(data))
    return Journal(list(evs), list(uptos), bytes(data), offsets)


@st.composite
def journals(draw: st.DrawFn, min_size: int = 1, max_size: int = 6) -> Journal:
    """Journals whose ``durable_upto`` never decreases and never reaches the record itself."""
    evs = draw(st.lists(events, min_size=min_size, max_size=max_size))
    uptos = []
    upto = -1
    for index in range(len(evs)):
        upto = draw(st.integers(min_value=upto, max_value=index - 1))
        uptos.append(upto)
    return journal(evs, uptos)


def raw_record(payload_fields: Any) -> bytes:
    """A correctly framed record around any CBOR payload (for records the code never writes)."""
    payload = cbor2.dumps(payload_fields)
    length = struct.pack("<I", len(payload))
    return MARKER + length + struct.pack("<I", zlib.crc32(length + payload)) + payload


def assert_torn_at(found: Scan, j: Journal, index: int) -> None:
    # Without a whole first record (RunStarted) the run never existed: its creation was torn.
    assert found.exists == (index > 0)
    assert found.torn
    assert found.events == j.events[:index]
    assert found.end == j.offsets[index]


def assert_corrupt_at(data: bytes, j: Journal, index: int) -> None:
    with pytest.raises(durable.JournalCorruptError) as corrupt:
        scan(data, PATH)
    assert (corrupt.value.offset, corrupt.value.record) == (j.offsets[index], index)
    assert corrupt.value.path == PATH
    assert PATH in str(corrupt.value)
    assert f"byte {j.offsets[index]}" in str(corrupt.value)


SAMPLE = [
    RunStarted("order-1", "process_order", b"\x82\x83ealicea\x19\x10hhtok_visa\xa0", 1714564800.25),
    ActivityScheduled(0, "charge_payment", b"\x82\x82\x19\x10hhtok_visa\xa0", 1714564800.5),
    AttemptFailed(
        0, 1, ErrorInfo("ConnectionError", "reset by peer", "Traceback ..."), 1714564801.5, 1714564800.6
    ),
    ActivityCompleted(0, b"npay_c7e4586f32", 2, 1714564801.75),
    RunResumed(1714564900.0, 4242),
    ActivityScheduled(1, "send_email", b"\x82\x82ealicex\x1aReceipt for pay_c7e4586f32\xa0", 1714564901.0),
    ActivityFailed(1, ErrorInfo("OSError", "smtp down", ""), 6, 1714564960.0),
    RunFailed(
        ErrorInfo("durable.ActivityError", "activity 'send_email' failed after 6 attempts", "Tb"),
        1714564960.5,
    ),
]


# --- the bytes of v1 ---------------------------------------------------------


def test_header_bytes() -> None:
    header = encode_header()
    assert header == bytes.fromhex("894455520d0a1a0a0100000029c9878c")
    assert header[:8] == MAGIC
    assert struct.unpack("<HHI", header[8:]) == (1, 0, zlib.crc32(header[:12]))


def test_event_type_codes_are_the_v1_table() -> None:
    assert {cls: code for cls, (code, _) in V1_LAYOUT.items()} == EVENT_TYPES


@pytest.mark.parametrize("cls", list(V1_LAYOUT), ids=lambda cls: cls.__name__)
def test_fields_are_in_v1_order(cls: type[Any]) -> None:
    assert tuple(field.name for field in attrs.fields(cls)) == V1_LAYOUT[cls][1]


@pytest.mark.parametrize("event", SAMPLE, ids=lambda event: type(event).__name__)
def test_record_framing_and_payload(event: Any) -> None:
    record = encode_record(event, 7, 5)
    marker, length, crc = struct.unpack_from("<2sII", record)
    assert marker == MARKER
    assert length == len(record) - FRAME_SIZE
    assert crc == zlib.crc32(record[2:6] + record[FRAME_SIZE:])
    code, names = V1_LAYOUT[type(event)]
    fields = [
        [value.type, value.message, value.traceback] if isinstance(value, ErrorInfo) else value
        for value in (getattr(event, name) for name in names)
    ]
    if isinstance(event, RunStarted) and not event.traceparent:
        fields = fields[:-1]  # written only when the run has a trace (see below)
    assert cbor2.loads(record[FRAME_SIZE:]) == [code, 7, 5, *fields]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_run_started_holds_its_trace_context_only_when_it_has_one() -> None:
    # A run created while nothing traces is written as before the field existed,
    # byte for byte; a traced one carries its traceparent as a trailing field.
    plain = RunStarted("order-1", "process_order", b"\x82\x80\xa0", 1714564800.25, 0, 0)
    traced = attrs.evolve(plain, traceparent=TRACEPARENT)
    assert len(cbor2.loads(encode_record(plain, 0, -1)[FRAME_SIZE:])) == 9
    assert cbor2.loads(encode_record(traced, 0, -1)[FRAME_SIZE:])[-1] == TRACEPARENT
    for event in (plain, traced):
        found = scan(encode_header() + encode_record(event, 0, -1), PATH)
        assert found.events == [event]


def test_durable_upto_minus_one_is_cbor_0x20() -> None:
    # durable_upto -1 ("nothing is durable yet") is the CBOR negative integer 0x20.
    record = encode_record(SAMPLE[0], 0, -1)
    assert record[FRAME_SIZE : FRAME_SIZE + 4] == bytes([0x89, 0x01, 0x00, 0x20])  # 9 items: RunStarted


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("cls", list(EVENTS), ids=lambda cls: cls.__name__)
@settings(max_examples=15)
@given(data=st.data())
def test_every_event_type_round_trips(cls: type[Any], data: st.DataObject) -> None:
    event = data.draw(EVENTS[cls])
    before = data.draw(st.lists(events, max_size=3))
    j = journal([*before, event])
    found = scan(j.data, PATH)
    assert found.events == j.events
    assert type(found.events[-1]) is cls
    assert (found.end, found.torn, found.exists) == (len(j.data), False, True)


@fewer
@given(journals(max_size=8))
def test_any_journal_round_trips(j: Journal) -> None:
    found = scan(j.data, PATH)
    assert found.events == j.events
    assert (found.end, found.torn, found.exists) == (len(j.data), False, True)


# --- torn tails --------------------------------------------------------------


@fewer
@given(journals())
def test_a_journal_cut_anywhere_in_its_last_record_is_a_torn_tail(j: Journal) -> None:
    last = len(j.events) - 1
    assert scan(j.data[: j.offsets[last]], PATH).torn is False  # cut exactly between records
    for cut in range(j.offsets[last] + 1, j.offsets[-1]):
        assert_torn_at(scan(j.data[:cut], PATH), j, last)


@fewer
@given(journals(max_size=4))
def test_every_prefix_keeps_exactly_the_whole_records(j: Journal) -> None:
    for cut in range(j.offsets[0], len(j.data) + 1):
        whole = sum(1 for end in j.offsets[1:] if end <= cut)
        found = scan(j.data[:cut], PATH)
        assert found.events == j.events[:whole]
        assert found.end == j.offsets[whole]
        assert found.torn == (cut != j.offsets[whole])


@fewer
@given(journals(), st.integers(min_value=1, max_value=300))
def test_a_zero_filled_tail_is_a_torn_tail(j: Journal, zeros: int) -> None:
    # F3: the file grew before its content landed.
    found = scan(j.data + bytes(zeros), PATH)
    assert (found.events, found.end, found.torn) == (j.events, len(j.data), True)


@fewer
@given(journals(), st.binary(min_size=1, max_size=300))
def test_a_garbage_tail_is_a_torn_tail(j: Journal, garbage: bytes) -> None:
    found = scan(j.data + garbage, PATH)
    assert (found.events, found.end, found.torn) == (j.events, len(j.data), True)


@fewer
@given(journals(), st.data())
def test_a_partly_written_record_with_zeros_or_garbage_is_a_torn_tail(
    j: Journal, data: st.DataObject
) -> None:
    # F2/F3/F4 on the last append: a prefix landed, the rest of the grown file is zeros or garbage.
    new = encode_record(data.draw(events), len(j.events), len(j.events) - 1)
    landed = data.draw(st.integers(min_value=0, max_value=len(new) - 1))
    rest = data.draw(st.one_of(st.binary(max_size=64), st.integers(0, 64).map(bytes)))
    assume(not (new[:landed] + rest).startswith(new))  # the bytes that landed may complete it
    found = scan(j.data + new[:landed] + rest, PATH)
    assert found.events == j.events
    assert found.end == len(j.data)


def test_a_stale_record_is_a_torn_tail() -> None:
    # A record whose index is not the next one (left over from an earlier write) ends the journal.
    j = journal(SAMPLE[:4])
    for stale in (encode_record(SAMPLE[1], 1, 0), encode_record(SAMPLE[3], 3, 2), j.data[j.offsets[2] :]):
        found = scan(j.data + stale, PATH)
        assert (found.events, found.end, found.torn) == (j.events, len(j.data), True)


def test_a_record_from_the_future_below_every_durable_upto_is_a_torn_tail() -> None:
    j = journal(SAMPLE[:3])
    found = scan(j.data + encode_record(SAMPLE[3], 9, 2), PATH)
    assert (found.events, found.end, found.torn) == (j.events, len(j.data), True)


# --- corruption --------------------------------------------------------------


def _flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def test_every_bit_flip_in_a_record_proven_durable_is_refused() -> None:
    # sync="always" stamps: every record says all earlier ones are durable.
    j = journal(SAMPLE[:5])
    last = len(j.events) - 1
    for index in range(last + 1):
        for bit in range(j.offsets[index] * 8, j.offsets[index + 1] * 8):
            damaged = _flip(j.data, bit)
            if index < last:
                assert_corrupt_at(damaged, j, index)
            else:
                assert_torn_at(scan(damaged, PATH), j, index)


@fewer
@given(journals(min_size=2), st.data())
def test_a_bit_flip_is_refused_exactly_when_a_later_record_proves_the_record_durable(
    j: Journal, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(j.events) - 1))
    bit = data.draw(st.integers(j.offsets[index] * 8, j.offsets[index + 1] * 8 - 1))
    damaged = _flip(j.data, bit)
    if j.proven(index):
        assert_corrupt_at(damaged, j, index)
    else:
        assert_torn_at(scan(damaged, PATH), j, index)


@fewer
@given(journals(min_size=2), st.data())
def test_damage_anywhere_never_returns_wrong_data(j: Journal, data: st.DataObject) -> None:
    # F2/F9: any run of bytes after the header overwritten with garbage (or zeros).
    start = data.draw(st.integers(HEADER_SIZE, len(j.data) - 1))
    size = data.draw(st.integers(1, min(64, len(j.data) - start)))
    garbage = data.draw(st.one_of(st.binary(min_size=size, max_size=size), st.just(bytes(size))))
    damaged = j.data[:start] + garbage + j.data[start + size :]

    def intact(k: int) -> bool:
        return damaged[j.offsets[k] : j.offsets[k + 1]] == j.data[j.offsets[k] : j.offsets[k + 1]]

    bad = [k for k in range(len(j.events)) if not intact(k)]
    if not bad:
        assert scan(damaged, PATH).events == j.events
    elif j.proven(bad[0], intact):
        assert_corrupt_at(damaged, j, bad[0])
    else:
        assert_torn_at(scan(damaged, PATH), j, bad[0])


# A sync="batch" style journal: the creation made record 0 durable, a sync after record 2
# made 0-2 durable, and records 3-4 were written after it (not yet synced).
BATCH = journal(SAMPLE[:5], [-1, 0, 0, 2, 2])


def _zero_record(j: Journal, index: int) -> bytes:
    size = j.offsets[index + 1] - j.offsets[index]
    return j.data[: j.offsets[index]] + bytes(size) + j.data[j.offsets[index + 1] :]


def test_an_f5_hole_below_every_later_durable_upto_is_a_torn_tail() -> None:
    # Record 3 never landed (zeros) but record 4 did; record 4 only vouches for 0-2.
    assert_torn_at(scan(_zero_record(BATCH, 3), PATH), BATCH, 3)


def test_a_hole_where_a_later_record_proves_durability_is_corruption() -> None:
    # Record 1 was covered by the sync that record 3's durable_upto (2) reports.
    assert_corrupt_at(_zero_record(BATCH, 1), BATCH, 1)


def test_a_missing_record_below_every_later_durable_upto_is_a_torn_tail() -> None:
    cut = BATCH.data[: BATCH.offsets[3]] + BATCH.data[BATCH.offsets[4] :]
    assert_torn_at(scan(cut, PATH), BATCH, 3)


def test_a_missing_record_that_the_next_record_proves_durable_is_corruption() -> None:
    # Record 2 says record 1 was durable: losing record 1 must not be called a torn tail,
    # even though the record proving it now sits where record 1 should be.
    j = journal(SAMPLE[:3])
    cut = j.data[: j.offsets[1]] + j.data[j.offsets[2] :]
    assert_corrupt_at(cut, j, 1)


LENGTHS = {
    "one more": lambda n: n + 1,
    "one less": lambda n: n - 1,
    "much more": lambda n: n + 1000,
    "zero": lambda n: 0,
    "one": lambda n: 1,
    "over the maximum": lambda n: MAX_RECORD + 1,
    "all ones": lambda n: 2**32 - 1,
}


def _with_length(j: Journal, index: int, length: Callable[[int], int]) -> bytes:
    at = j.offsets[index] + 2
    old = struct.unpack_from("<I", j.data, at)[0]
    return j.data[:at] + struct.pack("<I", length(old)) + j.data[at + 4 :]


@pytest.mark.parametrize("length", LENGTHS.values(), ids=LENGTHS.keys())
def test_a_damaged_length_in_the_last_record_is_a_torn_tail(length: Callable[[int], int]) -> None:
    j = journal(SAMPLE[:4])
    assert_torn_at(scan(_with_length(j, 3, length), PATH), j, 3)


@pytest.mark.parametrize("length", LENGTHS.values(), ids=LENGTHS.keys())
def test_a_damaged_length_in_a_proven_record_is_corruption(length: Callable[[int], int]) -> None:
    j = journal(SAMPLE[:4])
    assert_corrupt_at(_with_length(j, 1, length), j, 1)


def test_an_unknown_event_type_is_refused_and_named() -> None:
    # A type code added later within v1 (here: 99, which no v1 reader knows yet).
    j = journal(SAMPLE[:2])
    data = j.data + raw_record([99, 2, 1, 0, 1714564900.0, 1714564800.0])
    with pytest.raises(durable.JournalCorruptError) as refused:
        scan(data, PATH)
    assert (refused.value.offset, refused.value.record) == (len(j.data), 2)
    assert "unknown event type 99" in str(refused.value)
    assert "newer" in str(refused.value)


def test_an_unknown_event_type_is_not_described_as_damage_proven_by_a_later_record() -> None:
    # Nothing is torn or proven here: the message must not explain it with the torn-tail rule.
    j = journal(SAMPLE[:2])
    with pytest.raises(durable.JournalCorruptError) as refused:
        scan(j.data + raw_record([10, 2, 1, 0, 1714564900.0, 1714564800.0]), PATH)
    assert "a later record proves" not in str(refused.value)


def test_trailing_fields_added_within_v1_are_ignored() -> None:
    j = journal(SAMPLE[:1])
    fields = [SAMPLE[1].seq, SAMPLE[1].name, SAMPLE[1].args, SAMPLE[1].t, "a later field", [1, 2]]
    found = scan(j.data + raw_record([2, 1, 0, *fields]), PATH)
    assert found.events == SAMPLE[:2]
    assert not found.torn


def test_a_record_with_too_few_fields_is_refused() -> None:
    j = journal(SAMPLE[:1])
    with pytest.raises(durable.JournalCorruptError, match="too few fields"):
        scan(j.data + raw_record([2, 1, 0, 0, "charge_payment", b""]), PATH)


NOT_V1 = {
    "map": {"not": "an array"},
    "short": [2, 2],
    "text-code": ["2", 2, 1, 0, "x", b"", 0.0],
    "text-index": [2, "2", 1, 0, "x", b"", 0.0],
    "bytes": b"\x87\x02\x02\x01",
}


@pytest.mark.parametrize("payload", NOT_V1.values(), ids=NOT_V1.keys())
def test_a_checksummed_payload_that_is_not_a_v1_record_is_a_bad_record(payload: Any) -> None:
    j = journal(SAMPLE[:4])
    bad = j.data[: j.offsets[2]] + raw_record(payload)
    assert_torn_at(scan(bad, PATH), j, 2)
    # The same bad record, proven durable by the next one, is corruption.
    proven = bad + encode_record(SAMPLE[3], 3, 2)
    with pytest.raises(durable.JournalCorruptError) as corrupt:
        scan(proven, PATH)
    assert (corrupt.value.offset, corrupt.value.record) == (j.offsets[2], 2)


def test_a_checksummed_record_with_a_refused_cbor_tag_is_never_decoded() -> None:
    j = journal(SAMPLE[:2])
    tagged = raw_record([4, 2, 1, 0, cbor2.CBORTag(35, "a+"), 1, 0.0])
    found = scan(j.data + tagged, PATH)
    assert (found.events, found.torn) == (j.events, True)


# --- the header --------------------------------------------------------------


def _header(version: int = 1, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    head = magic + struct.pack("<HH", version, flags)
    return head + struct.pack("<I", zlib.crc32(head))


RECORDS = journal(SAMPLE[:3]).data[HEADER_SIZE:]


@pytest.mark.parametrize("position", range(8))
def test_a_bad_magic_is_refused(position: int) -> None:
    magic = bytearray(MAGIC)
    magic[position] ^= 0x20
    with pytest.raises(durable.JournalCorruptError, match="not a durable journal") as refused:
        scan(_header(magic=bytes(magic)) + RECORDS, PATH)
    assert (refused.value.offset, refused.value.record) == (0, None)


@pytest.mark.parametrize("bit", range(8 * 8, 16 * 8))
def test_a_bad_header_checksum_is_refused(bit: int) -> None:
    with pytest.raises(durable.JournalCorruptError, match="header checksum") as refused:
        scan(_flip(encode_header(), bit) + RECORDS, PATH)
    assert refused.value.offset == 0


@pytest.mark.parametrize("version", [2, 3, 0xFFFF])
def test_a_newer_version_is_refused_with_a_clear_message(version: int) -> None:
    for body in (RECORDS, b"", b"\x00garbage a v1 reader cannot parse"):
        with pytest.raises(durable.JournalVersionError) as refused:
            scan(_header(version=version) + body, PATH)
        assert refused.value.version == version
        assert refused.value.path == PATH
        message = str(refused.value)
        assert f"{PATH}: journal format version {version} is newer than" in message
        assert "(1)" in message
        assert "upgrade durable" in message
        assert isinstance(refused.value, durable.StoreError)


def test_header_flags_are_ignored_by_v1_readers() -> None:
    found = scan(_header(flags=0x8001) + RECORDS, PATH)
    assert found.events == SAMPLE[:3]


@pytest.mark.parametrize("size", range(HEADER_SIZE))
def test_a_file_shorter_than_the_header_does_not_exist(size: int) -> None:
    # A crash while creating the journal: nothing was acknowledged.
    found = scan(encode_header()[:size], PATH)
    assert (found.exists, found.events, found.end) == (False, [], 0)


@pytest.mark.parametrize("size", [1, 8, HEADER_SIZE - 1])
def test_a_zero_filled_file_shorter_than_the_header_does_not_exist(size: int) -> None:
    # F3 on creation: the file's size grew before its content landed.
    found = scan(bytes(size), PATH)
    assert (found.exists, found.events) == (False, [])


def test_a_header_without_its_first_record_is_an_unfinished_creation() -> None:
    # FileStore.create writes the header and the RunStarted record separately: a kill in
    # between leaves just a header. No run was acknowledged, so none exists.
    first = encode_record(SAMPLE[0], 0, -1)
    for size in range(len(first)):
        found = scan(encode_header() + first[:size], PATH)
        assert (found.exists, found.events) == (False, []), size


# --- through the stores ------------------------------------------------------

RUN = RunStarted("run-1", "wf", b"\x82\x80\xa0", 1714564800.0)
TAILS = {
    "partial record": encode_record(ActivityCompleted(0, b"\x01", 1, 1.0), 2, 1)[:13],
    "zeros": bytes(40),
    "garbage": b"\xd5J\x07\x00\x00\x00garbage!",
}


async def _journal_with_tail(store: durable.FileStore, tail: bytes) -> tuple[str, bytes]:
    writer = await store.create(RUN)
    assert writer is not None
    writer.append(ActivityScheduled(0, "step", b"\x82\x80\xa0", 1714564801.0))
    await writer.sync()
    writer.close()
    path = store.journal_path(RUN.run_id)
    with open(path, "ab") as file:
        file.write(tail)
    return path, Path(path).read_bytes()


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
async def test_file_store_open_truncates_a_torn_tail_then_appends_cleanly(
    tmp_path: Path, tail: bytes
) -> None:
    store = durable.FileStore(tmp_path)
    path, before = await _journal_with_tail(store, tail)
    found = scan(before, path)
    assert found.torn
    opened = await store.open(RUN.run_id)
    assert opened is not None
    assert os.path.getsize(path) == found.end
    assert opened.events == found.events
    done = ActivityCompleted(0, b"\x01", 1, 1714564802.0)
    opened.writer.append(done)
    await opened.writer.sync()
    opened.writer.close()
    after = scan(Path(path).read_bytes(), path)
    assert not after.torn
    assert after.events == [*found.events, done]


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
async def test_file_store_read_does_not_modify_the_file(tmp_path: Path, tail: bytes) -> None:
    store = durable.FileStore(tmp_path)
    path, before = await _journal_with_tail(store, tail)
    assert await store.read(RUN.run_id) == scan(before, path).events
    assert Path(path).read_bytes() == before


async def test_memory_store_open_truncates_a_torn_tail() -> None:
    store = durable.MemoryStore()
    writer = await store.create(RUN)
    assert writer is not None
    writer.close()
    clean = bytes(store.journals[RUN.run_id])
    store.journals[RUN.run_id] += TAILS["partial record"]
    assert await store.read(RUN.run_id) == [RUN]
    assert len(store.journals[RUN.run_id]) > len(clean)
    opened = await store.open(RUN.run_id)
    assert opened is not None
    assert bytes(store.journals[RUN.run_id]) == clean
    opened.writer.close()


async def test_journals_are_created_0600(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path)
    writer = await store.create(RUN)
    assert writer is not None
    writer.close()
    assert os.stat(store.journal_path(RUN.run_id)).st_mode & 0o777 == 0o600


def _payloads(data: bytes) -> list[list[Any]]:
    found, pos = [], HEADER_SIZE
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 2)[0]
        found.append(cbor2.loads(data[pos + FRAME_SIZE : pos + FRAME_SIZE + length]))
        pos += FRAME_SIZE + length
    return found


async def test_the_record_after_creation_knows_the_first_record_is_durable(tmp_path: Path) -> None:
    # Creation fsyncs the header and RunStarted before it returns, so the next record's
    # durable_upto is 0: damage to RunStarted is then refused instead of dropped as a tail.
    store = durable.FileStore(tmp_path)
    writer = await store.create(RUN)
    assert writer is not None
    writer.append(ActivityScheduled(0, "step", b"\x82\x80\xa0", 1714564801.0))
    writer.close()
    payloads = _payloads(Path(store.journal_path(RUN.run_id)).read_bytes())
    assert [payload[1:3] for payload in payloads] == [[0, -1], [1, 0]]


async def test_durable_upto_follows_syncs(tmp_path: Path) -> None:
    store = durable.FileStore(tmp_path)
    writer = await store.create(RUN)
    assert writer is not None
    step = ActivityScheduled(0, "step", b"\x82\x80\xa0", 1714564801.0)
    writer.append(step)  # 1
    writer.append(ActivityCompleted(0, b"\x01", 1, 1714564802.0))  # 2
    await writer.sync()
    writer.append(ActivityScheduled(1, "step", b"\x82\x80\xa0", 1714564803.0))  # 3
    writer.append(ActivityCompleted(1, b"\x02", 1, 1714564804.0))  # 4
    writer.close()
    payloads = _payloads(Path(store.journal_path(RUN.run_id)).read_bytes())
    assert [payload[1] for payload in payloads] == [0, 1, 2, 3, 4]
    assert [payload[2] for payload in payloads][3:] == [2, 2]


class FailingFileSystem(OsFileSystem):
    """The real file system, whose fsyncs fail with EIO once armed; it counts the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.failed_syncs = 0

    def _maybe_fail(self) -> None:
        if self.armed:
            self.failed_syncs += 1
            raise OSError(errno.EIO, "Input/output error")

    def fdatasync(self, fd: int) -> None:
        self._maybe_fail()
        super().fdatasync(fd)

    async def fdatasync_many(self, fds: Iterable[int]) -> None:
        self._maybe_fail()
        await super().fdatasync_many(fds)


@pytest.mark.parametrize("sync", ["always", "batch"])
async def test_an_fsync_error_is_fatal_and_never_retried(tmp_path: Path, sync: str) -> None:
    fs = FailingFileSystem()
    store = durable.FileStore(tmp_path, sync=sync, fs=fs)
    writer = await store.create(RUN)
    assert writer is not None
    fs.armed = True
    writer.append(ActivityScheduled(0, "step", b"\x82\x80\xa0", 1714564801.0))
    with pytest.raises(durable.StoreError, match="fsync"):
        await writer.sync()
    assert fs.failed_syncs == 1
    with pytest.raises(durable.StoreError):
        writer.append(ActivityCompleted(0, b"\x01", 1, 1714564802.0))
    with pytest.raises(durable.StoreError):
        await writer.sync()
    assert fs.failed_syncs == 1, "a failed fsync was retried"
    writer.close()


async def test_a_failed_fsync_at_creation_leaves_no_run(tmp_path: Path) -> None:
    fs = FailingFileSystem()
    fs.armed = True
    store = durable.FileStore(tmp_path, fs=fs)
    with pytest.raises(durable.StoreError, match="Input/output error"):
        await store.create(RUN)
    assert not os.path.exists(store.journal_path(RUN.run_id))
    assert await store.read(RUN.run_id) is None


def test_a_damaged_header_in_front_of_no_record_is_a_creation_that_never_finished() -> None:
    # Found by sim: a child run's creator was killed after writing the header; another
    # process's directory fsync made the file durable, and a power loss tore its bytes.
    header = bytearray(encode_header())
    header[8:12] = bytes(4)  # a hole in the unsynced header
    found = scan(bytes(header) + b"\x00" * 7, "j")
    assert not found.exists and found.events == []
    record = encode_record(RunStarted("r", "wf", b"\x82\x80\xa0", 1.0), 0, -1)
    with pytest.raises(durable.JournalCorruptError, match="header checksum"):
        scan(bytes(header) + record, "j")  # a record follows: a real journal, damaged


async def test_fdatasync_many_syncs_each_file_once_and_reports_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker threads share one iterator of the files: each must be taken exactly
    # once, and a failure of one must reach the caller while the others still sync.
    synced: list[int] = []
    lock = threading.Lock()
    real = os.fdatasync

    def counting(fd: int) -> None:
        real(fd)
        with lock:
            synced.append(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(50)]
    try:
        fs = OsFileSystem(sync_threads=4)
        await fs.fdatasync_many(fds)
        assert sorted(synced) == sorted(fds)
        synced.clear()
        closed = os.open(tmp_path / "closed", os.O_RDWR | os.O_CREAT, 0o600)
        os.close(closed)
        with pytest.raises(OSError) as raised:
            await fs.fdatasync_many([*fds[:25], closed, *fds[25:]])
        assert raised.value.errno == errno.EBADF
        assert sorted(synced) == sorted(fds)
    finally:
        for fd in fds:
            os.close(fd)
