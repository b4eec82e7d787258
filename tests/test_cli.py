"""The ``durable run`` verb, through the installed console script and through click's CliRunner.

Exit codes (SPEC section 7): 0 success, 1 the workflow failed, 2 a usage error
with one line on stderr and no traceback unless ``--debug``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner
from simflows import good

import durable
from durable._cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "process_order.py"
ORDER = f"{EXAMPLE}:process_order"
DURABLE = Path(sys.executable).parent / "durable"

MODULES = {
    "cli_echo_types.py": """
        import durable

        @durable.workflow
        def cli_echo_types(*args):
            return [[type(a).__name__, a] for a in args]
            yield
        """,
    "cli_failing.py": """
        import durable

        @durable.workflow
        def cli_failing(n):
            raise ValueError(f"no good: {n}")
            yield

        def not_a_workflow():
            pass
        """,
    "cli_broken.py": """
        import durable

        raise RuntimeError("this module is broken on purpose")
        """,
    "cli_syntax.py": """
        def oops(:
            pass
        """,
}


@attrs.frozen
class Outcome:
    code: int
    stdout: str
    stderr: str


Invoke = Callable[..., Outcome]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with small workflow modules, ledgers for the example's fake services."""
    for name, source in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    (tmp_path / "ledgers").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXAMPLE_LEDGERS", str(tmp_path / "ledgers"))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    # CliRunner imports workflow modules into this process: forget them afterwards.
    path = list(sys.path)
    yield tmp_path
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and (
            Path(file).resolve() == EXAMPLE or Path(file).resolve().is_relative_to(tmp_path.resolve())
        ):
            del sys.modules[name]


def run_process(*args: str) -> Outcome:
    done = subprocess.run(
        [str(DURABLE), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def run_runner(*args: str) -> Outcome:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the console script would print: the traceback of an escaped exception.
        tb = "".join(traceback.format_exception(result.exception))
        return Outcome(1, result.stdout, result.stderr + tb)
    return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(params=["process", "runner"])
def durable_cli(request: pytest.FixtureRequest, workdir: Path) -> Invoke:
    return run_process if request.param == "process" else run_runner


def assert_usage_error(outcome: Outcome, *fragments: str) -> str:
    assert outcome.code == 2, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    line = outcome.stderr.strip()
    assert "\n" not in line, f"expected one line on stderr, got:\n{outcome.stderr}"
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def ledger(workdir: Path, service: str) -> list[dict[str, object]]:
    path = workdir / "ledgers" / f"{service}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- through both the console script and CliRunner ---------------------------------


def test_run_prints_the_result_and_a_second_run_attaches(durable_cli: Invoke, workdir: Path) -> None:
    args = ("run", ORDER, "alice", "4200", "tok_visa", "--id", "order-1", "--store", "store")
    first = durable_cli(*args)
    assert first.code == 0, first
    payment_id = first.stdout.strip()
    assert payment_id.startswith("pay_"), first
    charges = ledger(workdir, "payments")
    assert [c["request"] for c in charges] == [{"amount": 4200, "token": "tok_visa"}]  # 4200 stayed an int
    assert str(charges[0]["key"]).startswith("order-1/")
    assert len(ledger(workdir, "mailer")) == 1

    again = durable_cli(*args)
    assert again.code == 0, again
    assert again.stdout == first.stdout
    assert len(ledger(workdir, "payments")) == 1, "attaching to a finished run charged again"
    assert len(ledger(workdir, "mailer")) == 1
    assert (workdir / "store" / "runs").is_dir()
    assert not (workdir / ".durable" / "runs").exists(), "--store was ignored"


def test_same_id_with_other_arguments_is_a_usage_error(durable_cli: Invoke, workdir: Path) -> None:
    assert durable_cli("run", ORDER, "alice", "4200", "tok_visa", "--id", "o", "--store", "s").code == 0
    conflict = durable_cli("run", ORDER, "alice", "9999", "tok_visa", "--id", "o", "--store", "s")
    assert_usage_error(conflict, "'o'", "9999")
    assert len(ledger(workdir, "payments")) == 1


def test_a_workflow_that_raises_exits_1(durable_cli: Invoke, workdir: Path) -> None:
    outcome = durable_cli("run", "cli_failing.py:cli_failing", "7", "--store", "s", "--id", "f")
    assert outcome.code == 1, outcome
    assert "Traceback" not in outcome.stderr
    assert outcome.stderr.startswith("error: ")
    assert "ValueError: no good: 7" in outcome.stderr


def test_debug_shows_the_traceback(durable_cli: Invoke, workdir: Path) -> None:
    outcome = durable_cli("run", f"{EXAMPLE}:no_such_workflow", "--store", "s", "--debug")
    assert outcome.code == 2  # a usage error, as without --debug
    assert "Traceback (most recent call last)" in outcome.stderr
    assert "no_such_workflow" in outcome.stderr
    assert outcome.stderr.splitlines()[-1].startswith("error: ")


def test_debug_keeps_the_exit_code_of_a_failed_workflow(durable_cli: Invoke, workdir: Path) -> None:
    outcome = durable_cli("run", "cli_failing.py:cli_failing", "7", "--store", "s", "--id", "f", "--debug")
    assert outcome.code == 1, outcome
    assert "Traceback (most recent call last)" in outcome.stderr
    assert "ValueError: no good: 7" in outcome.stderr


def test_a_module_that_does_not_import_is_a_usage_error(durable_cli: Invoke, workdir: Path) -> None:
    outcome = durable_cli("run", "cli_broken.py:anything", "--store", "s")
    assert_usage_error(outcome, "cli_broken.py", "broken on purpose")


# -- through CliRunner only (fast) ------------------------------------------------


def test_arguments_are_python_literals_else_strings(workdir: Path) -> None:
    args = ["42", "1.5", "hello", "'quoted'", "[1, 'a']", "{'k': 2}", "None", "True", "tok_visa", "2+x"]
    outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", *args, "--store", "s")
    assert outcome.code == 0, outcome
    assert outcome.stdout.strip() == repr(
        [
            ["int", 42],
            ["float", 1.5],
            ["str", "hello"],
            ["str", "quoted"],
            ["list", [1, "a"]],
            ["dict", {"k": 2}],
            ["NoneType", None],
            ["bool", True],
            ["str", "tok_visa"],
            ["str", "2+x"],
        ]
    )


def test_negative_numbers_are_arguments_not_options(workdir: Path) -> None:
    outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", "-3", "-1.5", "--store", "s")
    assert outcome.code == 0, outcome
    assert outcome.stdout.strip() == repr([["int", -3], ["float", -1.5]])


def test_without_id_each_run_is_a_new_run(workdir: Path) -> None:
    for _ in range(2):
        outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", "1", "--store", "s")
        assert outcome.code == 0, outcome
        assert outcome.stdout == "[['int', 1]]\n"
    assert len(list((workdir / "s" / "runs").iterdir())) == 2


def test_the_default_store_is_durable_store_from_the_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_STORE", str(workdir / "from-env"))
    outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", "--id", "e")
    assert outcome.code == 0, outcome
    assert (workdir / "from-env" / "runs").is_dir()
    assert not (workdir / ".durable").exists()


def test_a_module_with_a_syntax_error_is_a_usage_error(workdir: Path) -> None:
    assert_usage_error(
        run_runner("run", "cli_syntax.py:oops", "--store", "s"), "cli_syntax.py", "SyntaxError"
    )


def test_a_missing_module_is_a_usage_error(workdir: Path) -> None:
    assert_usage_error(
        run_runner("run", "no_such_module_xyz:wf", "--store", "s"), "no_such_module_xyz", "no module"
    )


def test_a_missing_file_is_a_usage_error(workdir: Path) -> None:
    assert_usage_error(run_runner("run", "missing.py:wf", "--store", "s"), "missing.py")
    assert_usage_error(run_runner("run", "sub/missing.py:wf", "--store", "s"), "missing.py")


def test_a_workflow_name_that_does_not_exist_is_a_usage_error(workdir: Path) -> None:
    line = assert_usage_error(run_runner("run", f"{EXAMPLE}:proces_order", "--store", "s"), "proces_order")
    assert "process_order" in line  # names what the module does define


@pytest.mark.parametrize("name", ["charge_payment", "FakeService", "LEDGERS"])
def test_a_name_that_is_not_a_workflow_is_a_usage_error(workdir: Path, name: str) -> None:
    assert_usage_error(run_runner("run", f"{EXAMPLE}:{name}", "--store", "s"), name, "@durable.workflow")


def test_a_plain_function_is_not_a_workflow(workdir: Path) -> None:
    assert_usage_error(
        run_runner("run", "cli_failing.py:not_a_workflow", "--store", "s"),
        "not_a_workflow",
        "@durable.workflow",
    )


@pytest.mark.parametrize("target", [str(EXAMPLE), "process_order", f"{EXAMPLE}:", ":process_order"])
def test_a_target_without_a_workflow_name_is_a_usage_error(workdir: Path, target: str) -> None:
    assert_usage_error(run_runner("run", target, "--store", "s"), "FILE_OR_MODULE:WORKFLOW")


@pytest.mark.parametrize("under_file", [False, True], ids=["store-is-a-file", "store-under-a-file"])
def test_a_bad_store_path_is_a_usage_error(workdir: Path, under_file: bool) -> None:
    (workdir / "plain-file").write_text("")
    store = "plain-file/store" if under_file else "plain-file"
    outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", "1", "--store", store)
    assert_usage_error(outcome, "plain-file")


def test_an_invalid_run_id_is_a_usage_error(workdir: Path) -> None:
    outcome = run_runner("run", "cli_echo_types.py:cli_echo_types", "--id", "x" * 500, "--store", "s")
    assert_usage_error(outcome, "run id")


def test_run_help_shows_an_example(workdir: Path) -> None:
    outcome = run_runner("run", "--help")
    assert outcome.code == 0
    assert "Example:" in outcome.stdout
    assert "durable run examples/process_order.py:process_order" in outcome.stdout
    assert "--store" in outcome.stdout
    assert "--id" in outcome.stdout
    assert "--debug" in outcome.stdout


def test_top_level_help_lists_run(workdir: Path) -> None:
    outcome = run_runner("--help")
    assert outcome.code == 0
    assert "run" in outcome.stdout


def test_an_unknown_option_is_a_usage_error(workdir: Path) -> None:
    outcome = run_runner("run", ORDER, "--no-such-option")
    assert outcome.code == 2
    assert "Traceback" not in outcome.stderr


def test_a_module_in_the_current_directory_is_found_by_its_name(tmp_path: Path) -> None:
    # As `python -m` does: `durable worker orders` beside orders.py.
    (tmp_path / "cli_here_orders.py").write_text(
        "import durable\n\n@durable.workflow\ndef hello(name):\n    return 'hello ' + name\n    yield\n"
    )
    script = Path(sys.executable).parent / "durable"
    done = subprocess.run(
        [str(script), "run", "cli_here_orders:hello", "bob", "--store", "s"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello bob"


class _WaitingFileStore(durable.FileStore):
    """A FileStore whose listing waits on trio once: as a read of a future FileStore might."""

    waits = 0

    async def newest_first(self, limit: int | None = None, before: str | None = None) -> list[str]:
        import trio  # noqa: PLC0415 - only this test's store needs it

        await trio.sleep(0)
        type(self).waits += 1
        return await super().newest_first(limit, before)


def test_a_file_store_read_that_waits_runs_again_under_trio(tmp_path: Path) -> None:
    # The reading verbs drive a FileStore's reads without an event loop (start-up);
    # one that waits after all is closed and run again under trio, with the same answer.
    from durable._cli import _read  # noqa: PLC0415 - a private helper

    store = durable.FileStore(tmp_path, sync="none")
    for run_id in ("a", "b"):
        durable.run(good.chain, 1, id=run_id, store=store)

    async def newest(store: durable.Store) -> list[str]:
        return await store.newest_first(None, None)

    assert _read(store, newest) == ["b", "a"]  # no wait: no event loop
    assert _read(_WaitingFileStore(tmp_path), newest) == ["b", "a"]
    assert _WaitingFileStore.waits == 1  # the first try stopped at the wait


def test_a_runtime_error_of_a_file_store_read_is_not_taken_for_a_wait(tmp_path: Path) -> None:
    from durable._cli import _read  # noqa: PLC0415 - a private helper

    async def broken(store: durable.Store) -> None:
        raise RuntimeError("something else went wrong")

    with pytest.raises(RuntimeError, match="something else went wrong"):
        _read(durable.FileStore(tmp_path), broken)
