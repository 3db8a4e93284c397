"""Flood publisher for the benchmarks: N QoS 1 telemetry messages over the site's stations."""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facilities.mqtt.topics import Topics

# Unacknowledged publishes: paho scans its whole outgoing queue on every PUBACK, so a large
# window costs more than it gains (1,000 ran at ~4k msg/s here, 100 far faster); it also
# stays far under the 65,535 message ids that paho wraps at.
WINDOW = 100


# Device time of message 0: now, as a station with a good clock would stamp it (a clock a year
# off would raise clock_skew on every message, which is a different benchmark).
T0 = time.time()


def payload(seq: int, ports: int) -> bytes:
    return json.dumps(
        {
            "seq": seq,
            "ts": T0 + seq * 0.001,
            "temp_c": 31.5,
            "leakage_ma": 2.1,
            "smoke": False,
            "ports": [
                {
                    "port": p,
                    "state": "charging",
                    "voltage_v": 229.8,
                    "current_a": 1.42,
                    "power_w": 326.1,
                    "energy_wh": 512.4,
                    "temp_c": 33.0,
                }
                for p in range(1, ports + 1)
            ],
        }
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--ports", type=int, default=10)
    parser.add_argument("--first-seq", type=int, default=0)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--first-station", type=int, default=1, help="cs-NN of the first")
    parser.add_argument("--prefix", default=Topics().prefix, help="topic prefix")
    args = parser.parse_args()

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{time.time_ns()}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.username_pw_set(args.user, args.password)
    client.max_inflight_messages_set(WINDOW)
    window = threading.BoundedSemaphore(WINDOW)
    client.on_publish = lambda *_args: window.release()
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    stations = range(args.first_station, args.first_station + args.stations)
    topics = [Topics(args.prefix).station(f"cs-{n:02d}", "telemetry") for n in stations]
    # built before the clock starts: the publisher should cost as little as it can
    bodies = [payload(args.first_seq + i, args.ports) for i in range(args.messages)]
    started = time.perf_counter()
    for i, body in enumerate(bodies):
        if not window.acquire(timeout=60):
            raise SystemExit("publisher: no PUBACK for 60 s")
        last = client.publish(topics[i % len(topics)], body, qos=1)
    last.wait_for_publish(60)
    for _ in range(WINDOW):  # every PUBACK is in
        window.acquire(timeout=60)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps(
            {"published": args.messages, "seconds": elapsed, "bytes": len(payload(0, args.ports))}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
