"""Device simulator: seeded, vectorised signal models with ground-truth episodes, played as a source.

`simulate` generates a span at once (tests, evaluation); `SimulatorSource` plays the same readings at the
configured speed, forever. See docs/simulator.md for the models and the episodes.
"""

from agent.simulation.episodes import CONDITIONS_BY_KIND, GroundTruth, validate_simulator
from agent.simulation.source import SimulatorSource, make_generator, simulate

__all__ = [
    "CONDITIONS_BY_KIND",
    "GroundTruth",
    "SimulatorSource",
    "make_generator",
    "simulate",
    "validate_simulator",
]
