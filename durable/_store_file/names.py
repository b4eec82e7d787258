"""Run ids to file names and back.

A run id is its journal's file name, plus ``.journal``, when it is made of
letters, digits, ``_``, ``-`` and (not first) ``.``. Any other id is
percent-encoded, ``.`` and ``~`` included. An encoding too long for a file name
is cut and ends in ``~`` and a hash of the id (the one ``~`` a name can hold):
such a name cannot be turned back into its run id, which is read from the
journal's first record instead.

Messages in the inbox are named after their run's journal (the same stem), then
the time they were posted and their message id.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse

from .._core.codec import FRAME_SIZE, HEADER_SIZE
from .._core.ids import check_run_id

_SAFE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_SUFFIX = ".journal"
_MESSAGE = ".message"
_STAGED = ".staged-"
_MAX_FILE_NAME = 255
_MIN_JOURNAL = HEADER_SIZE + FRAME_SIZE


def _file_name(run_id: str) -> str:
    """A safe file name for a run id; ids too long to encode get a hashed name (marked ``~``)."""
    if _SAFE.fullmatch(run_id):
        return run_id + _SUFFIX
    encoded = urllib.parse.quote(run_id, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(encoded) + len(_SUFFIX) > _MAX_FILE_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:32]
        encoded = f"{encoded[:160].rpartition('%')[0]}~{digest}"
    return encoded + _SUFFIX


def _names(run_id: str, file_name: str) -> bool:
    """Whether ``file_name`` is where the journal of ``run_id`` lives (and the id is valid)."""
    try:
        return _file_name(check_run_id(run_id)) == file_name
    except (TypeError, ValueError):
        return False


def _is_hashed(file_name: str) -> bool:
    return "~" in file_name


def _plain_run_id(file_name: str) -> str | None:
    """The run id a journal's file name says, without reading the journal; None for a
    hashed name (the id is in its first record only)."""
    stem = file_name[: -len(_SUFFIX)]
    if _is_hashed(stem):
        return None
    return urllib.parse.unquote(stem) if "%" in stem else stem
