"""Import rules between the layers (STYLE.md) and a snapshot of the public API.

Layers, imports pointing one way only:

1. the pure core, the package ``durable._core`` (commands, events, values,
   codec, replay machine, policy, durations, run ids, errors): no trio, no
   store, no I/O, and no module of durable outside it;
2. the trio executor, the runtime and the stores, on top of the core;
3. the package root, re-exporting the public API.

``sim`` imports ``durable``, never the reverse. The rules are checked on the
source with ``ast`` (every ``import`` statement, also inside functions), following
imports within the package transitively, so a core module cannot reach trio
through a helper module either.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from simflows import good

import durable

PACKAGE = Path(durable.__file__).resolve().parent

# The core is the package durable._core, every module in it: a module added
# there is held to its rules without being listed here.
CORE_DIR = PACKAGE / "_core"
CORE = sorted(
    "durable._core" + ("" if path.stem == "__init__" else "." + path.stem) for path in CORE_DIR.glob("*.py")
)

# What the core must not reach: the event loop, the stores, and I/O.
FORBIDDEN_FOR_CORE = {
    "trio",
    "outcome",
    "sniffio",
    "durable._store",
    "durable._store_file",
    "durable._store_memory",
    "durable._store_postgres",
    "psycopg",
    "psycopg_pool",
    "durable._fs",
    "durable._executor",
    "durable._runtime",
    "durable._cli",
    "durable._loader",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "fcntl",
    "select",
    "selectors",
    "socket",
    "ssl",
    "subprocess",
    "signal",
    "threading",
    "multiprocessing",
    "concurrent",
    "asyncio",
    "sqlite3",
    "urllib",
    "http",
    "click",
    "rich",
    "time",  # the core never reads the clock: the executor hands it the time
}


def _module_file(module: str) -> Path | None:
    """The source file of a module inside ``durable``, or None for anything outside it."""
    parts = module.split(".")
    if parts[0] != "durable":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that runs at import or call time (``if TYPE_CHECKING:`` bodies left out)."""
    found = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                assert isinstance(child, ast.If)
                todo.extend(child.orelse)
            else:
                todo.append(child)
    return found


def _origin(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    path = _module_file(module)
    assert path is not None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def direct_imports(module: str) -> frozenset[str]:
    """The absolute names of the modules ``module`` imports, relative imports resolved.

    ``from . import _events`` counts as importing ``durable._core.events``; it counts
    as importing the package ``durable`` itself only when a name it takes is not
    a submodule (then it comes from ``durable/__init__``).
    """
    path = _module_file(module)
    assert path is not None, module
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            origin = _origin(module, node)
            submodules = {f"{origin}.{a.name}" for a in node.names if _module_file(f"{origin}.{a.name}")}
            names.update(submodules)
            if len(submodules) < len(node.names):
                names.add(origin)
    return frozenset(names)


def reachable(module: str) -> dict[str, list[str]]:
    """Every module imported by ``module``, directly or through modules of ``durable``,
    each with the chain of imports that reaches it."""
    chains: dict[str, list[str]] = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in sorted(direct_imports(current)):
            if name in chains:
                continue
            chains[name] = [*chains[current], name]
            if _module_file(name) is not None:
                todo.append(name)
    del chains[module]
    return chains


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def _forbidden(name: str) -> bool:
    return name in FORBIDDEN_FOR_CORE or (_top(name) in FORBIDDEN_FOR_CORE and not name.startswith("durable"))


def test_the_import_scanner_sees_relative_and_nested_imports() -> None:
    # Guard the guard: known edges of the package must show up.
    assert "durable._core.events" in direct_imports("durable._core.codec")  # from . import events as ev
    assert "durable._core.errors" in direct_imports("durable._core.codec")  # from .errors import ...
    assert "cbor2" in direct_imports("durable._core.codec")
    assert "trio" in direct_imports("durable._store_file.store")
    assert "durable._store" in direct_imports("durable._store_file.store")
    chain = reachable("durable._cli")
    assert "trio" in chain
    assert chain["trio"][0] == "durable._cli"
    # The root reaches the runtime only on first use (durable/__init__.py's __getattr__).
    assert "trio" not in reachable("durable")
    assert "durable._core.commands" in reachable("durable")


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_trio_no_store_no_io(module: str) -> None:
    assert _module_file(module) is not None, f"{module} is listed as core but does not exist"
    bad = {name: chain for name, chain in reachable(module).items() if _forbidden(name)}
    assert not bad, f"{module} (pure core) reaches: " + "; ".join(
        " -> ".join(chain) for chain in bad.values()
    )


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_nothing_of_durable_outside_the_core(module: str) -> None:
    outside = {
        name: chain
        for name, chain in reachable(module).items()
        if _top(name) == "durable" and not (name == "durable._core" or name.startswith("durable._core."))
    }
    assert not outside, f"{module} (pure core) reaches outside durable._core: " + "; ".join(
        " -> ".join(chain) for chain in outside.values()
    )


def test_the_core_holds_what_the_issue_names() -> None:
    expected = {
        "commands",
        "primitives",
        "events",
        "machine",
        "codec",
        "values",
        "errors",
        "policy",
        "durations",
        "ids",
    }
    assert {name.rpartition(".")[2] for name in CORE} >= expected


@pytest.mark.parametrize("module", CORE)
def test_the_core_does_not_import_the_package_root(module: str) -> None:
    # ``durable/__init__`` imports the runtime and the stores: reaching it from
    # the core would pull every layer in.
    chain = reachable(module).get("durable")
    assert chain is None, f"{module} imports the package root: " + " -> ".join(chain or [])


def _all_durable_modules() -> list[str]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(("durable", *parts)))
    return modules


#: The command line is an application above both packages: its `durable sim` verb
#: imports sim when it runs (and only then: see the next test).
_MAY_IMPORT_SIM = {"durable._cli_sim"}


@pytest.mark.parametrize("module", [m for m in _all_durable_modules() if m not in _MAY_IMPORT_SIM])
def test_durable_never_imports_sim(module: str) -> None:
    bad = [name for name in direct_imports(module) if _top(name) == "sim"]
    assert not bad, f"{module} imports {bad}: sim builds on durable, never the reverse"


def test_the_cli_imports_sim_only_inside_the_sim_verb() -> None:
    source = Path(durable.__file__).with_name("_cli_sim.py").read_text()
    tree = ast.parse(source)
    top_level = [
        node
        for node in tree.body
        if (
            isinstance(node, ast.Import | ast.ImportFrom)
            and any(_top(alias.name) == "sim" for alias in node.names)
        )
        or (isinstance(node, ast.ImportFrom) and node.module and _top(node.module) == "sim")
    ]
    assert not top_level


def test_importing_durable_loads_neither_sim_nor_the_cli() -> None:
    code = (
        "import sys, durable, durable.lowlevel\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'sim' or m in "
        "('durable._cli', 'durable._loader', 'click', 'rich'))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


# -- the public API ----------------------------------------------------------------

PUBLIC_API = [
    "Activity",
    "ActivityCall",
    "ActivityError",
    "ActivityInfo",
    "AttemptTimeout",
    "Cancelled",
    "ChildCall",
    "ChildWorkflowError",
    "Client",
    "ClientHandle",
    "Command",
    "DurableError",
    "DurableInternalError",
    "ErrorInfo",
    "FileStore",
    "JournalCorruptError",
    "JournalVersionError",
    "LoopMismatchError",
    "MemoryStore",
    "NonDeterminismError",
    "PayloadCodecError",
    "PostgresStore",
    "RetryPolicy",
    "RunConflictError",
    "RunHandle",
    "RunLockedError",
    "RunNotRetryableError",
    "Runtime",
    "SerializationError",
    "SignalTimeout",
    "Store",
    "StoreError",
    "UnknownRunError",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowFailed",
    "activity",
    "activity_info",
    "continue_as_new",
    "gather",
    "heartbeat",
    "now",
    "patched",
    "race",
    "random",
    "register",
    "run",
    "side_effect",
    "sleep",
    "uuid4",
    "wait_signal",
    "workflow",
]


def test_the_public_api_is_exactly_this() -> None:
    # Changing the public surface is deliberate: update this list with it.
    assert sorted(durable.__all__) == PUBLIC_API
    assert len(set(durable.__all__)) == len(durable.__all__), "a name is listed twice in __all__"
    assert sorted(PUBLIC_API) == PUBLIC_API


@pytest.mark.parametrize("name", PUBLIC_API)
def test_every_public_name_exists_and_is_documented(name: str) -> None:
    assert hasattr(durable, name), f"durable.{name} is in __all__ but does not exist"
    obj = getattr(durable, name)
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    assert doc and doc.strip(), f"durable.{name} has no docstring"


@pytest.mark.parametrize("name", [n for n in PUBLIC_API if inspect.isclass(getattr(durable, n, None))])
def test_public_classes_belong_to_durable(name: str) -> None:
    cls = getattr(durable, name)
    assert cls.__module__ == "durable", f"durable.{name}.__module__ is {cls.__module__!r}"
    assert repr(cls) == f"<class 'durable.{name}'>"


def test_no_private_name_leaks_into_the_root() -> None:
    public = {n for n in vars(durable) if not n.startswith("_")}
    # Submodules show up as attributes once imported; everything else must be in __all__.
    extra = {n for n in public - set(durable.__all__) if not inspect.ismodule(getattr(durable, n))}
    assert not extra, f"public-looking names outside __all__: {sorted(extra)}"


def test_importing_durable_or_the_cli_imports_no_loop_and_no_printing() -> None:
    # Start-up (SPEC section 8): a module that defines workflows, and `durable --help`,
    # must not wait for trio, asyncio's guest machinery, rich or the stores. The runtime
    # loads on first use of durable.Runtime (and the like), as a plain attribute.
    code = (
        "import sys, durable, durable._cli\n"
        "heavy = ('trio', 'rich', 'durable._runtime', 'durable._store_file')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "runtime = durable.Runtime\n"
        "print('trio' in sys.modules, runtime.__module__, durable.lowlevel.scan.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True durable scan"]


def test_the_reading_verbs_list_and_show_a_file_store_without_trio(tmp_path: Path) -> None:
    # Start-up (SPEC section 8: `durable ls --limit 50` <= 0.3 s): a FileStore's reads
    # never wait, so ls, show and replay run them without importing trio, which
    # would be most of their time. The store is filled in this process, with trio.
    store = durable.FileStore(tmp_path / "store", sync="none")
    durable.run(good.chain, 10, id="a", store=store)  # 0 + 1 + ... + 9
    code = (
        "import contextlib, sys\n"
        "from durable._cli import main\n"
        f"for verb in (['ls'], ['ls', '--status', 'completed'], ['show', 'a']):\n"
        f"    sys.argv = ['durable', *verb, '--store', {str(tmp_path / 'store')!r}]\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main()\n"
        "print('trio' in sys.modules, 'durable._runtime' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[-1] == "False False", done.stdout + done.stderr
    listed = [line for line in lines if line.split()[:3] == ["a", "simflows.chain", "completed"]]
    assert len(listed) == 2, done.stdout  # both listings
    assert "run a · simflows.chain · completed" in lines, done.stdout  # the timeline
    assert any(line.split() == ["result", "45"] for line in lines), done.stdout


def test_importing_durable_does_not_import_psycopg() -> None:
    # psycopg costs about a third of `import durable`: it loads with the first
    # PostgresStore, not with durable, its command line, or a FileStore's use.
    pytest.importorskip("psycopg")
    code = (
        "import sys, durable, durable.lowlevel, durable._cli\n"
        "from durable._store_from import store_from\n"
        "store_from('.durable-never-made')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')))\n"
        "store_from('postgresql://x@127.0.0.1/test')\n"
        "print('psycopg' in sys.modules, 'psycopg_pool' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True True"]


def test_without_psycopg_durable_imports_and_a_postgres_store_is_a_clear_error(tmp_path: Path) -> None:
    # psycopg is an optional dependency: hide it, as on a machine without the extra.
    (tmp_path / "psycopg.py").write_text("raise ImportError('no psycopg here')\n")
    code = (
        "import durable\n"
        "from durable._store_from import store_from\n"
        "try:\n"
        "    store_from('postgresql://x@127.0.0.1/test')\n"
        "except durable.StoreError as error:\n"
        "    print(error)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    assert "needs psycopg 3" in done.stdout and "postgres extra" in done.stdout
