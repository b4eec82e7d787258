"""The event loops durable runs on, as the ``loop`` option names them.

Apart from ``_asyncio.py`` (which imports trio), so that the command line can
declare ``--loop`` without importing either loop.
"""

from __future__ import annotations

from typing import Literal

#: The loops durable runs on, as the ``loop`` option names them.
Loop = Literal["trio", "asyncio"]
LOOPS: tuple[Loop, ...] = ("trio", "asyncio")


def check_loop(loop: object) -> Loop:
    """``loop`` as an option names it, or a ValueError that lists the choices."""
    if loop in LOOPS:
        return loop
    raise ValueError(f"loop must be 'trio' or 'asyncio' (got {loop!r})")
