"""Record the golden journals of a format version: ``python tests/golden/make_golden.py``.

Golden journals are the promise that every later durable still reads what an
earlier one wrote. So:

* NEVER regenerate a golden file of an existing format version. A committed
  ``.journal`` file is a historical fact, not a build product: if today's code
  cannot replay it, that is a compatibility break to fix in the code, not a
  file to re-record. This script therefore never overwrites a journal that
  exists, and keeps every entry of ``expected.json`` it finds.
* Only ADD: a new case in ``v1/workflows.py`` (a new run id) gets its journal
  recorded and its expected outcome appended the next time this script runs.
* A new format version gets a new directory (``v2/``) with its own workflows,
  recorded by a copy of this script pointed at it; ``v1/`` stays as it is.

Each case is a real ``durable.run`` on a :class:`durable.FileStore` in a
temporary directory; its journal is copied from the store's ``runs/``
directory. Unfinished runs are made by cutting a finished journal right after
the ``ActivityScheduled`` record of the step that was "in flight". Timestamps
in the journals are the wall-clock times of the recording.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

import durable
from durable.lowlevel import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    RunCancelled,
    RunCompleted,
    RunFailed,
    loads_value,
    payloads_from,
    scan,
)

VERSION_DIR = Path(__file__).resolve().parent / "v1"
EXPECTED = VERSION_DIR / "expected.json"
MODULE_NAME = "golden_v1_workflows"
HEADER_SIZE = 16  # journal contract v1: the header's size; each record is a 10-byte frame + payload


def load_workflows() -> ModuleType:
    """Import ``v1/workflows.py`` under the module name it was recorded with."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, VERSION_DIR / "workflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def record_offsets(data: bytes) -> list[int]:
    """Byte offset of every record of a journal, plus its end, read per the v1 framing."""
    offsets = [HEADER_SIZE]
    while offsets[-1] < len(data):
        pos = offsets[-1]
        length = int.from_bytes(data[pos + 2 : pos + 6], "little")
        offsets.append(pos + 10 + length)
    return offsets


def cut_after_scheduled(data: bytes, seq: int) -> bytes:
    """The journal up to the end of the ``ActivityScheduled`` record of step ``seq``."""
    events = scan(data, "golden").events
    offsets = record_offsets(data)
    for index, event in enumerate(events):
        if isinstance(event, ActivityScheduled) and event.seq == seq:
            return data[: offsets[index + 1]]
    raise ValueError(f"the journal has no ActivityScheduled record for step {seq}")


def run_case(workflows: ModuleType, case: Any, store: durable.FileStore) -> dict[str, Any]:
    """Run (or resume) a case to its end; describe the outcome as journaled."""
    workflows.reset()
    with contextlib.suppress(durable.WorkflowFailed):
        if getattr(case, "signals", ()) or getattr(case, "cancel", None) is not None:
            trio.run(_run_with_signals, case, store)
        else:
            durable.run(case.workflow, *case.args, id=case.run_id, store=store, **case.kwargs)
    if getattr(case, "retry", None) is not None:  # fix what failed, retry, run to the end
        workflows.PRINTER["broken"] = False
        trio.run(_retry, case, store)
    with open(store.journal_path(case.run_id), "rb") as file:
        events = unsealed(case, scan(file.read(), case.run_id).events)
    return {"outcome": describe_end(events[-1]), "calls": dict(sorted(workflows.CALLS.items()))}


def unsealed(case: Any, events: list[Any]) -> list[Any]:
    """The events of a case's journal with their payloads decoded by the case's codec."""
    payloads = payloads_from(case.codec)
    return events if payloads is None else payloads.unseal_all(events, case.run_id)


async def _run_with_signals(case: Any, store: durable.FileStore) -> None:
    """Start the case, send its signals (name, payload) one by one, and wait for its end."""
    async with durable.Runtime(store) as runtime:
        handle = await runtime.start(case.workflow, *case.args, id=case.run_id, **case.kwargs)
        while getattr(case, "signal_when_waiting", False) and not any(
            type(event).__name__ == "SignalAwaited" for event in await store.read(case.run_id) or []
        ):
            await trio.sleep(0.01)
        for name, payload in case.signals:
            await runtime.signal(case.run_id, name, payload)
        if case.cancel is not None:
            await runtime.cancel(case.run_id, case.cancel)
        with contextlib.suppress(durable.Cancelled):
            await handle.result()


async def _retry(case: Any, store: durable.FileStore) -> None:
    async with durable.Runtime(store) as runtime:
        await (await runtime.retry(case.run_id, case.retry)).result()


def describe_end(event: Any) -> dict[str, Any]:
    if isinstance(event, RunCompleted):
        end: dict[str, Any] = {"outcome": "completed", "result_cbor": event.result.hex()}
        value = loads_value(event.result)
        try:
            if json.loads(json.dumps(value)) == value:
                end["result"] = value
        except TypeError:
            pass
        return end
    if isinstance(event, RunCancelled):
        return {"outcome": "cancelled", "reason": event.reason}
    assert isinstance(event, RunFailed)
    return {"outcome": "failed", "error_type": event.error.type, "error_message": event.error.message}


def record(workflows: ModuleType, case: Any, tmp: Path) -> tuple[bytes, dict[str, Any]]:
    """Record one case; return the journal's bytes and its expected.json entry."""
    store = durable.FileStore(tmp / "store", codec=case.codec)
    first = run_case(workflows, case, store)
    path = store.journal_path(case.run_id)
    with open(path, "rb") as file:
        data = file.read()
    entry: dict[str, Any] = {"workflow": case.workflow.name, "calls_when_recorded": first["calls"]}
    if case.cut_after_scheduled is None:
        entry.update(first["outcome"])
    else:
        data = cut_after_scheduled(data, case.cut_after_scheduled)
        with open(path, "wb") as file:
            file.write(data)
        if case.resume:
            resumed = run_case(workflows, case, store)
            with open(path, "rb") as file:
                data = file.read()
            entry.update(resumed["outcome"])
            entry["calls_on_resume"] = resumed["calls"]
        else:
            # Resume a copy, to record what finishing the run does.
            copy = durable.FileStore(tmp / "copy", codec=case.codec)
            Path(copy.journal_path(case.run_id)).parent.mkdir(parents=True)
            shutil.copyfile(path, copy.journal_path(case.run_id))
            resumed = run_case(workflows, case, copy)
            events = scan(data, case.run_id).events
            done = [e for e in events if isinstance(e, ActivityCompleted | ActivityFailed)]
            entry.update(
                outcome="unfinished",
                completed_steps=len(done),
                in_flight_step=case.cut_after_scheduled,
                after_resume=resumed["outcome"],
                calls_on_resume=resumed["calls"],
            )
    entry["events"] = [type(event).__name__ for event in scan(data, case.run_id).events]
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    return data, entry


def main() -> None:
    workflows = load_workflows()
    expected: dict[str, Any] = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for run_id, case in workflows.CASES.items():
        target = VERSION_DIR / f"{run_id}.journal"
        if target.exists():
            if run_id not in expected:
                raise SystemExit(f"{target} exists but has no entry in {EXPECTED}; restore it from git")
            print(f"kept     {target.name} (golden files are never regenerated)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            data, entry = record(workflows, case, Path(tmp))
        target.write_bytes(data)
        expected[run_id] = entry
        print(f"recorded {target.name}: {entry['outcome']}, {len(entry['events'])} records")
    EXPECTED.write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
