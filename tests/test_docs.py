"""Every code example in the documentation runs, and every public name is documented.

What runs, page by page (every ``*.md`` under ``docs/``, one test per page):

- A fenced ``python`` block is executed. A page's blocks run in order in one
  namespace, so a page can build an example up; each page runs in a fresh
  temporary directory, which is the current directory (so the default store
  ``./.durable`` is the page's own) and is on ``sys.path``.
- A ``text`` block right after a ``python`` block (nothing but blank lines in
  between) is what that block prints: it is compared with the block's output
  the way console output is (below).
- A ``python`` block whose first line is a comment naming a file, ``# shop.py``,
  is written to that file in the page's directory instead of being executed
  (``# shop.py (continued)`` appends to it); the page then imports or runs it
  as a reader would. The tutorial builds ``shop.py`` this way, and every other
  page finds the tutorial's finished ``shop.py`` in its directory, so it can
  ``from shop import process_order``.
- A fenced ``console`` block is a shell session: each line that starts with
  ``$ `` is a command, and the lines after it, up to the next command, are its
  expected output. A block's commands run in one ``bash``, in the page's
  directory, with this interpreter's ``bin`` directory first on ``PATH`` (so
  ``python``, ``durable`` and ``pytest`` are ours). Output is compared after
  normalizing what differs from run to run (timestamps, durations, process
  ids, runs of spaces and of ``─``); ``...`` in an expected line matches any
  text, and a line that is only ``...`` matches any number of lines. A command
  must exit 0, unless the next command is ``echo $?`` (the page shows the
  code), or it was killed by SIGKILL, which the page shows as ``Killed`` the
  way an interactive shell does.
- Other languages (``sh``, ``text``, ``json``, no language...) are not run.

Two comments, invisible in the rendered page and on GitHub, change how the
block right after them (blank lines allowed in between) runs:

- ``<!-- not-run: the reason -->``: the block is not run (``python`` blocks
  must still parse). Use it sparingly: an example that does not run is an
  example nobody has checked.
- ``<!-- run-in: repository root -->``: the block runs with the root of this
  repository as its current directory, for examples that read the
  repository's own files (``tests/golden/``); they must not write there.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import durable
import durable.lowlevel
import sim
import sim.strategies

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIAL = DOCS / "tutorial.md"
SHARED_FILE = "shop.py"  # the tutorial's module, given to every other page

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
_RUN_IN = re.compile(r"^\s*<!--\s*run-in:\s*(?P<where>.*?)\s*-->\s*$")
REPOSITORY_ROOT = "repository root"
_FILE_COMMENT = re.compile(r"^#\s*(?P<name>[\w.-]+\.py)(?P<continued>\s*\(continued\))?\s*$")


@attrs.frozen
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first content line
    language: str
    text: str
    not_run: str | None  # the reason, when marked not to run
    after_block: bool = False  # only blank lines since the previous block's closing fence
    run_in: str | None = None  # where to run it, when not in the page's directory

    def where(self) -> str:
        return f"{self.page.relative_to(DOCS.parent)}:{self.line}"

    @property
    def file(self) -> tuple[str, bool] | None:
        """``(file name, continued)`` when the block's first line names a file."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_COMMENT.match(first) if self.language == "python" else None
        return (match["name"], bool(match["continued"])) if match else None


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (MyST directives included)."""
    found = []
    lines = page.read_text(encoding="utf-8").split("\n")
    pending_reason: str | None = None
    pending_place: str | None = None
    after_block = False
    i = 0
    while i < len(lines):
        line = lines[i]
        not_run, run_in = _NOT_RUN.match(line), _RUN_IN.match(line)
        if not_run or run_in:
            if not_run:
                pending_reason = not_run["reason"].strip()
            if run_in:
                pending_place = run_in["where"]
            after_block = False
            i += 1
            continue
        opening = _FENCE.match(line)
        if not opening:
            if line.strip():
                pending_reason = pending_place = None
                after_block = False
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body = []
        i += 1
        start = i + 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        i += 1
        language = opening["info"].lower()
        found.append(
            Block(page, start, language, "\n".join(body), pending_reason, after_block, pending_place)
        )
        pending_reason = pending_place = None
        after_block = True
    return found


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def shared_file() -> str:
    """The tutorial's ``shop.py``, assembled from its file blocks."""
    parts = [b.text for b in blocks(TUTORIAL) if b.file and b.file[0] == SHARED_FILE]
    assert parts, f"{TUTORIAL} has no `# {SHARED_FILE}` block"
    return "\n".join(parts) + "\n"


# --- running python blocks -------------------------------------------------------------


def run_python(block: Block, namespace: dict[str, object]) -> str:
    """Execute the block; return what it printed."""
    # Compiled under the page's name and line numbers, so a traceback points into the page;
    # not under this file's `from __future__ import annotations` (a reader's copy is not).
    code = compile("\n" * (block.line - 1) + block.text, str(block.page), "exec", dont_inherit=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, namespace)
    return printed.getvalue()


def check_printed(block: Block, printed: str) -> None:
    expected = block.text.split("\n")
    got = printed.split("\n")
    if not matches(expected, got):
        raise AssertionError(
            f"{block.where()}: the block above printed something else:\n{mismatch(expected, got)}"
        )


# --- running console blocks ------------------------------------------------------------

_SEPARATOR = "@@docs-command-ended@@"
_KILLED = re.compile(r"^bash: line \d+: +\d+ Killed\b.*$")


@attrs.frozen
class Command:
    line: int
    command: str
    expected: list[str]


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    for offset, line in enumerate(block.text.split("\n")):
        if line.startswith("$ "):
            found.append(Command(block.line + offset, line[2:], []))
        elif found:
            found[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"{block.where()}: a console block must start with a `$ ` command")
    return found


def run_console(block: Block, cwd: Path) -> None:
    steps = commands(block)
    script = []
    for step in steps:
        # Keep $? for the next command (so `echo $?` shows this one's status).
        script += [step.command, f'__rc=$?; printf "\\n{_SEPARATOR} %s\\n" "$__rc"; (exit $__rc)']
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("DURABLE_STORE", None)
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    outputs = re.split(rf"\n?{_SEPARATOR} (\d+)\n", done.stdout)
    assert len(outputs) == 2 * len(steps) + 1, f"{block.where()}: the shell stopped early:\n{done.stdout}"
    for index, step in enumerate(steps):
        output, status = outputs[2 * index], int(outputs[2 * index + 1])
        # A non-interactive bash reports a job killed by SIGKILL as "bash: line 3: 4242 Killed
        # <command>"; an interactive shell, as the page shows it, prints "Killed".
        got = [_KILLED.sub("Killed", line) for line in output.split("\n")] if output else []
        shows_status = index + 1 < len(steps) and steps[index + 1].command.strip() == "echo $?"
        where = f"{block.page.relative_to(DOCS.parent)}:{step.line}"
        assert status in (0, 137) or shows_status, f"{where}: `{step.command}` exited {status}:\n{output}"
        if not matches(step.expected, got):
            raise AssertionError(
                f"{where}: `{step.command}` printed something else:\n{mismatch(step.expected, got)}"
            )


_NORMALIZE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"(?:\d+(?:\.\d+)?(?:µs|ms|s|m|h))+\b"), "<duration>"),  # 1h00m, 59m59s, 2.5s
    (re.compile(r"\b(process|pid) \d+"), r"\1 <pid>"),
    (re.compile(r"\b(pid <pid> on) \S+?(,| is\b)"), r"\1 <host>\2"),
    (re.compile(r"\bsim-[0-9a-f]{12}\b"), "sim-<id>"),  # each exploration's own run id
    (re.compile(r"─+"), "─"),
    (re.compile(r"\s+"), " "),
]


def normalize(line: str) -> str:
    for pattern, replacement in _NORMALIZE:
        line = pattern.sub(replacement, line)
    return line.strip()


def mismatch(expected: list[str], got: list[str]) -> str:
    """A diff of the normalized lines (what the comparison sees), then the raw output."""
    diff = difflib.unified_diff(
        [normalize(line) for line in expected],
        [normalize(line) for line in got],
        "page",
        "actual",
        lineterm="",
    )
    return "\n".join([*diff, "--- actual output, as printed:", *got])


def matches(expected: list[str], got: list[str]) -> bool:
    """Line by line after normalizing; ``...`` matches any text, a ``...`` line any lines."""
    want = [normalize(line) for line in expected]
    have = [normalize(line) for line in got]
    while want and not want[-1]:
        want.pop()
    while have and not have[-1]:
        have.pop()

    def line_matches(pattern: str, line: str) -> bool:
        regex = ".*".join(re.escape(part) for part in pattern.split("..."))
        return re.fullmatch(regex, line) is not None

    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(have)
        if want[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(have) + 1))
        return j < len(have) and line_matches(want[i], have[j]) and match(i + 1, j + 1)

    return match(0, 0)


# --- the tests -------------------------------------------------------------------------


@pytest.fixture
def page_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory for one page: the current directory, on sys.path, holding nothing
    but (for pages other than the tutorial) the tutorial's shop.py."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    # Workflows register by name, process-wide: a page's must not outlive it.
    registry = getattr(durable._core.commands, "_REGISTRY", None)
    saved = dict(registry) if registry is not None else None
    modules = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]
    if registry is not None and saved is not None:
        registry.clear()
        registry.update(saved)


RUNNABLE = ("python", "console")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_examples_run(page: Path, page_dir: Path) -> None:
    if page != TUTORIAL:
        (page_dir / SHARED_FILE).write_text(shared_file())
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    printed: str | None = None  # by the python block just before, if it ran
    for block in blocks(page):
        if block.language == "text" and block.after_block and printed is not None:
            if block.not_run is None:
                check_printed(block, printed)
            printed = None
            continue
        printed = None
        if block.not_run is not None or block.language not in RUNNABLE:
            continue
        if block.file is not None:
            name, continued = block.file
            with (page_dir / name).open("a" if continued else "w") as out:
                out.write(block.text + "\n")
            sys.modules.pop(name.removesuffix(".py"), None)  # import the file as it is now
            importlib.invalidate_caches()
        elif block.run_in == REPOSITORY_ROOT:
            with contextlib.chdir(DOCS.parent):
                printed = run_python(block, namespace) if block.language == "python" else None
                if block.language == "console":
                    run_console(block, DOCS.parent)
        elif block.language == "python":
            printed = run_python(block, namespace)
        else:
            run_console(block, page_dir)


def test_markers_are_well_formed() -> None:
    for page in pages():
        for block in blocks(page):
            assert block.not_run != "", f"{block.where()}: `<!-- not-run: ... -->` needs a reason"
            assert block.run_in in (None, REPOSITORY_ROOT), (
                f"{block.where()}: `<!-- run-in: {block.run_in} -->`: the only place is {REPOSITORY_ROOT!r}"
            )


def test_python_blocks_parse() -> None:
    """Even the blocks that do not run must be valid Python."""
    for page in pages():
        for block in blocks(page):
            if block.language == "python":
                try:
                    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                    compile(block.text, str(block.page), "exec", flags=flags)
                except SyntaxError as exc:
                    raise AssertionError(f"{block.where()}: {exc}") from None


# --- every public name has a reference entry -------------------------------------------

_DIRECTIVE = re.compile(r"^\s*\.\. (?P<kind>[\w:]+)::\s*(?P<name>[\w.]+)")
_MEMBERS = re.compile(r"^\s+:members:\s*(?P<names>[\w, ]*)$")


def documented_names() -> set[str]:
    """Fully qualified names given an entry by an autodoc (or py:) directive in the reference."""
    names: set[str] = set()
    for page in sorted((DOCS / "reference").glob("*.md")):
        module = ""
        automodule = None
        for line in page.read_text(encoding="utf-8").split("\n"):
            directive = _DIRECTIVE.match(line)
            members = _MEMBERS.match(line)
            if directive:
                kind, name = directive["kind"], directive["name"]
                automodule = None
                if kind in ("currentmodule", "py:currentmodule"):
                    module = name
                elif kind == "automodule":
                    automodule = module = name
                else:
                    names.add(name if name.startswith(f"{module}.") else f"{module}.{name}")
            elif members and automodule:
                names.update(f"{automodule}.{n.strip()}" for n in members["names"].split(",") if n.strip())
    return names


@pytest.mark.parametrize("module", [durable, sim, sim.strategies, durable.lowlevel], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_reference(module: object) -> None:
    documented = documented_names()
    missing = [n for n in module.__all__ if f"{module.__name__}.{n}" not in documented]  # type: ignore[attr-defined]
    assert not missing, (
        f"public names of {module.__name__} with no entry in docs/reference/: {', '.join(missing)}; "  # type: ignore[attr-defined]
        "add an autodoc directive (e.g. `.. autoclass:: NAME`) to the right section"
    )
