"""One life of a crash test: run a workflow in this process, which may be SIGKILLed.

    python tests/crash/driver.py '<config as JSON>'

Config keys:

* ``module``: path of the file that defines the workflow (imported from there);
* ``workflow``: the workflow's attribute name in that module;
* ``args``, ``id``, ``store``: what ``durable.run`` gets (``store`` is a directory);
* ``executions``: a log file: every activity execution appends one JSON line
  ``{"life", "seq", "key", "attempt", "activity", "pid"}`` before it does anything;
* ``life``: this process's number in the schedule, written in the log;
* ``kill``: None, or ``{"seq": N, "point": "start" | "effect"}``: SIGKILL this
  process when step N starts, or right after a fake service applied step N's
  effect (the at-least-once window: the effect happened, the completion is not
  journaled yet).

The module's fake services are the ``FakeService`` instances among its globals;
they take their ledger directory from the environment, which the parent sets.

Output on stdout: ``ready`` once everything is imported (the parent times its
own random kills from that line), then the run's result as one line of JSON,
with the time ``durable.run`` took.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import durable


def load_module(path: str) -> ModuleType:
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Instruments:
    """Logs every activity execution and kills the process where the config says."""

    def __init__(self, log_path: str, life: int, kill: dict[str, Any] | None) -> None:
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.life = life
        self.kill = kill

    def _kill_here(self, point: str) -> bool:
        kill = self.kill
        return kill is not None and kill["point"] == point and durable.activity_info().seq == kill["seq"]

    def _log(self) -> None:
        info = durable.activity_info()
        line = {
            "life": self.life,
            "seq": info.seq,
            "key": info.idempotency_key,
            "attempt": info.attempt,
            "activity": info.activity,
            "pid": os.getpid(),
        }
        # One write() of one line. No fsync: a SIGKILL leaves the page cache intact.
        os.write(self.log_fd, (json.dumps(line) + "\n").encode())

    def started(self) -> None:
        self._log()
        if self._kill_here("start"):
            die()

    def activity(self, act: durable.Activity[..., Any]) -> None:
        fn = act.fn
        if act.is_async:

            @functools.wraps(fn)
            async def logged_async(*args: Any, **kwargs: Any) -> Any:
                self.started()
                return await fn(*args, **kwargs)

            act.fn = logged_async
        else:

            @functools.wraps(fn)
            def logged(*args: Any, **kwargs: Any) -> Any:
                self.started()
                return fn(*args, **kwargs)

            act.fn = logged

    def service(self, service: Any) -> None:
        apply: Callable[..., Any] = service.apply

        @functools.wraps(apply)
        def apply_then_maybe_die(*args: Any, **kwargs: Any) -> Any:
            response = apply(*args, **kwargs)
            if self._kill_here("effect"):
                die()
            return response

        service.apply = apply_then_maybe_die


def main(config: dict[str, Any]) -> None:
    module = load_module(config["module"])
    instruments = Instruments(config["executions"], config["life"], config["kill"])
    for value in list(vars(module).values()):
        if isinstance(value, durable.Activity):
            instruments.activity(value)
        elif isinstance(value, module.FakeService):
            instruments.service(value)
    workflow = getattr(module, config["workflow"])
    print("ready", flush=True)
    began = time.monotonic()
    result = durable.run(workflow, *config["args"], id=config["id"], store=config["store"])
    elapsed = time.monotonic() - began
    print(json.dumps({"result": result, "elapsed": elapsed}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
