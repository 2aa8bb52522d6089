"""A stand-in Storm cluster API for the demo, the tests and the benchmarks (`notifier simulate`).

`Population` is the pure, seeded audience model; `Faults` the switches and scripted one-shot
faults; `Simulator` the aiohttp application over both; `running_simulator` serves one on a
real port.
"""

from notifier.simulator.faults import FAULT_NAMES, Faults
from notifier.simulator.population import (
    HARNESS_TYPES,
    NO_DATA,
    SYSTEM_HARNESS_TYPES,
    Change,
    Population,
    PopulationSettings,
    ViewerQuery,
    health_grade,
)
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
    "Population",
    "PopulationSettings",
    "RunningSimulator",
    "Simulator",
    "SimulatorSettings",
    "Stats",
    "ViewerQuery",
    "health_grade",
    "running_simulator",
]
