"""Find the user's workflows from the command line: ``FILE_OR_MODULE[:WORKFLOW]``."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ._core.commands import Workflow


class LoadError(Exception):
    """The target cannot be loaded; the message is one line for the user."""


def load_module(target: str) -> ModuleType:
    """Import a module by dotted name (from the current directory too, as ``python -m``
    does) or from a ``.py`` file path."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        return _load_file(Path(target))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise LoadError(f"cannot import {target!r}: no module named {exc.name!r}") from exc
        raise LoadError(f"cannot import {target!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {target!r} failed: {type(exc).__name__}: {exc}") from exc


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"no such file: {str(path)!r}")
    name = path.stem
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LoadError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_workflow(target: str) -> Workflow[..., Any]:
    """Load ``FILE_OR_MODULE:WORKFLOW``."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise LoadError(
            f"{target!r} does not name a workflow; write FILE_OR_MODULE:WORKFLOW, "
            "e.g. examples/process_order.py:process_order"
        )
    module = load_module(where)
    found = getattr(module, attr, None)
    if found is None:
        workflows = sorted(n for n, v in vars(module).items() if isinstance(v, Workflow))
        hint = f" (it defines: {', '.join(workflows)})" if workflows else ""
        raise LoadError(f"{where!r} has no workflow named {attr!r}{hint}")
    if not isinstance(found, Workflow):
        raise LoadError(f"{where}:{attr} is not decorated with @durable.workflow")
    return found


def parse_arg(text: str) -> Any:
    """A command-line argument as a Python literal (``42``, ``[1, 2]``, ``'x'``), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
