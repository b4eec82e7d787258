"""Playing an exploration's schedules on several cores, in forked copies of this process.

Theory of operation
-------------------
Schedules are independent: each one starts from an empty simulated disk, calls
``before_each``, plays its lifetimes and checks them against the reference, and
nothing the simulator keeps carries over from one schedule to the next. So once
the recipes are known, :func:`play_all` forks worker processes (copies of this
one, the reference and the user's fake services included) that play every
``workers``-th recipe each and send back, per schedule, its failure (or None).
The parent reads them in recipe order, so ``on_schedule`` and the failures come
in the same order as in a serial exploration.

It is opt-in (``Simulator(workers=...)``): workers share whatever outside this
process's memory the activities touch (files, databases), so schedules played
at the same time could see each other's effects.

Anything unusual falls back to playing in this process: no ``os.fork``, another
thread running (a fork copies only the calling one), few schedules (a fork is
not worth it), or a worker that could not play or send a schedule (the parent
plays it again itself, so an exception raised by a schedule is raised here with
its own traceback).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, NoReturn

from ._plan import Recipe
from ._report import Failure

#: Below this many schedules an exploration plays them in this process.
MIN_SCHEDULES = 48
_LENGTH = struct.Struct("<I")
_ERROR = b"error"

Play = Callable[[Recipe], Failure | None]


def available_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(wanted: int | None, schedules: int) -> int:
    """How many processes to play ``schedules`` in (1: this one alone)."""
    if wanted is not None and wanted <= 1:
        return 1
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    if wanted is None and schedules < MIN_SCHEDULES:
        return 1
    count = wanted if wanted is not None else available_workers()
    return max(1, min(count, schedules))


def play_all(recipes: list[Recipe], play: Play, workers: int) -> Iterator[Failure | None]:
    """Each recipe's failure (None if it passed), in recipe order."""
    if workers <= 1:
        yield from map(play, recipes)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pids: list[int] = []
    pipes: list[BinaryIO] = []
    try:
        for worker in range(workers):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: it never returns
                os.close(read)
                _work(recipes[worker::workers], play, os.fdopen(write, "wb"))
            os.close(write)
            pids.append(pid)
            pipes.append(os.fdopen(read, "rb"))
        for index in range(len(recipes)):
            failure, ok = _receive(pipes[index % workers])
            if not ok:  # the worker could not: play the rest here (raising what it raised)
                _stop(pids)
                pids.clear()
                yield from map(play, recipes[index:])
                return
            yield failure
    finally:
        _stop(pids)
        for pipe in pipes:
            pipe.close()


def _work(recipes: list[Recipe], play: Play, out: BinaryIO) -> NoReturn:
    """A worker's life: play its recipes, send each verdict, exit without cleaning up
    (the parent's atexit handlers, buffers and finalizers are not the worker's to run)."""
    code = 0
    try:
        for recipe in recipes:
            try:
                message = pickle.dumps(play(recipe))
            except BaseException:
                message = _ERROR
                code = 1
            out.write(_LENGTH.pack(len(message)) + message)
            out.flush()
            if code:
                break
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _receive(pipe: BinaryIO) -> tuple[Failure | None, bool]:
    """One verdict from a worker: ``(failure, True)``, or ``(None, False)`` if it has none."""
    header = pipe.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None, False
    (length,) = _LENGTH.unpack(header)
    message = pipe.read(length)
    if len(message) < length or message == _ERROR:
        return None, False
    failure = pickle.loads(message)  # our own worker's, through our own pipe
    if failure is not None and not isinstance(failure, Failure):
        return None, False
    return failure, True


def _stop(pids: list[int]) -> None:
    """End the workers (they may be done already) and reap them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
