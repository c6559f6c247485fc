"""OCPP 1.6J actuator: the gateway as a small central system its charge points connect to.

Charge points connect to ``ws://<gateway>:<port>/<chargePointId>`` (subprotocol ``ocpp1.6``);
each is configured as sitting behind one meter. A session limit becomes SetChargingProfile with
a TxProfile for the charge point's running transaction (W for a power limit, A for a current
limit, as asked); clearing it is ClearChargingProfile of that profile. The charge point's answer
is the actuator's answer; whether the EV really slowed down is judged on the meter.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingProfileStatus,
    ChargingRateUnitType,
    ClearChargingProfileStatus,
    RegistrationStatus,
)
from websockets.asyncio.server import Server, ServerConnection, serve

from edge_agent.actuators import ChargerAnswer
from schemas.edrv import LimitUnit, PowerLimit

log = logging.getLogger(__name__)
SUBPROTOCOL = "ocpp1.6"
PROFILE_ID = 7301  # the one TxProfile this gateway sets per transaction, replaced in place


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _ConnectedChargePoint(ChargePoint):  # type: ignore[misc]
    """The central system's side of one charge point's connection."""

    def __init__(self, charge_point_id: str, connection: Any, transactions: Any) -> None:
        super().__init__(charge_point_id, connection)
        self.transaction_id: int | None = None
        self.connector_id = 1
        self._transactions = transactions

    @on(Action.boot_notification)  # type: ignore[untyped-decorator]
    def on_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(
            current_time=_now(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)  # type: ignore[untyped-decorator]
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)  # type: ignore[untyped-decorator]
    def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.authorize)  # type: ignore[untyped-decorator]
    def on_authorize(self, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.meter_values)  # type: ignore[untyped-decorator]
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.start_transaction)  # type: ignore[untyped-decorator]
    def on_start(self, connector_id: int, **_: Any) -> Any:
        self.transaction_id = next(self._transactions)
        self.connector_id = connector_id
        return call_result.StartTransaction(
            transaction_id=self.transaction_id,
            id_tag_info={"status": AuthorizationStatus.accepted},
        )

    @on(Action.stop_transaction)  # type: ignore[untyped-decorator]
    def on_stop(self, **_: Any) -> Any:
        self.transaction_id = None
        return call_result.StopTransaction()


class OcppCentralSystem:
    """An :class:`~edge_agent.actuators.Actuator` for OCPP 1.6J charge points."""

    def __init__(
        self,
        charge_points: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        response_timeout_s: float = 15.0,
    ) -> None:
        self.meters = dict(charge_points)
        self.host = host
        self.port = port
        self.response_timeout_s = response_timeout_s
        self.connected: dict[str, _ConnectedChargePoint] = {}
        self._transactions = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ocpp", daemon=True)

    # -- lifecycle
    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("OCPP central system did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        async with serve(
            self._on_connect,
            self.host,
            self.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("OCPP 1.6J central system on ws://%s:%d/<chargePointId>", self.host, self.port)
            self._ready.set()
            await server.wait_closed()

    async def _on_connect(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        charge_point_id = connection.request.path.strip("/").split("/")[-1]
        if charge_point_id not in self.meters:
            log.warning("unknown charge point %r refused", charge_point_id)
            await connection.close(code=1008, reason="unknown charge point")
            return
        charge_point = _ConnectedChargePoint(charge_point_id, connection, self._transactions)
        self.connected[charge_point_id] = charge_point
        log.info("charge point %s connected (meter %s)", charge_point_id,
                 self.meters[charge_point_id])  # fmt: skip
        try:
            await charge_point.start()
        except Exception as exc:  # a dropped socket ends this charge point only
            log.info("charge point %s disconnected: %s", charge_point_id, exc)
        finally:
            if self.connected.get(charge_point_id) is charge_point:
                del self.connected[charge_point_id]

    # -- actuator
    def _charge_point(self, asset_id: str) -> _ConnectedChargePoint | str:
        ids = [cp for cp, meter in self.meters.items() if meter == asset_id]
        if not ids:
            return f"no OCPP charge point behind meter {asset_id}"
        for cp_id in ids:
            if cp_id in self.connected:
                return self.connected[cp_id]
        return f"charge point {', '.join(ids)} of meter {asset_id} is not connected"

    def apply(self, asset_id: str, limit: PowerLimit | None) -> ChargerAnswer:
        found = self._charge_point(asset_id)
        if isinstance(found, str):
            return ChargerAnswer(False, found)
        if found.transaction_id is None:
            return ChargerAnswer(False, f"charge point {found.id} has no transaction running")
        request = self._request(found, limit)
        future = asyncio.run_coroutine_threadsafe(found.call(request), self._loop)
        try:
            response = future.result(self.response_timeout_s + 1)
        except (FutureTimeout, TimeoutError):
            future.cancel()
            return ChargerAnswer(
                False, f"no response from charge point {found.id} within "
                f"{self.response_timeout_s:g} s"
            )  # fmt: skip
        accepted = (ChargingProfileStatus.accepted, ClearChargingProfileStatus.accepted,
                    ClearChargingProfileStatus.unknown)  # fmt: skip
        # Unknown to a clear: no profile was set, so there is none left either.
        if response.status in accepted:
            return ChargerAnswer(True)
        return ChargerAnswer(False, f"charge point {found.id} answered {response.status}")

    @staticmethod
    def _request(charge_point: _ConnectedChargePoint, limit: PowerLimit | None) -> Any:
        if limit is None:
            return call.ClearChargingProfile(id=PROFILE_ID)
        unit = (
            ChargingRateUnitType.watts
            if limit.unit is LimitUnit.POWER
            else ChargingRateUnitType.amps
        )
        profile = ChargingProfile(
            charging_profile_id=PROFILE_ID,
            stack_level=1,
            charging_profile_purpose=ChargingProfilePurposeType.tx_profile,
            charging_profile_kind=ChargingProfileKindType.relative,
            transaction_id=charge_point.transaction_id,
            charging_schedule=ChargingSchedule(
                charging_rate_unit=unit,
                charging_schedule_period=[
                    ChargingSchedulePeriod(start_period=0, limit=limit.limit)
                ],
            ),
        )
        return call.SetChargingProfile(
            connector_id=charge_point.connector_id, cs_charging_profiles=profile
        )

    def session_ended(self, asset_id: str) -> None:
        return  # a TxProfile ends with its OCPP transaction
