"""What the dashboard reads from a store: a page of runs, the counts per state, one run.

Everything here runs on trio (the server's loop, the stores' loop) and reads
through the same functions as the command line: a page of the run list is
``durable ls --limit``'s listing (``_cli._newest``), a run is ``durable show``'s
journal (``_journals.read``), its locals are ``durable show --locals``'
(``_locals.locals_at``).

The counts per state need every run's state. The store's state index
(``Store.state_index``) says how most runs that ended ended, without reading
them; :class:`StateCounter` reads the others incrementally: a run that has
completed, been cancelled or continued never changes state again, so its state
is remembered by id and its journal is read once; the others (unfinished,
failed: a failed run may be retried) are read again at each count. A count reads
at most ``budget`` journals, and says how many runs it has not read yet, so the
first page of a store of 100,000 runs comes back in the time of ``budget``
reads, and the counts fill in as the page refreshes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .. import _journals
from .. import _timeline as tl
from .._cli import _every, _newest
from .._core import events as ev
from .._core.ids import check_run_id
from .._core.payloads import Payloads
from .._locals import load_code, locals_at
from .._store import Store

#: States that never change once a journal has them (``retry`` makes a failed run run again).
FINAL = frozenset({"completed", "cancelled", "continued"})

#: The states the list always offers as filters, in ``durable ls``'s order.
STATES = ("queued", "running", "waiting", "stalled", "completed", "failed", "cancelled")


@attrs.frozen
class StateCounts:
    """How many runs are in each state; ``unread``: runs not counted yet (see StateCounter)."""

    counts: dict[str, int]
    total: int
    unread: int


class StateCounter:
    """Counts per state, remembering the runs whose state can no longer change.

    Args:
        store: the store the dashboard serves.
        payloads: the ``--codec`` payload codecs (states need none, but a journal is
            read the same way everywhere).
        budget: the most journals one count reads.
        ttl: a count is reused for this many seconds (every open page polls).
    """

    def __init__(
        self, store: Store, payloads: Payloads | None, *, budget: int = 500, ttl: float = 3.0
    ) -> None:
        self.store = store
        self.payloads = payloads
        self.budget = budget
        self.ttl = ttl
        self._final: dict[str, str] = {}
        self._last: tuple[float, StateCounts] | None = None

    def known_final(self, run_id: str) -> str | None:
        """The state of a run known to be finished for good, without reading it; else None."""
        return self._final.get(run_id)

    def forget(self, run_id: str) -> None:
        """Read the run again at the next count (an action changed it), and count afresh."""
        self._final.pop(run_id, None)
        self._last = None

    async def count(self) -> StateCounts:
        """The counts per state now (a count at most ``ttl`` seconds old)."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.ttl:
            return self._last[1]
        counts = await self._count()
        self._last = (now, counts)
        return counts

    async def _count(self) -> StateCounts:
        ids = await self.store.newest_first(None)
        index = await self.store.state_index()
        counts: Counter[str] = Counter()
        read = unread = 0
        for run_id in ids:
            status = self._final.get(run_id)
            if status is None and index is not None and run_id not in index.unfinished:
                status = index.ended.get(run_id)  # ended so for good: see StateIndex
            if status is None:
                if read >= self.budget:
                    unread += 1
                    continue
                read += 1
                status = await self._status(run_id)
                if status is None:
                    continue  # removed meanwhile
            counts[status] += 1
        present = set(ids)  # forget the runs removed since (rm, prune)
        for gone in [run_id for run_id in self._final if run_id not in present]:
            del self._final[gone]
        return StateCounts(dict(counts), len(ids), unread)

    async def _status(self, run_id: str) -> str | None:
        journal = await _journals.read(self.store, run_id, self.payloads)
        if journal is None:
            return None
        status = journal.timeline().status
        if status in FINAL:
            self._final[run_id] = status
        return status


@attrs.frozen
class ListQuery:
    """What the run list shows: a state, a workflow, an id search, the page."""

    state: str | None = None
    workflow: str | None = None
    search: str | None = None
    before: str | None = None

    def wanted(self) -> Callable[[tl.Timeline], bool] | None:
        """The filter on a run's timeline, or None without filters (``ls``'s fast path)."""
        if self.state is None and self.workflow is None:
            return None
        return lambda t: (
            (self.state is None or t.status == self.state)
            and (self.workflow is None or t.workflow == self.workflow)
        )


async def run_page(
    store: Store, payloads: Payloads | None, counter: StateCounter, query: ListQuery, limit: int
) -> tuple[list[tl.Timeline], bool]:
    """One page of the run list, newest first, read as ``durable ls --limit --before`` reads
    it, and whether an older page may hold more.

    Raises:
        CliUsageError: ``query.before`` names no run.
    """

    def keep_id(run_id: str) -> bool:
        # A run known to be finished for good, in another state than the one asked for,
        # is skipped without reading its journal.
        if query.search is not None and query.search not in run_id:
            return False
        known = counter.known_final(run_id)
        return query.state is None or known is None or known == query.state

    id_filter = keep_id if query.search is not None or query.state is not None else None
    wanted = query.wanted() or _every
    statuses = () if query.state is None else (query.state,)
    return await _newest(store, payloads, wanted, limit, query.before, id_filter, statuses)


async def read_run(store: Store, run_id: str, payloads: Payloads | None) -> tl.Timeline | None:
    """A run's timeline, as ``durable show`` reads it; None if there is no such run."""
    check_run_id(run_id)
    journal = await _journals.read(store, run_id, payloads)
    return None if journal is None else journal.timeline()


async def run_events(store: Store, run_id: str, payloads: Payloads | None) -> list[Any] | None:
    """A run's journal events decoded by the codecs, as ``show --locals`` reads them."""
    events = await store.read(run_id)
    if events is None:
        return None
    return events if payloads is None else [payloads.unseal(event, run_id) for event in events]


def locals_lines(events: Sequence[Any], step: int | None, code: Sequence[str]) -> list[str]:
    """The workflow's local variables at ``step``, as ``durable show --locals`` prints them.

    Raises:
        LoadError: the workflow's code cannot be found or imported.
        NonDeterminismError: the current code no longer matches the journal.
        LookupError, ValueError: no such step; payloads encoded by a codec not given.
    """
    first = events[0] if events else None
    if not isinstance(first, ev.RunStarted) or not isinstance(first.workflow, str):
        raise ValueError("its journal does not start with RunStarted")  # noqa: TRY004 - damage
    defined = load_code(first.workflow, code)
    return locals_at(list(events), workflows=defined, step=step).lines()
