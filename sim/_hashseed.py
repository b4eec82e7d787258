"""Replay under another string-hash seed, in a subprocess.

Python fixes ``PYTHONHASHSEED`` when the interpreter starts, so a workflow that
iterates a set of strings yields its commands in an order that only another
interpreter can change. This module replays the reference journal in child
interpreters started with other hash seeds and reports the first divergence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import durable

_CHILD = r"""
import importlib, importlib.util, sys
from durable.lowlevel import replay, scan
from durable._core.commands import lookup_workflow

module, path, name, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# The same inputs as the crash-free run's first process, so that only the hash seed differs.
import os, random, uuid
random.seed(seed * 7919 + 1)
ids = random.Random(f"uuid/{seed}/1")
uuid.uuid4 = lambda: uuid.UUID(int=ids.getrandbits(128), version=4)
os.getpid = lambda: 1001
if path:
    spec = importlib.util.spec_from_file_location("__sim_replayed__", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
else:
    importlib.import_module(module)
events = scan(sys.stdin.buffer.read(), "reference journal").events
replay(lookup_workflow(name), events)
"""

HASH_SEED_CAUSE = (
    "Likely cause: the workflow iterates a set (or a dict built from one) of strings or bytes, "
    "whose order changes with the interpreter's hash seed: iterate sorted(...) instead. (Any "
    "other input that differs between interpreters, such as the clock, has the same effect.)"
)


def _module_source(workflow: durable.Workflow[..., Any]) -> tuple[str, str] | None:
    """How a child interpreter finds the workflow: (module name, file path or "")."""
    module = workflow.fn.__module__
    if module != "__main__":
        return module, ""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return (module, path) if path else None


class HashSeedReplays:
    """Child interpreters replaying a journal under other hash seeds, started at once and
    read when :meth:`results` is called: they run while the parent explores."""

    def __init__(
        self, workflow: durable.Workflow[..., Any], journal: bytes, seeds: tuple[int, ...], *, sim_seed: int
    ) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._note: str | None = None
        if not seeds:
            return
        source = _module_source(workflow)
        if source is None:
            self._note = "the hash-seed replay was skipped: the workflow's module cannot be imported"
            return
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        for hash_seed in seeds:
            # The journal goes in through a file of the child's own (an offset of its own),
            # so that starting a child never waits for it to read.
            with tempfile.TemporaryFile() as journal_file:
                journal_file.write(journal)
                journal_file.seek(0)
                self._children[hash_seed] = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, source[0], source[1], workflow.name, str(sim_seed)],
                    stdin=journal_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(env, PYTHONHASHSEED=str(hash_seed)),
                )

    def results(self) -> tuple[dict[int, str], str | None]:
        """Wait for the children; return ``({seed: divergence}, note)`` (see
        :func:`hash_seed_divergences`)."""
        found: dict[int, str] = {}
        note = self._note
        for seed, child in self._children.items():
            _, stderr = child.communicate(timeout=120)
            if child.returncode == 0:
                continue
            text = stderr.decode(errors="replace").strip()
            if "NonDeterminismError" in text:
                message = text[text.index("NonDeterminismError") :].split(": ", 1)[-1]
                found[seed] = f"with PYTHONHASHSEED={seed} the replay diverged:\n{message}\n{HASH_SEED_CAUSE}"
            else:
                why = text.splitlines()[-1] if text else child.returncode
                note = f"the hash-seed replay could not run: {why}"
        self._children.clear()
        return found, note

    def stop(self) -> None:
        """Stop the children that are still running (an exploration that raised)."""
        for child in self._children.values():
            if child.poll() is None:
                child.kill()
            child.communicate()
        self._children.clear()


def hash_seed_divergences(
    workflow: durable.Workflow[..., Any],
    journal: bytes,
    seeds: tuple[int, ...],
    *,
    sim_seed: int,
) -> tuple[dict[int, str], str | None]:
    """Replay ``journal`` under each hash seed; return ``({seed: divergence}, note)``.

    The note explains why the check could not run (e.g. the workflow's module is
    not importable by a child interpreter); it is None when the check ran.
    """
    return HashSeedReplays(workflow, journal, seeds, sim_seed=sim_seed).results()
