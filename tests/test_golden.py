"""Golden journals of format v1: today's code must still read and replay them.

Each ``tests/golden/v1/*.journal`` was written by a real run of a workflow in
``tests/golden/v1/workflows.py``; ``expected.json`` holds what replaying it
must give. A failure here means a journal that an earlier durable wrote no
longer replays: fix the code, never the golden file (see
``tests/golden/make_golden.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
import pytest

import durable
from durable.codecs import AesGcm, Zlib
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    Raised,
    Replay,
    Returned,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    Stopped,
    loads_shown,
    loads_value,
    payloads_from,
    replay,
    scan,
)

GOLDEN = Path(__file__).parent / "golden" / "v1"
EXPECTED: dict[str, dict[str, Any]] = json.loads((GOLDEN / "expected.json").read_text())
RUN_IDS = sorted(EXPECTED)
MODULE_NAME = "golden_v1_workflows"  # the name make_golden.py records under


def _load_workflows() -> ModuleType:
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, GOLDEN / "workflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


workflows = _load_workflows()


def _journal(run_id: str) -> bytes:
    return (GOLDEN / f"{run_id}.journal").read_bytes()


def _events(run_id: str) -> list[Any]:
    """The journal's events, with payloads decoded by its case's codec (if it had one)."""
    found = scan(_journal(run_id), f"{run_id}.journal")
    assert found.exists
    assert not found.torn, "a golden journal must decode to its last byte"
    assert found.end == len(_journal(run_id))
    payloads = payloads_from(workflows.CASES[run_id].codec)
    return found.events if payloads is None else payloads.unseal_all(found.events, run_id)


@pytest.fixture(autouse=True)
def _fresh_fakes() -> None:
    workflows.reset()


def test_every_case_has_a_golden_file_and_every_file_a_case() -> None:
    files = sorted(path.stem for path in GOLDEN.glob("*.journal"))
    assert files == RUN_IDS
    assert sorted(workflows.CASES) == RUN_IDS


#: A RunContinuedAsNew ends a journal only while its continuation is being carried
#: out (the fresh journal replaces it), so no finished golden run holds one; its
#: bytes are pinned by test_codec and its recovery by test_continue.
_NOT_IN_FINISHED_JOURNALS = {"RunContinuedAsNew"}


def test_the_golden_set_covers_every_v1_event_type() -> None:
    seen = {name for entry in EXPECTED.values() for name in entry["events"]}
    assert seen == {cls.__name__ for cls in durable.lowlevel.EVENT_TYPES} - _NOT_IN_FINISHED_JOURNALS


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_golden_file_is_unchanged(run_id: str) -> None:
    # Golden files are never regenerated; a different digest means one was overwritten.
    assert hashlib.sha256(_journal(run_id)).hexdigest() == EXPECTED[run_id]["sha256"]


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_golden_file_decodes_to_the_expected_event_types(run_id: str) -> None:
    events = _events(run_id)
    assert [type(event).__name__ for event in events] == EXPECTED[run_id]["events"]
    started = events[0]
    assert isinstance(started, RunStarted)
    case = workflows.CASES[run_id]
    assert started.run_id == run_id
    assert started.workflow == EXPECTED[run_id]["workflow"] == case.workflow.name


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_golden_arguments_are_the_cases_arguments(run_id: str) -> None:
    # durable.run on the golden journal (below) also compares the encoded bytes.
    case = workflows.CASES[run_id]
    started = _events(run_id)[0]
    if started.incarnation:  # a run that continued as new holds its latest arguments
        assert started.workflow == case.workflow.name
        return
    assert loads_value(started.args) == _as_decoded([case.args, case.kwargs])


def _as_decoded(value: Any) -> Any:
    """``value`` as it comes back from the journal: tuples as lists, frozensets as sets."""
    if isinstance(value, list | tuple):
        return [_as_decoded(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_decoded(item) for key, item in value.items()}
    if isinstance(value, frozenset):
        return set(value)
    return value


def _replay(run_id: str) -> Replay:
    """The journal fed to the replay loop (which a retried journal needs whole: a RunRetried
    supersedes records before it)."""
    return replay(workflows.CASES[run_id].workflow, _events(run_id))


def _check_recorded_outcome(expected: dict[str, Any], outcome: Any) -> None:
    if expected["outcome"] == "completed":
        assert isinstance(outcome, Returned)
        value = loads_value(outcome.result)
        assert value == loads_value(bytes.fromhex(expected["result_cbor"]))
        if "result" in expected:
            assert value == expected["result"]
    elif expected["outcome"] == "cancelled":
        assert isinstance(outcome, Stopped)
        assert outcome.reason == expected["reason"]
    else:
        assert expected["outcome"] == "failed"
        assert isinstance(outcome, Raised)
        assert (outcome.error.type, outcome.error.message) == (
            expected["error_type"],
            expected["error_message"],
        )


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_replaying_the_golden_journal_gives_the_expected_outcome(run_id: str) -> None:
    expected = EXPECTED[run_id]
    core = _replay(run_id)
    assert sum(workflows.CALLS.values()) == 0, "replay executed an activity"
    if expected["outcome"] == "unfinished":
        assert core.outcome is None
        assert core.terminal is None
        assert list(core.pending) == [expected["in_flight_step"]]
        assert core.pending[expected["in_flight_step"]].scheduled_at is not None
        resolved = [e for e in _events(run_id) if isinstance(e, ActivityCompleted | ActivityFailed)]
        assert len(resolved) == expected["completed_steps"]
        return
    assert not core.pending
    _check_recorded_outcome(expected, core.outcome)
    # The replayed outcome is the journaled one.
    terminal = _events(run_id)[-1]
    assert core.terminal == terminal
    if isinstance(terminal, RunCompleted):
        assert loads_value(terminal.result) == loads_value(core.outcome.result)
    elif isinstance(terminal, RunCancelled):
        assert terminal.reason == core.outcome.reason
    else:
        assert isinstance(terminal, RunFailed)
        assert terminal.error.type == core.outcome.error.type


def _store_with(run_id: str, tmp_path: Path) -> durable.FileStore:
    store = durable.FileStore(tmp_path / "store", codec=workflows.CASES[run_id].codec)
    target = Path(store.journal_path(run_id))
    target.parent.mkdir(parents=True)
    shutil.copyfile(GOLDEN / f"{run_id}.journal", target)
    return store


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_durable_run_on_the_golden_journal(run_id: str, tmp_path: Path) -> None:
    expected = EXPECTED[run_id]
    case = workflows.CASES[run_id]
    store = _store_with(run_id, tmp_path)

    def run() -> Any:
        return durable.run(case.workflow, *case.args, id=run_id, store=store, **case.kwargs)

    if expected["outcome"] == "cancelled":
        with pytest.raises(durable.Cancelled, match=expected["reason"]):
            run()
        assert sum(workflows.CALLS.values()) == 0
        return
    if expected["outcome"] == "failed":
        with pytest.raises(durable.WorkflowFailed) as failed:
            run()
        assert (failed.value.error.type, failed.value.error.message) == (
            expected["error_type"],
            expected["error_message"],
        )
        assert sum(workflows.CALLS.values()) == 0
        return
    result = run()
    if expected["outcome"] == "unfinished":
        # Only the step that was in flight runs again; the completed one is fed from the journal.
        assert dict(workflows.CALLS) == expected["calls_on_resume"]
        expected = expected["after_resume"]
    else:
        assert sum(workflows.CALLS.values()) == 0, "a finished run executed an activity again"
    assert _as_decoded(result) == loads_value(bytes.fromhex(expected["result_cbor"]))
    if "result" in expected:
        assert result == expected["result"]


def test_resuming_the_unfinished_golden_journal_appends_a_clean_v1_tail(tmp_path: Path) -> None:
    run_id = "order-unfinished"
    case = workflows.CASES[run_id]
    store = _store_with(run_id, tmp_path)
    durable.run(case.workflow, *case.args, id=run_id, store=store, **case.kwargs)
    data = Path(store.journal_path(run_id)).read_bytes()
    golden = _journal(run_id)
    assert data.startswith(golden), "recovery must only append to a journal without a torn tail"
    found = scan(data, run_id)
    assert not found.torn
    names = [type(event).__name__ for event in found.events]
    assert names == [*EXPECTED[run_id]["events"], "RunResumed", "ActivityCompleted", "RunCompleted"]
    assert found.events[-2].seq == EXPECTED[run_id]["in_flight_step"]


def test_retried_golden_journal_keeps_each_failed_attempt() -> None:
    events = _events("convert-retried")
    failures = [e for e in events if isinstance(e, AttemptFailed)]
    assert [(f.seq, f.attempt, f.error.type) for f in failures] == [
        (0, 1, "ConnectionError"),
        (0, 2, "ConnectionError"),
    ]
    assert failures[0].error.message == "rate service unavailable (attempt 1)"
    assert all(f.retry_at >= f.t for f in failures)
    (completed,) = [e for e in events if isinstance(e, ActivityCompleted)]
    assert (completed.seq, completed.attempts) == (0, 3)


def test_compensated_golden_journal_records_the_exhausted_activity() -> None:
    events = _events("book-compensated")
    scheduled = [(e.seq, e.name) for e in events if isinstance(e, ActivityScheduled)]
    assert scheduled == [
        (0, "golden.v1.charge_payment"),
        (1, "golden.v1.reserve_stock"),
        (2, "golden.v1.refund_payment"),
    ]
    (failed,) = [e for e in events if isinstance(e, ActivityFailed)]
    assert (failed.seq, failed.attempts) == (1, 2)
    assert failed.error.type == "golden_v1_workflows.OutOfStock"
    assert "Traceback" in failed.error.traceback


def test_golden_values_decode_to_their_python_types() -> None:
    completed = _events("echo-values")[-1]
    assert isinstance(completed, RunCompleted)
    result = loads_value(completed.result)
    assert result["label"] == "all v1 value types"
    echoed = result["echoed"]
    assert echoed == _as_decoded(workflows.ECHO_VALUES)
    for key, value in workflows.ECHO_VALUES.items():
        expected_type = {tuple: list, frozenset: set}.get(type(value), type(value))
        assert type(echoed[key]) is expected_type, key
    assert echoed["datetime_offset"].utcoffset() == workflows.ECHO_VALUES["datetime_offset"].utcoffset()


# --- the worked examples of docs/journal-v1.md, section 11, on a golden journal ---

ORDER = "order-completed"
ORDER_OFFSETS = [16, 101, 167, 208, 292, 319, 358]  # records 0-5, then the end of the file


def test_the_documented_offsets_and_durable_upto_stamps() -> None:
    data = _journal(ORDER)
    offsets = [16]
    stamps = []
    while offsets[-1] < len(data):
        pos = offsets[-1]
        length = int.from_bytes(data[pos + 2 : pos + 6], "little")
        stamps.append(cbor2.loads(data[pos + 10 : pos + 10 + length])[1:3])
        offsets.append(pos + 10 + length)
    assert offsets == ORDER_OFFSETS
    assert stamps == [[0, -1], [1, -1], [2, -1], [3, 2], [4, 2], [5, 4]]


def test_documented_torn_tail_example() -> None:
    # A crash while record 4 was written: 17 of its bytes landed.
    found = scan(_journal(ORDER)[: ORDER_OFFSETS[4] + 17], ORDER)
    assert (found.torn, found.end, len(found.events)) == (True, 292, 4)


def test_documented_corruption_example() -> None:
    damaged = bytearray(_journal(ORDER))
    damaged[ORDER_OFFSETS[1] + 20] ^= 0x04  # one bit inside record 1
    with pytest.raises(durable.JournalCorruptError) as corrupt:
        scan(bytes(damaged), "runs/order-completed.journal")
    assert (corrupt.value.record, corrupt.value.offset) == (1, 101)
    assert str(corrupt.value).startswith(
        "runs/order-completed.journal: record 1 at byte 101 is damaged (checksum mismatch)"
    )


def test_documented_hole_example() -> None:
    # Records 0-4 written, record 3's sectors came back as zeros, record 4 landed.
    data = _journal(ORDER)[: ORDER_OFFSETS[5]]
    holed = data[: ORDER_OFFSETS[3]] + bytes(ORDER_OFFSETS[4] - ORDER_OFFSETS[3]) + data[ORDER_OFFSETS[4] :]
    found = scan(holed, ORDER)
    assert (found.torn, found.end, len(found.events)) == (True, 208, 3)


def test_documented_annotated_journal() -> None:
    data = _journal("double")
    assert len(data) == 167
    assert data[:16].hex() == "894455520d0a1a0a0100000029c9878c"
    assert data[16:26].hex() == "d54a2a000000750e616a"
    assert [type(event).__name__ for event in _events("double")] == EXPECTED["double"]["events"]


# --- payload codecs (journal contract v1, section 8.2) ---------------------------------

CODEC_CASES = sorted(run_id for run_id, case in workflows.CASES.items() if case.codec is not None)


def test_there_are_golden_journals_with_codecs() -> None:
    assert CODEC_CASES == ["codec-encrypted", "codec-zlib"]


@pytest.mark.parametrize("run_id", CODEC_CASES)
def test_every_payload_of_a_codec_golden_journal_is_sealed(run_id: str) -> None:
    raw = scan(_journal(run_id), run_id).events
    names = "zlib" if run_id == "codec-zlib" else "zlib+aes-gcm"
    shown = [
        loads_shown(getattr(event, field))
        for event in raw
        for field in ("args", "result", "value", "payload")
        if isinstance(getattr(event, field, None), bytes)
    ]
    assert shown and all(repr(value) == f"<encoded by {names}>" for value in shown)


def test_an_encrypted_golden_journal_holds_no_plain_payload() -> None:
    data = _journal("codec-encrypted")
    subscriber = workflows.SUBSCRIBER
    assert subscriber.name.encode() not in data
    assert b"golden-2026-12" in data  # the key id travels with each payload (never the key)


@pytest.mark.parametrize("run_id", CODEC_CASES)
def test_a_codec_golden_journal_without_its_codec_is_a_clear_error(run_id: str, tmp_path: Path) -> None:
    case = workflows.CASES[run_id]
    store = durable.FileStore(tmp_path / "store")
    target = Path(store.journal_path(run_id))
    target.parent.mkdir(parents=True)
    shutil.copyfile(GOLDEN / f"{run_id}.journal", target)
    with pytest.raises(durable.PayloadCodecError, match=r"without that codec; pass the same") as failed:
        durable.run(case.workflow, *case.args, id=run_id, store=store, **case.kwargs)
    assert failed.value.run_id == run_id
    assert sum(workflows.CALLS.values()) == 0
    assert target.read_bytes() == _journal(run_id), "nothing is written to a journal it cannot read"


def test_an_encrypted_golden_journal_with_the_wrong_key_is_refused(tmp_path: Path) -> None:
    run_id = "codec-encrypted"
    wrong = [Zlib(), AesGcm({"golden-2026-12": bytes(32)})]
    store = durable.FileStore(tmp_path / "store", codec=wrong)
    target = Path(store.journal_path(run_id))
    target.parent.mkdir(parents=True)
    shutil.copyfile(GOLDEN / f"{run_id}.journal", target)
    case = workflows.CASES[run_id]
    with pytest.raises(durable.PayloadCodecError, match="authentication failed") as failed:
        durable.run(case.workflow, *case.args, id=run_id, store=store)
    assert failed.value.codec == "aes-gcm"
    assert target.read_bytes() == _journal(run_id)
