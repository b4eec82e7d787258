"""A store's journals as the tools read them: whole, or up to their damage.

``durable ls``, ``show`` and ``replay`` look at every run of a store, and one
damaged or unreadable journal must stay that run's problem: :func:`read` never
raises for it, but returns a :class:`Journal` with the ``error`` and the valid
records in front of the damage (:func:`_salvage`, a bounded read of the file).
A store that fails as a whole (PostgreSQL unreachable) still raises. From a
:class:`Journal` come the run's timeline (:mod:`durable._timeline`) and its
replay check (:mod:`durable._replayer`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import _timeline as tl
from ._core import events as ev
from ._core.commands import Workflow
from ._core.errors import (
    DurableError,
    JournalCorruptError,
    JournalUnreadableError,
    JournalVersionError,
    PayloadCodecError,
    StoreError,
)
from ._core.payloads import Payloads
from ._replayer import ReplayCheck, check_replay
from ._states import mark_state
from ._store import Holder, Store
from ._store_file import FileStore


@attrs.frozen
class Journal:
    """A run's events as read from its store; ``error`` when it could not be read to its end."""

    run_id: str
    events: list[Any]
    error: Exception | None = None
    #: Who holds the unfinished run, or held it last without letting it go (see
    #: Store.holders): with the journal, what tells its state (durable/_states.py).
    holder: Holder | None = None
    #: Why payloads encoded by a codec stay encoded (``<encoded by NAME>``): the codec
    #: given refuses them (a wrong key); None when all that could be decoded was.
    codec_error: str | None = None

    @property
    def workflow(self) -> str | None:
        """The workflow its first record names, if it names one."""
        first = self.events[0] if self.events else None
        return (
            first.workflow if isinstance(first, ev.RunStarted) and isinstance(first.workflow, str) else None
        )

    @property
    def held(self) -> bool:
        """Whether a live process holds the run (its lock, its lease)."""
        return self.holder is not None and self.holder.live

    def timeline(self, now: float | None = None) -> tl.Timeline:
        """The run's timeline; an unfinished run's state as of ``now`` (default: the time
        of the call)."""
        error = self.error
        why = None
        if error is not None:
            why = str(error) if isinstance(error, DurableError) else tl.error_text(error)
        try:
            timeline = tl.build(self.run_id, self.events, journal_error=why, corrupt=_is_damage(error))
            return mark_state(timeline, self.holder, time.time() if now is None else now)
        except Exception as exc:  # the timeline must show what it can, never stop a listing
            return tl.build(self.run_id, [], journal_error=f"cannot be shown: {tl.error_text(exc)}")

    def check(
        self,
        workflows: Iterable[Workflow[..., Any]] | Mapping[str, Workflow[..., Any]],
        *,
        skip_undefined: bool,
    ) -> ReplayCheck:
        """The run replayed with the current code; a journal not read to its end cannot be."""
        if self.error is not None or self.codec_error is not None:
            why = f"cannot be replayed: {self.error or self.codec_error}"
            return ReplayCheck(self.run_id, self.workflow or "?", "error", why)
        return check_replay(self.events, workflows, run_id=self.run_id, skip_undefined=skip_undefined)


def _is_damage(error: Exception | None) -> bool:
    """Whether a journal's read error is damage ("corrupt"), rather than a journal that could
    not be read at all ("unreadable": a newer format, no permission...)."""
    if isinstance(error, JournalVersionError | JournalUnreadableError):
        return False
    return isinstance(error, JournalCorruptError) or not isinstance(error, StoreError)


async def read(store: Store, run_id: str, payloads: Payloads | None = None) -> Journal | None:
    """A run's journal, or None if the store has no such run.

    Never raises for a damaged or unreadable journal (it is that run's problem: the others
    are listed), but does for a store that fails (PostgreSQL unreachable). ``store`` has
    no codec: the tools decode payloads with ``payloads`` (``--codec``) themselves, so
    that a payload the codec refuses is shown encoded, not a failed listing.
    """
    try:
        events = await store.read(run_id)
    except Exception as exc:
        its_journal = isinstance(exc, JournalCorruptError | JournalVersionError) or isinstance(
            store, FileStore
        )
        if isinstance(exc, StoreError) and not its_journal:
            raise  # the database failed, not this run's journal
        salvaged, codec_error = _decoded(_salvage(store, run_id), payloads, run_id)
        return Journal(run_id, salvaged, exc, codec_error=codec_error)
    if events is None:
        return None
    unfinished = bool(events) and not isinstance(events[-1], (*ev.TERMINAL, ev.RunContinuedAsNew))
    holder = (await store.holders([run_id])).get(run_id) if unfinished else None
    events, codec_error = _decoded(events, payloads, run_id)
    return Journal(run_id, events, holder=holder, codec_error=codec_error)


def _decoded(events: list[Any], payloads: Payloads | None, run_id: str) -> tuple[list[Any], str | None]:
    """The events with every payload ``payloads`` can decode decoded, and the first refusal."""
    if payloads is None:
        return events, None
    decoded, first_error = [], None
    for event in events:
        try:
            decoded.append(payloads.unseal(event, run_id))
        except PayloadCodecError as exc:
            decoded.append(event)  # shown as <encoded by NAME>
            first_error = first_error or str(exc)
    return decoded, first_error


async def read_all(store: Store, payloads: Payloads | None = None) -> list[Journal]:
    """Every run's journal, in the store's order of run ids (see :func:`read`)."""
    journals = []
    for run_id in await store.run_ids():
        journal = await read(store, run_id, payloads)
        if journal is not None:
            journals.append(journal)
    return journals


def _salvage(store: Store, run_id: str) -> list[Any]:
    """The valid records in front of the damage, where the store lets us read its bytes
    (a FileStore, through its own reads: a FIFO or /dev/zero there is refused, not read)."""
    if not isinstance(store, FileStore):
        return []
    try:
        data = store.journal_bytes(run_id)
    except StoreError:
        return []
    return [] if data is None else tl.salvage(data)
