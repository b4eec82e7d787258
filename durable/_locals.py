"""Time travel: a run's local variables as they were at any step, rebuilt by replay.

Theory of operation
-------------------
Replay feeds a workflow its journal's recorded outcomes, so the generator it
rebuilds holds, at each ``yield``, exactly the variables the original run held
there. :func:`locals_at` stops that replay at the ``yield`` of step STEP and
reads the suspended generator's frames (and those of the generators it entered
with ``yield from``): nothing runs but the workflow's own code, no activity is
called, and nothing is written.

Where to stop is decided outside the replay core, by a subclass of
:class:`~durable.lowlevel.Replay` whose ``_resume`` refuses to resume the
generator once it has yielded step STEP (:class:`_Stopping`). That is the one
moment the generator is guaranteed to sit at that step's ``yield``: a step can
be yielded and resolved within one journal event (a ``wait_signal`` whose
signal came first), so looking at ``pending`` between events would miss it. A
journal holding ``RunRetried`` is fed as :func:`durable.lowlevel.replay` feeds
it: without the records the markers supersede (:mod:`durable._core.retried`).

Without a step, the state is the run's state now: where the generator waits at
the end of the journal, or, for a run that ended, its last step.
"""

from __future__ import annotations

import ast
import contextlib
import linecache
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import _timeline as tl
from ._core import events as ev
from ._core.commands import Workflow, lookup_workflow
from ._core.errors import JournalCorruptError
from ._core.machine import Replay
from ._core.payloads import is_sealed
from ._core.retried import supersession
from ._store_from import store_from

if TYPE_CHECKING:
    from ._store import Store

#: A value's text is cut (with an ellipsis) only past this many characters.
VALUE_WIDTH = 300


@attrs.frozen
class FrameLocals:
    """One generator frame of a rebuilt run: the workflow's own, or one it entered with ``yield from``.

    Attributes:
        function: the function's qualified name (``process_order``, ``Shop.refund``).
        file: the file it is defined in.
        line: the line it is suspended at (the ``yield``).
        source: that line's source text, stripped ("" when the file cannot be read).
        values: its local variables, as the workflow sees them (the real objects).
        texts: the same names, their values as text (``repr``, cut past :data:`VALUE_WIDTH`).
    """

    function: str
    file: str
    line: int
    source: str
    values: Mapping[str, Any] = attrs.field(repr=False)
    texts: Mapping[str, str]


@attrs.frozen
class RunLocals:
    """A run's workflow as it was when it yielded one step, rebuilt by replay.

    ``state["payment_id"]`` is a local variable's value, from the innermost frame
    that has it; ``str(state)`` is what ``durable show ID --locals`` prints.

    Attributes:
        run_id: the run.
        workflow: the workflow its journal names.
        step: the step whose ``yield`` the generator is suspended at.
        first_step: the journal's first step (0, or more after ``continue_as_new``).
        last_step: the latest step the journal reaches (the step of the run's state now).
        doing: what the code yields at ``step``, e.g. ``activity send_email('alice', ...)``.
        outcome: the step's outcome as the journal records it (the value replay sends
            into this ``yield`` next), ``in flight``, or ``not journaled yet``.
        ended: the run has ended (the state shown is at its last step, not "now").
        frames: the suspended generators, outermost (the workflow) first.
    """

    run_id: str
    workflow: str
    step: int
    first_step: int
    last_step: int
    doing: str
    outcome: str
    ended: bool
    frames: tuple[FrameLocals, ...]

    def __getitem__(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame.values:
                return frame.values[name]
        raise KeyError(f"no local variable {name!r} at step {self.step} (it has: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        """Every local variable's name, innermost frame last."""
        return [name for frame in self.frames for name in frame.texts]

    def lines(self) -> list[str]:
        """The text ``durable show --locals`` prints, line by line."""
        now = " (the run's state now)" if self.step == self.last_step and not self.ended else ""
        if self.step == self.last_step and self.ended:
            now = " (its last step: the run has ended)"
        steps = f"step {self.step} of {self.first_step}..{self.last_step}"
        head = f"run {self.run_id} · {self.workflow} · {steps}{now}"
        out = [head, f"  yielded  {self.doing}", f"  journal  {self.outcome}"]
        for frame in self.frames:
            out += ["", f"  {frame.function}  {_near(frame.file)}:{frame.line}"]
            if frame.source:
                out.append(f"    > {frame.source}")
            width = max((len(name) for name in frame.texts), default=0)
            out += [f"    {name.ljust(width)} = {text}" for name, text in frame.texts.items()]
            if not frame.texts:
                out.append("    (no local variables)")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_json(self) -> dict[str, Any]:
        """The ``durable show --locals --json`` document (its keys are documented in docs/cli.md)."""
        return {
            "version": 1,
            "id": self.run_id,
            "workflow": self.workflow,
            "step": self.step,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "ended": self.ended,
            "doing": self.doing,
            "outcome": self.outcome,
            "frames": [
                {
                    "function": frame.function,
                    "file": frame.file,
                    "line": frame.line,
                    "source": frame.source,
                    "locals": [
                        {"name": name, "type": _type_name(frame.values[name]), "value": text}
                        for name, text in frame.texts.items()
                    ],
                }
                for frame in self.frames
            ],
        }


class StepNotReached(ValueError):
    """The journal never reaches the step asked for.

    Attributes:
        run_id, step: the run and the step asked for.
        first, last: the steps it does reach (``last < first``: none).
    """

    def __init__(self, run_id: str, step: int, first: int, last: int) -> None:
        self.run_id, self.step, self.first, self.last = run_id, step, first, last
        reach = (
            f"steps {first} to {last}" if last > first else f"step {first}" if last == first else "no step"
        )
        super().__init__(
            f"run {run_id!r} never reached step {step}: its journal, replayed with the current code, "
            f"reaches {reach}; pass a step in that range (or none: the run's state now)"
        )


def locals_at(
    source: Store | str | os.PathLike[str] | Sequence[ev.Event],
    run_id: str | None = None,
    *,
    workflows: Iterable[Workflow[..., Any]] | Mapping[str, Workflow[..., Any]] = (),
    step: int | None = None,
) -> RunLocals:
    """Rebuild a run's workflow as it was when it yielded ``step``, and return its local variables.

    The journal is replayed with the current code up to that ``yield`` and stops
    there: no activity runs (replay feeds the recorded outcomes back) and nothing
    is written, so it is safe on the store of a live service, on a run another
    process holds (it answers "what is the run's state now?").

    Args:
        source: where the journal is: a :class:`durable.Store` (opened with the
            application's ``codec=`` if it uses one), a store's directory, or the
            run's journal events themselves (as :meth:`durable.Store.read` returns them).
        run_id: the run (needed with a store).
        workflows: the workflows to replay with; the one the journal names is
            otherwise looked up among the workflows the imported modules define.
        step: the step (default: the latest step the journal reaches, i.e. the
            run's state now; for a run that ended, its last step).

    Returns:
        A :class:`RunLocals`: the frames and their locals (real objects and text).

    Raises:
        NonDeterminismError: the current code no longer matches the journal (its
            message has the step and both sides).
        StepNotReached: the journal never reaches ``step``.
        LookupError: the workflow the journal names is not defined (import its module).
        ValueError: no such run, or its payloads are encoded by a codec the store lacks.
    """
    events = _events_of(source, run_id)
    started = events[0] if events else None
    if not isinstance(started, ev.RunStarted):
        raise JournalCorruptError(f"run {run_id!r}", None, "its journal does not start with RunStarted")
    if is_sealed(started.args):
        raise ValueError(
            f"run {started.run_id!r} keeps its payloads encoded by a codec: open the store with the "
            "application's codec= (on the command line: --codec MODULE:ATTR)"
        )
    workflow = _workflow_named(started.workflow, workflows)
    return _rebuild(workflow, events, step)


def _events_of(source: Any, run_id: str | None) -> list[ev.Event]:
    if isinstance(source, Sequence) and not isinstance(source, str):
        return list(source)
    store = store_from(os.fspath(source)) if isinstance(source, str | os.PathLike) else source
    if run_id is None:
        raise TypeError("locals_at(store, run_id): give the run id of the run to rebuild")
    events = trio.run(store.read, run_id)
    if events is None:
        raise ValueError(f"no run {run_id!r} in {store!r} (`durable ls` lists its runs)")
    return list(events)


def _workflow_named(
    name: str, workflows: Iterable[Workflow[..., Any]] | Mapping[str, Workflow[..., Any]]
) -> Workflow[..., Any]:
    defined = workflows if isinstance(workflows, Mapping) else {wf.name: wf for wf in workflows}
    workflow = defined.get(name) or lookup_workflow(name)
    if workflow is None:
        raise LookupError(
            f"workflow {name!r} is not defined here: import the module that defines it, "
            "or pass it with workflows=[...]"
        )
    return workflow


class _Reached(BaseException):
    """The generator yielded the step asked for: replay stops (not an Exception: the
    core must not take it for the workflow's own error)."""


class _Stopping(Replay):
    """A :class:`Replay` that refuses to resume its generator once it has yielded step ``stop``."""

    def __init__(self, workflow: Workflow[..., Any], started: ev.RunStarted, stop: int | None) -> None:
        self._stop = stop
        super().__init__(workflow, started)

    def _resume(self, value: Any, error: BaseException | None) -> None:
        # Every way the core moves the generator on comes through here: the last moment
        # it still sits at the yield of the step it yielded last.
        if self._stop is not None and self.next_seq > self._stop:
            raise _Reached
        super()._resume(value, error)

    def generator(self) -> types.GeneratorType[Any, Any, Any] | None:
        gen = getattr(self, "_gen", None)
        return gen if isinstance(gen, types.GeneratorType) else None


def _replayed(workflow: Workflow[..., Any], events: Sequence[ev.Event], stop: int | None) -> _Stopping:
    """``events`` fed to the workflow as :func:`durable.lowlevel.replay` feeds them, stopping
    at the ``yield`` of step ``stop``."""
    started = events[0]
    assert isinstance(started, ev.RunStarted)
    core = _Stopping(workflow, started, stop)
    # A retried journal is fed without the records its RunRetried markers supersede,
    # as replay() does once it meets one (see durable._core.machine).
    plan = supersession(events, started.run_id) if ev.RunRetried in map(type, events) else None
    try:
        for index in range(1, len(events)):
            event = events[index]
            if plan is None:
                core.apply(event)
            elif index in plan.skipped:
                continue
            elif type(event) is ev.RunRetried:
                core.reopen(plan.reopened[index], event.t)
            else:
                core.apply(event)
    except _Reached:
        pass
    return core


def _rebuild(workflow: Workflow[..., Any], events: Sequence[ev.Event], step: int | None) -> RunLocals:
    started = events[0]
    assert isinstance(started, ev.RunStarted)
    whole = _replayed(workflow, events, None)
    last = whole.next_seq - 1
    ended = whole.outcome is not None
    if step is None and not ended and last >= started.first_seq:
        core, step = whole, last  # the run's state now: where its generator waits
    else:
        whole.close()
        step = last if step is None else step
        if not started.first_seq <= step <= last:
            raise StepNotReached(started.run_id, step, started.first_seq, last)
        core = _replayed(workflow, events, step)
    doing, outcome = _doing(core, events, step)
    try:
        return RunLocals(
            run_id=started.run_id,
            workflow=workflow.name,
            step=step,
            first_step=started.first_seq,
            last_step=last,
            doing=doing,
            outcome=outcome,
            ended=ended,
            frames=tuple(_frames(core.generator())),
        )
    finally:
        core.close()


def _doing(core: Replay, events: Sequence[ev.Event], step: int) -> tuple[str, str]:
    """What the code yielded as ``step``, and its outcome as the journal records it."""
    for shown in tl.build(core.run_id, list(events)).steps:
        if shown.seq == step:
            return _cut(shown.name_text), _cut(_outcome_text(shown))
    open_step = core.pending.get(step) or core.cancelled.get(step)
    if open_step is not None:  # yielded by the code, not journaled yet: what happens next
        return _cut(open_step.command.describe()), "not journaled yet: the run's next step"
    return "?", "?"


def _outcome_text(shown: tl.Step) -> str:
    """A journaled step's outcome in the words of ``--locals`` (its own, not the timeline's
    row: "in flight" is what replay has no outcome to feed back for)."""
    if shown.error is not None:
        return f"{shown.status}: {shown.error}"
    if shown.result is not None:
        return shown.result
    if shown.status == "running":
        return "waiting" if shown.kind == "signal" else "in flight"
    return shown.status


def _cut(text: str) -> str:
    return tl.printable(tl.shorten(text, VALUE_WIDTH))


def _near(file: str) -> str:
    """A file under the current directory by its relative path (shorter to read)."""
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive
        return file
    return file if relative.startswith("..") else relative


def _frames(gen: Any) -> list[FrameLocals]:
    """The suspended generator's frames, then those it entered with ``yield from``."""
    frames = []
    while isinstance(gen, types.GeneratorType) and gen.gi_frame is not None:
        frame = gen.gi_frame
        values = {name: value for name, value in dict(frame.f_locals).items() if not name.startswith(".")}
        filename, line = frame.f_code.co_filename, frame.f_lineno
        frames.append(
            FrameLocals(
                function=gen.gi_code.co_qualname,
                file=filename,
                line=line,
                source=tl.printable(linecache.getline(filename, line).strip()),
                values=values,
                texts={name: value_text(value) for name, value in values.items()},
            )
        )
        gen = gen.gi_yieldfrom
    return frames


def value_text(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value as the CLI shows payloads: its ``repr``, printable, cut with an ellipsis past ``width``."""
    try:
        text = repr(value)
    except Exception as exc:  # a viewer shows what it can
        text = f"<{type(value).__name__} whose repr failed: {tl.error_text(exc)}>"
    return tl.printable(tl.shorten(text, width))


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


# --- finding the code without --code -------------------------------------------------


def find_workflow_file(name: str, directory: str | os.PathLike[str] = ".") -> list[Path]:
    """The ``*.py`` files of ``directory`` (not below it) that define the workflow ``name`` at
    their top level: a function of that name decorated with ``...workflow``, or any function
    decorated with ``...workflow(name=<name>)``. Read as source, never imported."""
    found = []
    for path in sorted(Path(directory).glob("*.py")):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        if any(_defines(node, name) for node in tree.body):
            found.append(path)
    return found


def _defines(node: ast.stmt, name: str) -> bool:
    if not isinstance(node, ast.FunctionDef):
        return False
    for decorator in node.decorator_list:
        called = decorator.func if isinstance(decorator, ast.Call) else decorator
        if not ast.unparse(called).endswith("workflow"):
            continue
        named = [
            kw.value.value
            for kw in (decorator.keywords if isinstance(decorator, ast.Call) else [])
            if kw.arg == "name" and isinstance(kw.value, ast.Constant)
        ]
        if (named[0] if named else node.name) == name:
            return True
    return False


def load_code(name: str, targets: Sequence[str]) -> dict[str, Workflow[..., Any]]:
    """The workflows to rebuild a run of the workflow ``name`` with, for the command line.

    ``targets`` are ``--code`` values, as ``durable replay`` takes them
    (``FILE_OR_MODULE`` or ``FILE_OR_MODULE:WORKFLOW``). Without them the code is
    found, in this order: a workflow of that name already imported; for a name
    ``pkg.mod.fn``, the module ``pkg.mod``; else the one ``*.py`` file of the current
    directory whose source defines it (read with :mod:`ast`, and only that file imported).

    Raises:
        LoadError: the code cannot be found or imported (the message says how to pass ``--code``).
    """
    # The loader is the command line's: importing durable.lowlevel must not load it.
    from ._loader import LoadError, load_module, load_workflow  # noqa: PLC0415

    defined: dict[str, Workflow[..., Any]] = {}
    for target in targets:
        if ":" in target and not Path(target).exists():
            chosen = load_workflow(target)
            defined[chosen.name] = chosen
        else:
            module = load_module(target)
            defined.update({wf.name: wf for wf in vars(module).values() if isinstance(wf, Workflow)})
    if targets:
        if name not in defined and lookup_workflow(name) is None:
            them = ", ".join(sorted(defined)) or "none"
            raise LoadError(
                f"the run's workflow {name!r} is not defined by --code {' '.join(targets)} (it defines: "
                f"{them}); pass the file or module that defines it"
            )
        return defined
    if lookup_workflow(name) is None and "." in name:
        module_name = name.rpartition(".")[0]
        # Not a module path (a class's method, Shop.order), or not importable from here: go on.
        with contextlib.suppress(LoadError):
            load_module(module_name)
    if lookup_workflow(name) is None:
        files = find_workflow_file(name)
        how = "pass --code FILE_OR_MODULE, where it is defined (as `durable replay` takes it)"
        if len(files) > 1:
            listed = ", ".join(str(path) for path in files)
            raise LoadError(f"several files here define the workflow {name!r} ({listed}): {how}")
        if not files:
            raise LoadError(
                f"cannot find the code of the run's workflow {name!r}: no *.py file in the current "
                f"directory defines it; {how}, e.g. --code shop.py or --code myapp.workflows"
            )
        load_module(str(files[0]))
    return {}
