"""``./run``: a private broker, the edge agent on a simulated fleet, and a live subscriber.

Everything lives under ``.run/`` on free loopback ports; Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.localservers import MosquittoServer

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    run_dir = ROOT / ".run"
    broker = MosquittoServer(run_dir / "mosquitto")
    broker.start()
    print(f"broker      mqtt://127.0.0.1:{broker.port}  (topics ev/v1/#)")
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        with lock:
            counts[kind] += 1
            if kind == "transaction":
                tx = orjson.loads(msg.payload)
                counts[tx["transactionState"]] += 1
                if tx["transactionState"] == "Ended":
                    print(
                        f"  session {tx['assetId']} {tx['startTime']} -> {tx['stopTime']}  "
                        f"{tx.get('evPeakPower', 0):.0f} W  {tx.get('evEnergy', 0) / 1000:.1f} kWh"
                    )

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="demo-subscriber", protocol=mqtt.MQTTv5
    )
    sub.on_connect = lambda c, *_: c.subscribe("ev/v1/#", qos=1)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    env = {
        **os.environ,
        "EDGE_MQTT__PORT": str(broker.port),
        "EDGE_STORE_PATH": str(run_dir / "edge" / "agent.sqlite3"),
        "EDGE_SOURCE": os.environ.get("EDGE_SOURCE", "simulator"),
    }
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], cwd=ROOT, env=env)
    try:
        code = agent.wait()
        time.sleep(1.0)
    except KeyboardInterrupt:
        agent.terminate()
        code = agent.wait(30)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    with lock:
        print(
            f"done: {counts['measurement']} measurements, {counts['Started']} sessions started, "
            f"{counts['Ended']} ended, {counts['SuspendedEV']} pauses"
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
