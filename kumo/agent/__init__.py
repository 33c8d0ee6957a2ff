"""The per-host agent: follows the ports bound to its host, serves upcalls (wildcard table, else simulate),
installs kernel flows and keeps them right as the topology and learned state change."""

from kumo.agent.agent import Agent

__all__ = ["Agent"]
