"""The first packet's walk through the virtual topology: a pure function of (packet, topology view, flow
state). Stages are declared in pipeline.py; each device is its own module."""

from kumo.simulation.result import Reason, SimulationResult, Verdict
from kumo.simulation.view import MemoryLearned, Snapshot
from kumo.simulation.walk import simulate

__all__ = ["MemoryLearned", "Reason", "SimulationResult", "Snapshot", "Verdict", "simulate"]
