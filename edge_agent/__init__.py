"""Meter-side agent: detects EV charging sessions and publishes Pleevi messages, losing none."""

from edge_agent.agent import EdgeAgent, transaction_message
from edge_agent.detector import DETECTOR_VERSION, DetectorConfig, MeterDetector, Transition
from edge_agent.store import AgentStore

__all__ = [
    "DETECTOR_VERSION",
    "AgentStore",
    "DetectorConfig",
    "EdgeAgent",
    "MeterDetector",
    "Transition",
    "transaction_message",
]
