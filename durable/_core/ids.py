"""Run ids: what a run id may be, and the ids of child runs.

A run id names one run in every store: a file name (percent-encoded) in a
``FileStore``, a primary key in PostgreSQL, an idempotency key's prefix in the
outside world. So the rules are the core's, not a store's.
"""

from __future__ import annotations

import hashlib

#: The longest run id, in characters.
MAX_RUN_ID = 200


def check_run_id(run_id: object) -> str:
    """Validate a run id: a non-empty str of at most 200 characters, no NUL, valid Unicode."""
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"a run id must be a non-empty str (got {run_id!r})")
    if len(run_id) > MAX_RUN_ID:
        raise ValueError(
            f"run id {run_id[:40]!r}... is {len(run_id):,} characters long; a run id has at most {MAX_RUN_ID}"
        )
    if "\x00" in run_id:
        raise ValueError(f"run id {run_id[:40]!r} holds a NUL character, which a run id may not hold")
    try:
        run_id.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"run id {run_id[:40]!r} holds a lone surrogate ({run_id[exc.start]!r} at index {exc.start}), "
            "which is not valid Unicode and cannot be stored; a run id must be text that encodes as "
            "UTF-8 (a str decoded with errors='surrogateescape' is not)"
        ) from None
    return run_id


def child_run_id(parent: str, seq: int) -> str:
    """The id of the child run that step ``seq`` of run ``parent`` starts.

    ``"<parent>/<seq>"``; a parent id too long for that is replaced by its digest,
    so ids stay within the 200 characters a run id may have.
    """
    child = f"{parent}/{seq}"
    if len(child) <= MAX_RUN_ID:
        return child
    return f"{hashlib.sha256(parent.encode()).hexdigest()[:40]}/{seq}"


def parent_run_id(run_id: str) -> str | None:
    """The id of the run whose child ``run_id`` would be (``"<parent>/<seq>"``), or None.

    Only a hint: a run started with an id of that form by hand has no parent, and a
    child of a parent whose id was too long (hashed) names no parent. Whoever uses it
    (waking a parent when its child ends) must do nothing worse than a replay when it
    is wrong.
    """
    parent, slash, seq = run_id.rpartition("/")
    return parent if slash and parent and seq.isdigit() else None
