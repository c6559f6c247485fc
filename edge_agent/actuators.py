"""Chargers the agent can limit, behind one interface.

An actuator answers whether the charger *accepted* a limit; whether the EV really draws less is
judged afterwards on the meter (:mod:`edge_agent.control`). Implementations:

* :class:`SimulatedChargers` - the simulator's EVs, which follow a limit after an OEM-like
  delay (obedient), or refuse it, or accept and ignore it (to prove the verification);
* :class:`edge_agent.ocpp_adapter.OcppCentralSystem` - OCPP 1.6J charge points connected to
  the gateway (SetChargingProfile / ClearChargingProfile, TxProfile).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from edge_agent.offline import Reading
from edge_agent.simulator import Trace
from schemas.edrv import LimitUnit, PowerLimit


@dataclass(frozen=True, slots=True)
class ChargerAnswer:
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChargerRating:
    """How a current limit becomes watts: amperes x phase-to-neutral volts x phases."""

    voltage_v: float = 240.0
    phases: int = 1

    def watts(self, limit: PowerLimit) -> float:
        if limit.unit is LimitUnit.POWER:
            return limit.limit
        return limit.limit * self.voltage_v * self.phases


class Actuator(Protocol):
    def apply(self, asset_id: str, limit: PowerLimit | None) -> ChargerAnswer:
        """Set (``limit``) or clear (None) the limit of the session charging on ``asset_id``."""

    def session_ended(self, asset_id: str) -> None:
        """The meter's session ended: a session limit ends with it."""


class NoCharger:
    """A gateway without controllable chargers."""

    def apply(self, asset_id: str, limit: PowerLimit | None) -> ChargerAnswer:
        return ChargerAnswer(False, f"no controllable charger on meter {asset_id}")

    def session_ended(self, asset_id: str) -> None:
        return


class ChargerBehaviour(StrEnum):
    OBEDIENT = "obedient"
    REJECTING = "rejecting"
    IGNORING = "ignoring"


@dataclass
class _SimulatedCharger:
    limit_w: float | None = None
    effective_from: float = 0.0
    last_t: float = 0.0
    removed_wh: float = 0.0


@dataclass
class SimulatedChargers:
    """The simulator's EV chargers, one per meter, bending the meter's readings to a limit.

    A limit takes effect ``response_s`` (meter time) after it is accepted, like a real EV's
    onboard charger; the power the EV no longer draws also leaves the energy register.
    """

    rating: ChargerRating = field(default_factory=ChargerRating)
    behaviour: ChargerBehaviour = ChargerBehaviour.OBEDIENT
    response_s: float = 45.0
    _chargers: dict[str, _SimulatedCharger] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, asset_id: str, limit: PowerLimit | None) -> ChargerAnswer:
        with self._lock:
            charger = self._chargers.get(asset_id)
            if charger is None:
                return ChargerAnswer(False, f"no simulated charger on meter {asset_id}")
            if self.behaviour is ChargerBehaviour.REJECTING:
                return ChargerAnswer(False, "the charger rejected the charging profile")
            if self.behaviour is ChargerBehaviour.OBEDIENT:
                charger.limit_w = self.rating.watts(limit) if limit is not None else None
                charger.effective_from = charger.last_t + self.response_s
            return ChargerAnswer(True)

    def session_ended(self, asset_id: str) -> None:
        with self._lock:
            charger = self._chargers.get(asset_id)
            if charger is not None:
                charger.limit_w = None

    def readings(self, trace: Trace) -> Iterator[Reading]:
        """``trace``'s readings with its EV held to the charger's limit."""
        ev = trace.ev_power_w if trace.ev_power_w is not None else np.zeros(len(trace.times))
        charger = self._chargers.setdefault(trace.asset_id, _SimulatedCharger())
        step = float(trace.times[1] - trace.times[0]) if len(trace.times) > 1 else 60.0
        for (asset, t, power, energy), ev_w in zip(trace.readings(), ev.tolist(), strict=True):
            with self._lock:
                charger.last_t = t
                limit = charger.limit_w
                cut = 0.0
                if limit is not None and t >= charger.effective_from:
                    cut = max(0.0, ev_w - limit)
                removed = charger.removed_wh
                charger.removed_wh += cut * step / 3600.0
            if cut or removed:
                power, energy = round(power - cut, 1), round(energy - removed, 1)  # noqa: PLW2901
            yield asset, t, power, energy
