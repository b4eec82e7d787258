"""sim: the deterministic crash simulator for durable workflows.

It runs the real durable runtime (the same replay core, executor and
FileStore) on a simulated disk with the crash semantics of a real one, in
virtual time, and crashes it at every crash point: before and after each
journal write and fsync, after an activity returned but before its completion
was journaled, during retry backoffs, and during recovery itself. Each
schedule must give the same result, the same commands and an equivalent
journal as the run without crashes, and no activity whose completion was
durable may run again.

    import sim
    sim.assert_crash_safe(process_order, "alice", 4200, "tok_visa")

Every failure comes with a recipe that ``sim.replay_recipe`` plays again.
"""

from ._disk import DISK_FAULTS, OPT_IN_FAULTS, SimDisk, SimulatedCrash
from ._explore import Simulator, assert_crash_safe, explore, replay_recipe
from ._plan import ActivityFault, Crash, InjectedFault, Recipe, Signal
from ._report import Failure, Report
from ._stubbed import Call, StubbedRun, UnusedSignalWarning, in_activity, run_stubbed

__all__ = [
    "DISK_FAULTS",
    "OPT_IN_FAULTS",
    "ActivityFault",
    "Call",
    "Crash",
    "Failure",
    "InjectedFault",
    "Recipe",
    "Report",
    "Signal",
    "SimDisk",
    "SimulatedCrash",
    "Simulator",
    "StubbedRun",
    "UnusedSignalWarning",
    "assert_crash_safe",
    "explore",
    "in_activity",
    "replay_recipe",
    "run_stubbed",
]
