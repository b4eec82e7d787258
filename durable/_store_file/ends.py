"""How each run ended, so that a listing by state reads only the journals that may match.

``<store>/ends.log`` gets a line ``<status> <run id, percent-quoted>`` when a run
ends (``completed``, ``failed`` or ``cancelled``): the runtime's ``ended`` hook
writes it before the run's due entry goes. One append, never fsynced: like the
starts log, it is a cache and never the truth. A listing filtered by state
(``durable ls --state failed``, the dashboard's filters) then reads the
journals of:

- the unfinished runs (the due index lists every one, see due.py), whatever the
  log says of them: a failed run that was retried is due again, and so read;
- the runs the log knows nothing of (a crash lost the line, a store made before
  the log, a journal copied in);
- the runs the log says ended in the state asked for.

Every other run ended in another state, for good: once its end is logged and
its due entry is gone, only ``retry`` changes it, and a retry makes the run
due before it writes anything. A crash between the journal's end and the line
leaves the due entry (it goes after the line), so the run is read, never
skipped. The journal read decides: the log only spares reads.

A reader that reads an ended run the log lacks notes it (``note``), so that an
older store's log fills in as it is listed; only ``completed`` and
``cancelled``, which nothing changes: a reader's ``failed`` could land after
the line of the run's retried end, and stand for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse

from .._store import ENDED_STATES
from .directory import Directory, read_whole

_LOG = "ends.log"
#: The states a run ends in for good (a reader may note them).
FINAL = frozenset({"completed", "cancelled"})
#: A whole line (one cut short by a crash, or garbage, does not match).
_LINES = re.compile(r"^(completed|failed|cancelled) ([^\s]+)\n", re.MULTILINE).findall


class Ends:
    """The ends log of one store directory; see the module docstring."""

    def __init__(self, directory: Directory) -> None:
        self.fs = directory.fs
        self.path = os.path.join(directory.path, _LOG)

    def add(self, run_id: str, status: str) -> None:
        """Note that ``run_id`` ended as ``status`` (best effort: a failure costs only
        reading its journal when a listing asks for a state)."""
        if status not in ENDED_STATES:
            raise ValueError(f"a run ends completed, failed or cancelled, not {status!r}")
        with contextlib.suppress(OSError):
            self.fs.append(self.path, f"{status} {urllib.parse.quote(run_id, safe='')}\n".encode())

    def note(self, run_id: str, status: str) -> None:
        """A reader found ``run_id`` ended as ``status``: logged if it never changes."""
        if status in FINAL:
            self.add(run_id, status)

    def statuses(self) -> dict[str, str]:
        """How each run the log knows ended, by run id (its last line wins)."""
        text = read_whole(self.fs, self.path).decode(errors="replace")
        unquote = urllib.parse.unquote
        # Most ids need no unquoting: skipping the call halves the time at 100,000 runs.
        return {unquote(q) if "%" in q else q: status for status, q in _LINES(text)}
