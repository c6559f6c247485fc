"""The OCPP 1.6J actuator driving a charge point built on the ``ocpp`` library's own
charge-point side, over a real WebSocket."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, ChargingProfileStatus, ClearChargingProfileStatus
from websockets.asyncio.client import connect

from edge_agent.ocpp_adapter import SUBPROTOCOL, OcppCentralSystem
from schemas.edrv import LimitUnit, PowerLimit

pytestmark = pytest.mark.integration


class EvCharger(ChargePoint):  # type: ignore[misc]
    """A charge point that accepts (or rejects) charging profiles and records them."""

    accept = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.profiles: list[dict[str, Any]] = []
        self.cleared: list[dict[str, Any]] = []

    @on(Action.set_charging_profile)  # type: ignore[untyped-decorator]
    def on_set(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        self.profiles.append({"connector_id": connector_id, **cs_charging_profiles})
        status = ChargingProfileStatus.accepted if self.accept else ChargingProfileStatus.rejected
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)  # type: ignore[untyped-decorator]
    def on_clear(self, **kwargs: Any) -> Any:
        self.cleared.append(kwargs)
        return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.accepted)


class ChargerThread:
    """Runs an :class:`EvCharger` connected to ``url`` in a loop of its own."""

    def __init__(self, url: str, charge_point_id: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.charger: EvCharger | None = None
        self.url, self.id = url, charge_point_id
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.stop = asyncio.Event()

    async def _run(self) -> None:
        async with connect(f"{self.url}/{self.id}", subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            charger = self.charger = EvCharger(self.id, ws)
            listener = asyncio.create_task(charger.start())
            await charger.call(call.BootNotification(charge_point_model="EVSE-1",
                                                     charge_point_vendor="Test"))  # fmt: skip
            start = call.StartTransaction(
                connector_id=2, id_tag="tag", meter_start=0, timestamp="2026-11-22T10:00:00Z"
            )
            started = await charger.call(start)
            self.transaction_id = started.transaction_id
            self.ready.set()
            await self.stop.wait()
            listener.cancel()

    def __enter__(self) -> ChargerThread:
        self.thread.start()
        assert self.ready.wait(10), "the charge point did not start a transaction"
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def central() -> Iterator[OcppCentralSystem]:
    system = OcppCentralSystem({"CP-7": "meter-7", "CP-8": "meter-8"}, port=0)
    system.start()
    yield system
    system.stop()


def test_limits_become_tx_profiles_on_the_charge_point(central: OcppCentralSystem) -> None:
    with ChargerThread(f"ws://127.0.0.1:{central.port}", "CP-7") as cp:
        assert central.apply("meter-7", PowerLimit(unit=LimitUnit.POWER, limit=3600)).accepted
        assert central.apply("meter-7", PowerLimit(unit=LimitUnit.CURRENT, limit=16)).accepted
        assert cp.charger is not None
        watts, amps = cp.charger.profiles
        for profile, unit, limit in ((watts, "W", 3600), (amps, "A", 16)):
            assert profile["connector_id"] == 2
            assert profile["charging_profile_purpose"] == "TxProfile"
            assert profile["transaction_id"] == cp.transaction_id
            schedule = profile["charging_schedule"]
            assert schedule["charging_rate_unit"] == unit
            assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": limit}]
        assert central.apply("meter-7", None).accepted
        assert cp.charger.cleared == [{"id": watts["charging_profile_id"]}]

        cp.charger.accept = False
        refused = central.apply("meter-7", PowerLimit(unit=LimitUnit.POWER, limit=2000))
        assert not refused.accepted
        assert refused.reason == "charge point CP-7 answered Rejected"

    assert "not connected" in (central.apply("meter-8", None).reason or "")
    assert "no OCPP charge point" in (central.apply("meter-1", None).reason or "")
