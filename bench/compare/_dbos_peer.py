"""DBOS Transact's side of ``bench_compare.py``: a process of its own, driven over a pipe.

Run by ``bench_compare.py``, never by hand. DBOS is a process-wide singleton
with background threads, so each system it is measured on (SQLite, the
PostgreSQL server) gets a process of its own, launched once:

``serve URL [SCHEMA]``
    launch DBOS on the system database ``URL`` (PostgreSQL: its tables in the
    schema ``SCHEMA``), then read commands from stdin, one a line: ``steps N``
    (one workflow of ``N`` sequential steps) and ``three K`` (``K`` workflows
    of 3 steps, one after the other). Each is timed here with
    ``time.perf_counter`` around the calls alone and answered with a line
    ``@@ SECONDS`` (other lines on stdout are DBOS's own output).
``crash URL ID``
    start the 3-step workflow ``ID`` and exit the process (``os._exit``) in
    its third step: the first two steps are checkpointed, the workflow stays
    ``PENDING``.
``resume URL ID``
    launch DBOS, which recovers the pending workflow in a background thread,
    wait for its result, and print ``@@ WALL_TIME`` (``time.time()``) once it
    has it: the parent times from the process's spawn to that moment.

The workflows are the same as durable's in ``bench/_harness.py``: steps that
return their argument at once, so the figures are the engine's own cost.
"""

from __future__ import annotations

import os
import sys
import time

from dbos import DBOS, DBOSConfig, SetWorkflowID

CRASH_ENV = "BENCH_COMPARE_CRASH"


@DBOS.step()
def echo(i: int) -> int:
    return i


@DBOS.step()
def echo_or_crash(i: int) -> int:
    if i == 2 and os.environ.get(CRASH_ENV):
        os._exit(3)  # a crash in the third step: the first two are checkpointed
    return i


@DBOS.workflow()
def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += echo(i)
    return total


@DBOS.workflow()
def three_crashing() -> int:
    return sum(echo_or_crash(i) for i in range(3))


def _launch(url: str, schema: str | None = None) -> None:
    config: DBOSConfig = {"name": "bench-compare", "system_database_url": url, "log_level": "WARNING"}
    if schema:
        config["dbos_system_schema"] = schema
    DBOS(config=config)
    DBOS.launch()


def _reply(value: float) -> None:
    print(f"@@ {value!r}", flush=True)


def serve(url: str, schema: str | None) -> None:
    _launch(url, schema)
    _reply(0.0)  # ready
    for line in sys.stdin:
        verb, _, arg = line.strip().partition(" ")
        if verb == "quit":
            break
        n = int(arg)
        if verb == "steps":
            start = time.perf_counter()
            result = steps(n)
            elapsed = time.perf_counter() - start
            if result != n * (n - 1) // 2:
                raise RuntimeError(f"steps({n}) returned {result!r}")
        elif verb == "three":
            start = time.perf_counter()
            results = [steps(3) for _ in range(n)]
            elapsed = time.perf_counter() - start
            if results != [3] * n:
                raise RuntimeError(f"3-step workflows returned {sorted(set(results))!r}")
        else:
            raise RuntimeError(f"unknown command {line!r}")
        _reply(elapsed)
    DBOS.destroy()


def crash(url: str, workflow_id: str) -> None:
    os.environ[CRASH_ENV] = "1"
    _launch(url)
    with SetWorkflowID(workflow_id):
        three_crashing()
    raise RuntimeError("the third step did not crash the process")


def resume(url: str, workflow_id: str) -> None:
    _launch(url)  # recovers the pending workflow in a background thread
    # get_result polls the workflow's status every second by default: a short interval
    # keeps the poll from adding up to a second to DBOS's figure.
    result = DBOS.retrieve_workflow(workflow_id).get_result(polling_interval_sec=0.005)
    done = time.time()
    if result != 3:
        raise RuntimeError(f"the resumed workflow returned {result!r}")
    _reply(done)
    DBOS.destroy()


def main(argv: list[str]) -> None:
    mode, url, *rest = argv
    if mode == "serve":
        serve(url, rest[0] if rest else None)
    elif mode == "crash":
        crash(url, rest[0])
    elif mode == "resume":
        resume(url, rest[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
