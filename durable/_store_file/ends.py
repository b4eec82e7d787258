"""How each run ended, so that a listing by state reads only the journals that may match.

``<store>/ends.log`` gets a line ``<status> <start> <journal file name>`` when a
run ends (``completed``, ``failed`` or ``cancelled``): the runtime's ``ended``
hook writes it before the run's due entry goes. ``<start> <journal file name>``
is the run's line in the starts log (starts.py). One append, never fsynced:
like the starts log, it is a cache and never the truth. A listing filtered by
state (``durable ls --status failed``, the dashboard's filters) then reads the
journals of:

- the unfinished runs (the due index lists every one, see due.py), whatever the
  log says of them: a failed run that was retried is due again, and so read;
- the runs the log knows nothing of (a crash lost the line, a store made before
  the log, a journal copied in, a run continued as new);
- the runs the log says ended in the state asked for.

Every other run ended in another state, for good. Why a line can be trusted:

- It names the run's start, and counts only while the starts log gives the
  journal in ``runs/`` that same start: a line left by a run since removed
  (``rm``, ``prune``) says nothing of a new run given the same id, nor does a
  line a reader noted from a journal that was replaced meanwhile.
- The last line of a run wins, and a retry writes a ``retried`` line (the run
  is unknown again) and fsyncs it before it writes anything to the journal: the
  line of the retried run's new end may be lost in a crash, but never leaves
  the line of its failure standing for it.
- A run that ended is due never again only once its line is written (the line
  first, then the due entry goes); a crash in between leaves the entry, so the
  run is read, and whoever finds the entry stale writes the line.
- Each line begins with a newline, so that a line a crash cut short ends there
  and does not swallow the next one (an empty line means nothing).

A reader that reads an ended run the log lacks notes it (``note``), so that an
older store's log fills in as it is listed: only ``completed`` and
``cancelled``, which nothing changes (a reader's ``failed`` could land after the
``retried`` line of a retry that began meanwhile, and stand for the new end).
"""

from __future__ import annotations

import contextlib
import os
import re

from .._store import ENDED_STATES
from .directory import Directory, read_whole
from .names import _SUFFIX, _plain_run_id
from .starts import _WIDTH

_LOG = "ends.log"
#: The states a run ends in for good (a reader may note them).
FINAL = frozenset({"completed", "cancelled"})
#: Where the journal's file stem is in a line of the starts log (``<start> <stem>.journal``).
_NAME_AT = _WIDTH + 1
_NAME_END = -len(_SUFFIX)
#: What a retry writes: the run's end is unknown again.
_RETRIED = "retried"
#: A whole line: status, then the run's line of the starts log (one cut short by a
#: crash, or garbage, does not match).
_LINES = re.compile(
    r"^(completed|failed|cancelled|retried) ([0-9]{10}\.[0-9]{6} [^\s]+\.journal)$", re.MULTILINE
).findall


class Ends:
    """The ends log of one store directory; see the module docstring."""

    def __init__(self, directory: Directory) -> None:
        self.fs = directory.fs
        self.path = os.path.join(directory.path, _LOG)

    def add(self, start_line: str, status: str) -> None:
        """Note that the run whose starts-log line is ``start_line`` ended as ``status``
        (best effort: a failure costs only reading its journal in a listing by state)."""
        if status not in ENDED_STATES:
            raise ValueError(f"a run ends completed, failed or cancelled, not {status!r}")
        with contextlib.suppress(OSError):
            self.fs.append(self.path, f"\n{status} {start_line}\n".encode())

    def note(self, start_line: str, status: str) -> None:
        """A reader found the run ended as ``status``: logged if that never changes."""
        if status in FINAL:
            self.add(start_line, status)

    def retried(self, start_line: str) -> None:
        """The run is about to be retried: its end is unknown from now on, durably.

        Raises:
            OSError: the line could not be written and synced (the retry must not go on:
                the line of its failure would stand for the retried run's end).
        """
        self.fs.append(self.path, f"\n{_RETRIED} {start_line}\n".encode())
        fd = self.fs.open(self.path, write=True)
        try:
            self.fs.fdatasync(fd)
        finally:
            self.fs.close(fd)

    def statuses(self, starts: list[str]) -> dict[str, str]:
        """How each run the log knows ended, by run id: its last line, if it names the
        start that ``starts`` (the starts log's lines for ``runs/``) gives its journal.

        Work per line is done in C where it can be (a regular expression, dicts, a set):
        about 0.1 s for 100,000 runs; Python runs per line only for the names that are
        not run ids as they stand (percent-encoded or hashed)."""
        text = read_whole(self.fs, self.path).decode(errors="replace")
        last = {key: status for status, key in _LINES(text)}
        known = set(starts)
        ended = {
            key[_NAME_AT:_NAME_END]: status
            for key, status in last.items()
            if status != _RETRIED and key in known
        }
        for stem in [stem for stem in ended if "%" in stem or "~" in stem]:
            status = ended.pop(stem)
            run_id = _plain_run_id(stem + _SUFFIX)
            if run_id is not None:  # a hashed name: read, not trusted
                ended[run_id] = status
        return ended
