"""The edge agent: readings in, detector per meter, Pleevi messages out through the store.

Readings are processed in small chunks; each chunk's messages and the detector states that
produced them are committed to the store in one transaction, then handed to the publisher.
Readings a restored detector has already seen (a replayed file after a restart) are skipped,
so a restart neither repeats nor loses a transition. Each meter's readings are also kept, as
minute means, for its daily second look (``second_look``), whose late sessions go out the
same way.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from edge_agent.control import PowerControl, Verdict
from edge_agent.detector import DETECTOR_VERSION, DetectorConfig, MeterDetector, Phase, Transition
from edge_agent.metrics import EdgeMetrics
from edge_agent.offline import Reading
from edge_agent.second_look import SecondLook
from edge_agent.store import (
    COMMAND_RESULT,
    MEASUREMENT,
    TRANSACTION,
    AgentStore,
    Outgoing,
    RetainedReading,
)
from edge_agent.time_of_day import DAY_S
from schemas.pleevi import Measurement, Transaction, TransactionState
from schemas.topics import EdgeKind, edge_topic

log = logging.getLogger(__name__)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def transaction_message(tr: Transition, version: str = DETECTOR_VERSION) -> Transaction:
    """A detector transition as a Pleevi transaction with the documented extension fields
    (``version``: the detector's, with its tuned thresholds, ``DetectorConfig.version``)."""
    return Transaction(
        assetId=tr.asset_id,
        transactionId=tr.transaction_id,
        timestamp=_utc(tr.timestamp),
        transactionState=tr.state,
        startTime=_utc(tr.start_time),
        stopTime=_utc(tr.stop_time) if tr.stop_time is not None else None,
        maxPower=tr.ev_peak_power_w or None,
        evEnergy=tr.ev_energy_wh,
        evPower=tr.ev_power_w,
        evPeakPower=tr.ev_peak_power_w,
        meterEnergy=tr.meter_energy_wh,
        detectorVersion=version,
        confidence=tr.confidence,
        sequenceNumber=tr.sequence_number,
    )


_MAX_COMMIT_DELAY_S = 0.5
_QUEUE_KIND = {
    EdgeKind.MEASUREMENT: MEASUREMENT,
    EdgeKind.TRANSACTION: TRANSACTION,
    EdgeKind.COMMAND_RESULT: COMMAND_RESULT,
}


class EdgeAgent:
    def __init__(
        self,
        *,
        site_id: str,
        store: AgentStore,
        metrics: EdgeMetrics,
        topic_prefix: str = "ev/v1",
        measurement_interval_s: float = 60.0,
        detector_config: DetectorConfig | None = None,
        chunk_size: int = 500,
        on_commit: Any = None,
        control: PowerControl | None = None,
        charging_power_w: Mapping[str, float] | None = None,
        second_look_days: int = 14,
        second_look_hour_utc: int = 4,
        primed: Mapping[str, MeterDetector] | None = None,
    ) -> None:
        self.site_id = site_id
        self._store = store
        self._metrics = metrics
        self._prefix = topic_prefix
        self._interval = measurement_interval_s
        self._config = detector_config or DetectorConfig()
        self._version = self._config.version  # its tuned thresholds named once, not per message
        self._chunk = chunk_size
        self._on_commit = on_commit
        self.control = control
        self._known_power = dict(charging_power_w or {})
        saved = store.states()
        # Meters met for the first time start knowing their house from their history
        # (``priming``); one with saved state knows more recent days than any history file.
        self._primed = {a: det for a, det in (primed or {}).items() if a not in saved}
        self.detectors: dict[str, MeterDetector] = {
            asset: self._knowing(MeterDetector.restore(state["detector"], self._config))
            for asset, state in saved.items()
        }
        self._last_measurement: dict[str, float] = {
            asset: state["last_measurement"] for asset, state in saved.items()
        }
        self._look_days = second_look_days
        self._look_hour = second_look_hour_utc
        self._looks: dict[str, SecondLook] = {}
        self._forgot_on: int | None = None  # the day (readings' clock) kept readings were swept
        for asset, state in saved.items():
            if second_look_days and "second_look" in state:
                self._looking(asset).restore(state["second_look"])
        self._retained: list[RetainedReading] = []  # kept, not yet committed
        self.last_reading_at: float | None = None
        self._uncommitted_verdicts: list[str] = []  # action ids (reading thread only)
        self._refresh_gauges()

    def _knowing(self, det: MeterDetector) -> MeterDetector:
        """``det``, told its meter's EV's charging power if the settings give it (not part of
        its snapshot: the settings may change between runs)."""
        known = self._known_power.get(det.asset_id)
        if known is not None:
            det.house.know_charging_power(known)
        return det

    def _looking(self, asset: str) -> SecondLook:
        look = self._looks.get(asset)
        if look is None:
            # Spread over the hour: one gateway's meters do not all look at once.
            at_s = self._look_hour * 3600.0 + zlib.crc32(asset.encode()) % 3600
            look = SecondLook(asset, window_s=self._look_days * DAY_S, at_s=at_s)
            self._looks[asset] = look
        return look

    def _second_look(
        self, det: MeterDetector, t: float, power: float, energy: float | None, out: list[Outgoing]
    ) -> None:
        """Once a day, look over the meter's kept readings for missed charges; keep this one."""
        asset = det.asset_id
        look = self._looking(asset)
        if look.due(t):  # over the readings before this one, as the detector stands before it
            since = t - look.window_s
            uncommitted = [r[1:] for r in self._retained if r[0] == asset and r[1] >= since]
            late = look.look(
                self._store.retained(asset, since) + uncommitted,
                t,
                det.deciding_since(),
                det.house,
                charging_power_w=self._known_power.get(asset),
            )
            if self._forgot_on != (day := int(t // DAY_S)):  # one sweep a day serves all meters
                self._store.forget_retained(since)
                self._forgot_on = day
            for tr in late:
                message = transaction_message(tr, self._version)
                out.append(self._outgoing(asset, EdgeKind.TRANSACTION, message))
                if tr.state is TransactionState.ENDED:
                    self._metrics.second_look_sessions.inc()
                    log.info("%s second look: %s", asset, tr.transaction_id)
        self._retained.extend((asset, *r) for r in look.keep(t, power, energy))

    def _refresh_gauges(self) -> None:
        detectors = self.detectors.values()
        self._metrics.open_sessions.set(
            sum(d.phase in (Phase.CHARGING, Phase.PAUSED) for d in detectors)
        )
        self._metrics.meters_with_panels.set(
            sum(d.house.panels.output is not None for d in detectors)
        )

    def open_session(self, asset: str) -> str | None:
        det = self.detectors.get(asset)
        return det.open_session() if det else None

    def _outgoing(self, asset: str, kind: EdgeKind, message: BaseModel) -> Outgoing:
        return Outgoing(
            edge_topic(self.site_id, asset, kind, prefix=self._prefix),
            message.model_dump_json(by_alias=True, exclude_none=True).encode(),
            _QUEUE_KIND[kind],
            asset,
        )

    def _verdicts(self, verdicts: list[Verdict]) -> list[Outgoing]:
        for v in verdicts:
            self._metrics.command_results.labels(v.result.status.value).inc()
            log.info("%s %s %s", v.asset_id, v.result.action_id, v.result.status.value)
        return [self._outgoing(v.asset_id, EdgeKind.COMMAND_RESULT, v.result) for v in verdicts]

    def queue_verdicts(self, verdicts: list[Verdict]) -> None:
        """Verdicts reached outside the reading loop (refused, expired commands)."""
        self._store.commit(self._verdicts(verdicts), {})
        if self._on_commit is not None:
            self._on_commit()

    def _handle(self, reading: Reading, out: list[Outgoing]) -> bool:
        asset, t, power, energy = reading
        det = self.detectors.get(asset)
        if det is None:
            primed = self._primed.pop(asset, None)
            self._metrics.meters_met.labels("primed" if primed else "cold").inc()
            det = primed or MeterDetector(asset, self._config, warms_up=True)
            det = self.detectors[asset] = self._knowing(det)
        if det.seen_t is not None and t <= det.seen_t:
            self._metrics.readings.labels("dropped").inc()
            return False  # already seen (replay after restart) or out of order
        if self._look_days:
            self._second_look(det, t, power, energy, out)
        for tr in det.update(t, power, energy):
            message = transaction_message(tr, self._version)
            out.append(self._outgoing(asset, EdgeKind.TRANSACTION, message))
            self._metrics.transactions.labels(tr.state.value).inc()
            log.info("%s %s %s", asset, tr.state.value, tr.transaction_id)
            if tr.state is TransactionState.ENDED:
                if self._look_days:
                    self._looking(asset).publish(tr.start_time, tr.stop_time or tr.timestamp)
                if self.control is not None:
                    self.control.actuator.session_ended(asset)
        if self.control is not None:
            verdicts = self.control.observe(asset, t, det)
            out.extend(self._verdicts(verdicts))
            # Acknowledged to the broker once committed (``_commit``), not before.
            self._uncommitted_verdicts.extend(v.result.action_id for v in verdicts)
        last = self._last_measurement.get(asset)
        # A measurement needs a register value; none is invented when the meter gave none.
        if (
            energy is not None
            and energy >= 0
            and (last is None or t - last >= self._interval * 0.999)
        ):
            m = Measurement(assetId=asset, timestamp=_utc(t), energyValue=energy, powerValue=power)
            out.append(self._outgoing(asset, EdgeKind.MEASUREMENT, m))
            self._last_measurement[asset] = t
        self._metrics.readings.labels("used").inc()
        return True

    def process(self, readings: Iterable[Reading], stop: Any = None) -> None:
        """Consume ``readings`` until exhausted or ``stop`` (a threading.Event) is set."""
        out: list[Outgoing] = []
        touched: set[str] = set()
        pending = 0
        committed_at = time.monotonic()
        for reading in readings:
            before = len(out)
            if self._handle(reading, out):
                touched.add(reading[0])
                pending += 1
                self.last_reading_at = time.time()
            urgent = any(o.kind != MEASUREMENT for o in out[before:])
            # Batches amortise the fsync of a fast replay; a paced (live) source must not hold
            # a transition or a verdict back, nor measurements for long.
            if (
                pending >= self._chunk
                or urgent
                or time.monotonic() - committed_at >= _MAX_COMMIT_DELAY_S
            ):
                self._commit(out, touched)
                out, touched, pending = [], set(), 0
                committed_at = time.monotonic()
            if stop is not None and stop.is_set():
                break
        self._commit(out, touched)

    def flush(self, readings: list[Reading]) -> None:
        """Process a small batch and commit it at once (live sources)."""
        out: list[Outgoing] = []
        touched = {r[0] for r in readings if self._handle(r, out)}
        self._commit(out, touched)

    def _state(self, asset: str) -> dict[str, Any]:
        state: dict[str, Any] = {
            "detector": self.detectors[asset].snapshot(),
            "last_measurement": self._last_measurement.get(asset),
        }
        if self._look_days:
            state["second_look"] = self._looking(asset).snapshot()
        return state

    def _commit(self, out: list[Outgoing], touched: set[str]) -> None:
        if not out and not touched:
            return
        states = {asset: self._state(asset) for asset in touched}
        before = self._store.dropped_measurements
        self._store.commit(out, states, self._retained)
        self._retained = []
        if self.control is not None and self._uncommitted_verdicts:
            self.control.acknowledge(self._uncommitted_verdicts)
            self._uncommitted_verdicts = []
        self._metrics.queue_dropped.inc(self._store.dropped_measurements - before)
        self._refresh_gauges()
        if self._on_commit is not None:
            self._on_commit()
