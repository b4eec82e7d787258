"""The `durable signal` verb, through click's runner and a real subprocess."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

import durable
from durable._cli import main

WORKFLOW = textwrap.dedent(
    """
    import durable

    @durable.workflow(name="tests.cli_signal.approval")
    def approval(order):
        decision = yield durable.wait_signal("decision", timeout="1h")
        return {"order": order, "decision": decision}
    """
)


@pytest.fixture
def waiting_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store holding run 'a', started and left waiting for its signal (loaded nowhere)."""
    (tmp_path / "sig_wf.py").write_text(WORKFLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    sig_wf = importlib.import_module("sig_wf")

    store = tmp_path / "store"

    async def start() -> None:
        async with durable.Runtime(store) as runtime:
            await runtime.start(sig_wf.approval, "o-1", id="a")
            await trio.sleep(0.01)

    trio.run(start)
    return store


def resume_argv(store: Path) -> list[str]:
    return ["run", "sig_wf:approval", "o-1", "--id", "a", "--store", str(store)]


def test_a_signal_sent_from_the_shell_is_taken_when_the_run_resumes(waiting_run: Path) -> None:
    sent = CliRunner().invoke(main, ["signal", "a", "decision", "{'ok': True}", "--store", str(waiting_run)])
    assert sent.exit_code == 0, sent.output
    assert "signal 'decision' sent to run 'a'" in sent.output
    resumed = CliRunner().invoke(
        main, ["run", "sig_wf:approval", "o-1", "--id", "a", "--store", str(waiting_run)]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "{'order': 'o-1', 'decision': {'ok': True}}" in resumed.output


def test_a_signal_without_payload_sends_none(waiting_run: Path) -> None:
    assert CliRunner().invoke(main, ["signal", "a", "decision", "--store", str(waiting_run)]).exit_code == 0
    resumed = CliRunner().invoke(
        main, ["run", "sig_wf:approval", "o-1", "--id", "a", "--store", str(waiting_run)]
    )
    assert "'decision': None" in resumed.output


def test_signal_errors_are_one_line_and_exit_2(waiting_run: Path, tmp_path: Path) -> None:
    durable_script = Path(sys.executable).parent / "durable"
    cases = {
        "nope": ("no run 'nope' in the store", ["signal", "nope", "decision", "--store", str(waiting_run)]),
        "store": ("no durable store", ["signal", "a", "decision", "--store", str(tmp_path / "none")]),
    }
    for expected, argv in cases.values():
        done = subprocess.run([str(durable_script), *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done
        assert done.stderr.startswith("error: ") and expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr


def test_a_finished_run_refuses_the_signal(waiting_run: Path) -> None:
    CliRunner().invoke(main, ["signal", "a", "decision", "yes", "--store", str(waiting_run)])
    CliRunner().invoke(main, resume_argv(waiting_run))
    late = CliRunner().invoke(main, ["signal", "a", "decision", "again", "--store", str(waiting_run)])
    assert late.exit_code == 2
    assert "has finished" in late.output


def test_signal_help_has_an_example() -> None:
    shown = CliRunner().invoke(main, ["signal", "--help"])
    assert "durable signal order-1 decision approved" in shown.output
