"""Steady background telemetry for the latency benchmark: N msg/s of normal station data."""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facilities.mqtt.topics import Topics

WINDOW = 100  # unacknowledged publishes at most (see publisher.py)
TICK_S = 0.01  # publish in small bursts every 10 ms: close to a steady rate


def _telemetry(seq: int) -> dict[str, object]:
    """Normal station data: 10 ports charging, nothing near a limit."""
    return {
        "seq": seq,
        "ts": time.time(),
        "temp_c": 31.0,
        "leakage_ma": 2.0,
        "smoke": False,
        "ports": [
            {
                "port": p,
                "state": "charging",
                "voltage_v": 229.8,
                "current_a": 1.4,
                "power_w": 320.0,
                "energy_wh": 100.0,
                "temp_c": 33.0,
            }
            for p in range(1, 11)
        ],
    }


def _connect(args: argparse.Namespace) -> tuple[paho.Client, threading.BoundedSemaphore]:
    """A running client, and the window of publishes it may have unacknowledged."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-load-{time.time_ns()}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.username_pw_set(args.user, args.password)
    client.max_inflight_messages_set(WINDOW)
    window = threading.BoundedSemaphore(WINDOW)
    client.on_publish = lambda *_a: window.release()
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    return client, window


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--stations", nargs="+", required=True)
    parser.add_argument("--prefix", default=Topics().prefix, help="topic prefix")
    args = parser.parse_args()

    client, window = _connect(args)
    seq = dict.fromkeys(args.stations, 0)
    topics = {
        station: Topics(args.prefix).station(station, "telemetry") for station in args.stations
    }
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < args.seconds:
        due = int(elapsed * args.rate)
        while sent < due:
            station = args.stations[sent % len(args.stations)]
            seq[station] += 1
            body = _telemetry(seq[station])
            window.acquire(timeout=30)
            client.publish(topics[station], json.dumps(body), qos=1)
            sent += 1
        time.sleep(TICK_S)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
