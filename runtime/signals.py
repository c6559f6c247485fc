"""Shutdown signals shared by the services: the first SIGINT/SIGTERM drains, a second exits."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def drain_on_signals(stop: threading.Event, log: logging.Logger, *, forced: str) -> None:
    """Set ``stop`` on the first signal; on a second, log ``forced`` and exit with 130."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now; %s", forced)
            raise SystemExit(130)
        log.info("signal %d: stopping intake and draining", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
