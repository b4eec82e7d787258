"""Advanced building blocks: the replay core, the replay check, time travel (``locals_at``), the
journal codec, stores' internals, hooks.

Most programs never need these; custom executors, tools and the crash
simulator do. They are public but may change between minor versions more
readily than the root API.
"""

from ._core.codec import HEADER_SIZE, Scan, decode_record, encode_header, encode_record, scan
from ._core.commands import current_activity
from ._core.events import (
    EVENT_TYPES,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AttemptFailed,
    AttemptHeartbeat,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    Event,
    PatchRecorded,
    RunCancelled,
    RunCompleted,
    RunContinuedAsNew,
    RunFailed,
    RunResumed,
    RunRetried,
    RunStarted,
    SideEffectRecorded,
    SignalAwaited,
    SignalReceived,
    StepCancelled,
    TimerFired,
    TimerStarted,
)
from ._core.machine import Replay, Step, replay
from ._core.outcomes import Raised, Returned, Stopped
from ._core.payloads import Encoded, PayloadCodec, Payloads, payloads_from
from ._core.values import dumps as dumps_value
from ._core.values import loads_shown, loads_value
from ._executor import WallClock
from ._fs import FileSystem, OsFileSystem
from ._hooks import Hooks
from ._locals import FrameLocals, RunLocals, StepNotReached, locals_at
from ._replayer import ReplayCheck, check_replay
from ._store import JournalWriter, Opened

__all__ = [
    "EVENT_TYPES",
    "HEADER_SIZE",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityScheduled",
    "AttemptFailed",
    "AttemptHeartbeat",
    "CancelRequested",
    "ChildCompleted",
    "ChildStarted",
    "Encoded",
    "Event",
    "FileSystem",
    "FrameLocals",
    "Hooks",
    "JournalWriter",
    "Opened",
    "OsFileSystem",
    "PatchRecorded",
    "PayloadCodec",
    "Payloads",
    "Raised",
    "Replay",
    "ReplayCheck",
    "Returned",
    "RunCancelled",
    "RunCompleted",
    "RunContinuedAsNew",
    "RunFailed",
    "RunLocals",
    "RunResumed",
    "RunRetried",
    "RunStarted",
    "Scan",
    "SideEffectRecorded",
    "SignalAwaited",
    "SignalReceived",
    "Step",
    "StepCancelled",
    "StepNotReached",
    "Stopped",
    "TimerFired",
    "TimerStarted",
    "WallClock",
    "check_replay",
    "current_activity",
    "decode_record",
    "dumps_value",
    "encode_header",
    "encode_record",
    "loads_shown",
    "loads_value",
    "locals_at",
    "payloads_from",
    "replay",
    "scan",
]
