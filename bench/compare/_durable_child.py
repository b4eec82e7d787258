"""durable's side of ``bench_compare.py``'s start-up figure: a crash, then a fresh process that resumes.

Run by ``bench_compare.py``, never by hand, the same way as DBOS's side
(``_dbos_peer.py``):

``crash STORE ID``
    ``durable.run`` the 3-step workflow ``ID`` in the FileStore ``STORE`` and
    exit the process (``os._exit``) in its third step: the first two steps are
    journaled, the run is unfinished.
``resume STORE ID``
    ``durable.run`` the same run id in a fresh process: it reads the journal,
    replays the first two steps and runs the third; print ``@@ WALL_TIME``
    (``time.time()``) once the result is back, so that the parent times from
    the process's spawn to that moment (imports included).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import durable

CRASH_ENV = "BENCH_COMPARE_CRASH"


@durable.activity
async def echo_or_crash(i: int) -> int:
    if i == 2 and os.environ.get(CRASH_ENV):
        os._exit(3)  # a crash in the third step: the first two are journaled
    return i


@durable.workflow(name="bench.compare.three_crashing")
def three_crashing() -> Any:
    total = 0
    for i in range(3):
        total += yield echo_or_crash(i)
    return total


def main(argv: list[str]) -> None:
    mode, store, run_id = argv
    if mode == "crash":
        os.environ[CRASH_ENV] = "1"
        durable.run(three_crashing, id=run_id, store=durable.FileStore(store))
        raise RuntimeError("the third step did not crash the process")
    if mode != "resume":
        raise SystemExit(f"unknown mode {mode!r}")
    result = durable.run(three_crashing, id=run_id, store=durable.FileStore(store))
    done = time.time()
    if result != 3:
        raise RuntimeError(f"the resumed run returned {result!r}")
    print(f"@@ {done!r}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
