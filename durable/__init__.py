"""durable: durable execution for Python.

A workflow is a generator that yields commands; durable carries out each
command, journals its outcome (CBOR, checksummed, fsynced), and after a crash
replays the generator from its journal so it resumes at the exact ``yield``
where it stopped. For example::

    import durable

    @durable.activity(retries=3, timeout="30s")
    def charge(amount: int) -> str: ...

    @durable.workflow
    def order(amount: int):
        payment = yield charge(amount)
        return payment

    durable.run(order, 4200, id="order-1")
"""

import importlib as _importlib
import typing as _typing

from ._core.commands import (
    Activity as Activity,
)
from ._core.commands import (
    ActivityCall as ActivityCall,
)
from ._core.commands import (
    ActivityInfo as ActivityInfo,
)
from ._core.commands import (
    ChildCall as ChildCall,
)
from ._core.commands import (
    Command as Command,
)
from ._core.commands import (
    Workflow as Workflow,
)
from ._core.commands import (
    activity as activity,
)
from ._core.commands import (
    activity_info as activity_info,
)
from ._core.commands import (
    heartbeat as heartbeat,
)
from ._core.commands import (
    workflow as workflow,
)
from ._core.errors import (
    ActivityError as ActivityError,
)
from ._core.errors import (
    AttemptTimeout as AttemptTimeout,
)
from ._core.errors import (
    Cancelled as Cancelled,
)
from ._core.errors import (
    ChildWorkflowError as ChildWorkflowError,
)
from ._core.errors import (
    DurableError as DurableError,
)
from ._core.errors import (
    DurableInternalError as DurableInternalError,
)
from ._core.errors import (
    ErrorInfo as ErrorInfo,
)
from ._core.errors import (
    JournalCorruptError as JournalCorruptError,
)
from ._core.errors import (
    JournalVersionError as JournalVersionError,
)
from ._core.errors import (
    LoopMismatchError as LoopMismatchError,
)
from ._core.errors import (
    NonDeterminismError as NonDeterminismError,
)
from ._core.errors import (
    PayloadCodecError as PayloadCodecError,
)
from ._core.errors import (
    RunConflictError as RunConflictError,
)
from ._core.errors import (
    RunLockedError as RunLockedError,
)
from ._core.errors import (
    RunNotRetryableError as RunNotRetryableError,
)
from ._core.errors import (
    SerializationError as SerializationError,
)
from ._core.errors import (
    SignalTimeout as SignalTimeout,
)
from ._core.errors import (
    StoreError as StoreError,
)
from ._core.errors import (
    UnknownRunError as UnknownRunError,
)
from ._core.errors import (
    UnknownWorkflowError as UnknownWorkflowError,
)
from ._core.errors import (
    WorkflowFailed as WorkflowFailed,
)
from ._core.named import register as register
from ._core.policy import RetryPolicy as RetryPolicy
from ._core.primitives import (
    continue_as_new as continue_as_new,
)
from ._core.primitives import (
    gather as gather,
)
from ._core.primitives import (
    now as now,
)
from ._core.primitives import (
    patched as patched,
)
from ._core.primitives import (
    race as race,
)
from ._core.primitives import (
    random as random,
)
from ._core.primitives import (
    side_effect as side_effect,
)
from ._core.primitives import (
    sleep as sleep,
)
from ._core.primitives import (
    uuid4 as uuid4,
)
from ._core.primitives import (
    wait_signal as wait_signal,
)

if _typing.TYPE_CHECKING:
    from ._client import Client as Client
    from ._client import ClientHandle as ClientHandle
    from ._runtime import RunHandle as RunHandle
    from ._runtime import Runtime as Runtime
    from ._runtime import run as run
    from ._store import Store as Store
    from ._store_file import FileStore as FileStore
    from ._store_memory import MemoryStore as MemoryStore
    from ._store_postgres import PostgresStore as PostgresStore

# What runs workflows (the runtime, the client, the stores) needs trio, which takes
# longer to import than the rest of durable together: it is imported on first use,
# so that a module that only defines workflows and activities (a web app importing
# them, a CLI's --help) does not pay for it. The names behave as plain attributes.
_LAZY = {
    "Client": "._client",
    "ClientHandle": "._client",
    "RunHandle": "._runtime",
    "Runtime": "._runtime",
    "run": "._runtime",
    "Store": "._store",
    "FileStore": "._store_file",
    "MemoryStore": "._store_memory",
    "PostgresStore": "._store_postgres",
}
_SUBMODULES = ("codecs", "lowlevel")


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = _as_public(getattr(_importlib.import_module(_LAZY[name], __name__), name))
    elif name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'durable' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__version__ = "0.1.0"

__all__ = [
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


def _as_public(obj: _typing.Any) -> _typing.Any:
    # Tracebacks and docs should say durable.X, not durable._core.errors.X.
    if getattr(obj, "__module__", "").startswith("durable._"):
        obj.__module__ = "durable"
    return obj


for _name in __all__:
    if _name not in _LAZY:
        _as_public(globals()[_name])
