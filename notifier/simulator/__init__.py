"""A stand-in Storm cluster API for the demo, the tests and the benchmarks (`notifier simulate`).

`Population` is the pure, seeded audience model (its records' vocabulary in `records`, one
viewer in `viewer`, the scripted `Incident`s and `Ramp`s in `scenarios`); `Faults` the
switches and scripted one-shot faults; `Simulator` the aiohttp application over
both (request/response shapes in `wire`, credentials in `tokens`); `running_simulator` serves
one on a real port.
"""

from notifier.simulator.faults import FAULT_NAMES, Faults
from notifier.simulator.population import Change, Population, PopulationSettings
from notifier.simulator.records import (
    HARNESS_TYPES,
    NO_DATA,
    SYSTEM_HARNESS_TYPES,
    ViewerQuery,
    health_grade,
)
from notifier.simulator.scenarios import Incident, Ramp
from notifier.simulator.server import (
    RunningSimulator,
    Simulator,
    SimulatorSettings,
    Stats,
    running_simulator,
)

__all__ = [
    "FAULT_NAMES",
    "HARNESS_TYPES",
    "NO_DATA",
    "SYSTEM_HARNESS_TYPES",
    "Change",
    "Faults",
    "Incident",
    "Population",
    "PopulationSettings",
    "Ramp",
    "RunningSimulator",
    "Simulator",
    "SimulatorSettings",
    "Stats",
    "ViewerQuery",
    "health_grade",
    "running_simulator",
]
