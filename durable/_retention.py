"""Keeping a store's size bounded: removing runs one by one, or all that finished long ago.

``durable rm`` and ``durable prune`` are built on :meth:`Store.remove`, which
removes a run durably and only if it has ended; ``force`` also removes runs that
have not (never one a live process holds: the store refuses). What is removed
is gone for good, journal and all: these are the only operations of durable
that delete what was journaled, and only on an operator's explicit request.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._core import events as ev
from ._core.errors import RunLockedError, StoreError
from ._core.ids import check_run_id
from ._store import Store


@attrs.frozen
class Removed:
    """What became of one run a removal was asked for.

    Attributes:
        outcome: ``"removed"``; ``"missing"`` (no such run); ``"unfinished"`` (it has not
            ended, and ``force`` was not given: it was kept); ``"held"`` (a live process
            holds it: it was kept, ``why`` says who); ``"would remove"`` (a dry run).
        why: for a run kept, why, in words.
    """

    run_id: str
    outcome: str
    why: str = ""


async def remove_runs(store: Store, run_ids: Sequence[str], *, force: bool = False) -> list[Removed]:
    """Remove each run if it has ended (or, with ``force``, if no live process holds it)."""
    return [await _remove_one(store, check_run_id(run_id), force) for run_id in run_ids]


async def _remove_one(store: Store, run_id: str, force: bool) -> Removed:
    try:
        outcome = await store.remove(run_id, unfinished=force)
    except RunLockedError as exc:
        return Removed(run_id, "held", str(exc))
    if outcome == "unfinished":
        return Removed(run_id, outcome, "it has not finished (--force removes it all the same)")
    return Removed(run_id, outcome)


async def prune(store: Store, before: float, *, force: bool = False, dry_run: bool = False) -> list[Removed]:
    """Remove the runs that finished before ``before`` (epoch seconds), oldest first; with
    ``force``, also the unfinished runs whose last record is older than that (idle since),
    unless a live process holds them. ``dry_run``: say what would go, remove nothing."""
    run_ids = await store.finished_before(before)
    if force:
        run_ids += await _idle_unfinished(store, before)
    if dry_run:
        return await _would_remove(store, run_ids)
    return [await _remove_one(store, run_id, force) for run_id in run_ids]


async def _would_remove(store: Store, run_ids: list[str]) -> list[Removed]:
    """What a prune of ``run_ids`` would do: remove each, but keep one a live process
    holds now (as the removal itself would refuse it)."""
    holders = await store.holders(run_ids)
    results = []
    for run_id in run_ids:
        holder = holders.get(run_id)
        if holder is not None and holder.live:
            why = f"run {run_id!r} is held by {holder.describe()}, which is alive; it would be kept"
            results.append(Removed(run_id, "held", why))
        else:
            results.append(Removed(run_id, "would remove"))
    return results


async def _idle_unfinished(store: Store, before: float) -> list[str]:
    """The unfinished runs that started before ``before`` and whose last record is older."""
    idle = []
    for run_id in await store.started_before(before):
        try:
            events = await store.read(run_id)
        except StoreError:
            idle.append(run_id)  # damaged, and old: its end cannot be told (--force only)
            continue
        last = events[-1] if events else None
        if last is not None and not isinstance(last, ev.TERMINAL) and getattr(last, "t", before) < before:
            idle.append(run_id)
    return idle
