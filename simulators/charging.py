"""A charging station's physics: e-bike batteries charging on its ports through the day."""

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from facilities.charging.payloads import (
    PortReading,
    PortState,
    StationEvent,
    StationEventType,
    StationTelemetry,
)

# E-bike chargers in Shanghai's communities: 48 V packs of 12-24 Ah (~0.5-1.2 kWh), chargers
# of 2-4 A at the pack (~150-350 W at the socket). Constant current to ~80 %, then the charger
# tapers to a trickle of a few watts once full (the charger's own stop is what 充满自停 checks).
PACK_WH = (500.0, 1200.0)
CC_POWER_W = (150.0, 350.0)
CV_FROM_SOC = 0.8
TRICKLE_W = (1.0, 4.0)
# Plug-ins per hour per free port by hour of day: residents come home in the evening.
_PLUG_RATE = [0.02] * 6 + [
    0.06,
    0.1,
    0.08,
    0.05,
    0.05,
    0.06,
    0.08,
    0.05,
    0.04,
    0.04,
    0.05,
    0.1,
    0.25,
    0.3,
    0.25,
    0.18,
    0.1,
    0.05,
]
# Hours a bike stays plugged in after it is full (collected next morning, or soon after).
_STAY_AFTER_FULL_H = (0.2, 6.0)
# A healthy socket barely warms: a charger draws ~1.5 A from a 10 A socket, whose contacts
# heat with I² (GB 2099.1 / IEC 60884-1 allow 45 K at the full 10 A, so ~1 K at 1.5 A); with
# the charger's brick beside it we allow 5 K at the largest charger, half of the
# `temperature_rise` rule's 10 °C, so that no healthy port can ever look like that hazard.
SOCKET_RISE_K_AT_MAX = 5.0
# Socket and housing settle over a quarter of an hour (wiring accessories' thermal time
# constants are 10-30 min); the cabinet, a steel box with its electronics, over half an hour.
SOCKET_TAU_S = 900.0
CABINET_TAU_S = 1800.0
CABINET_RISE_K = 3.0  # the station's own electronics, at no load
CABINET_K_PER_W = 1 / 700.0  # a fully loaded 10-port station (~3.5 kW) adds ~5 K


class Noise(Protocol):
    """Where measurement noise comes from: a `random.Random`, or something steadier."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(slots=True)
class PortModel:
    port: int
    state: PortState = PortState.IDLE
    pack_wh: float = 0.0
    soc: float = 0.0
    cc_power_w: float = 0.0
    energy_wh: float = 0.0
    power_w: float = 0.0
    temp_c: float = 26.0
    unplug_in_s: float = 0.0

    def plug_in(self, rng: random.Random) -> None:
        self.state = PortState.CHARGING
        self.pack_wh = rng.uniform(*PACK_WH)
        self.soc = rng.uniform(0.05, 0.6)
        self.cc_power_w = rng.uniform(*CC_POWER_W)
        self.energy_wh = 0.0

    def unplug(self) -> None:
        self.state = PortState.IDLE
        self.energy_wh = self.power_w = 0.0

    def socket_target_c(self, ambient_c: float) -> float:
        """Where the socket's temperature settles at the current it carries now."""
        return ambient_c + SOCKET_RISE_K_AT_MAX * self.power_w / CC_POWER_W[1]

    def charge_power(self) -> float:
        if self.soc < CV_FROM_SOC:
            return self.cc_power_w
        # linear taper from full power at 80 % to a trickle at 100 %
        remaining = max(0.0, (1.0 - self.soc) / (1.0 - CV_FROM_SOC))
        return max(TRICKLE_W[1], self.cc_power_w * remaining)


@dataclass(slots=True)
class StationModel:
    """Ports and cabinet of one station; `advance` moves it on by simulated seconds."""

    station: str
    ports: list[PortModel]
    ambient_c: float = 24.0
    cabinet_c: float = 27.0
    seq_telemetry: int = 0
    seq_event: int = 0
    pending_events: list[tuple[int | None, StationEventType]] = field(default_factory=list)
    # Fault scenarios (see simulators.fleet.SCENARIOS); each stops once the service has
    # switched the port (or the station) off, as the real hazard would.
    overload_port: int | None = None
    overheat_port: int | None = None
    leaking: bool = False
    smoking: bool = False

    @classmethod
    def new(cls, station: str, ports: int, rng: random.Random, hour: float) -> "StationModel":
        model = cls(station, [PortModel(n) for n in range(1, ports + 1)])
        busy_share = 0.5 if hour >= 19 or hour < 7 else 0.25
        for port in model.ports:
            if rng.random() < busy_share:
                port.plug_in(rng)
                port.soc = rng.uniform(0.2, 0.95)
                port.power_w = port.charge_power()
            port.temp_c = port.socket_target_c(model.ambient_c)  # charging for a while already
        model.cabinet_c = model.cabinet_target_c()
        return model

    def cabinet_target_c(self) -> float:
        total_w = sum(p.power_w for p in self.ports)
        return self.ambient_c + CABINET_RISE_K + total_w * CABINET_K_PER_W

    def _faults(self) -> None:
        for port in self.ports:
            if port.state is PortState.DISABLED:
                continue
            if port.port == self.overload_port:  # a faulty charger drawing far too much
                if port.pack_wh <= 0:  # the port was free: the faulty charger is plugged in
                    port.pack_wh, port.soc = PACK_WH[1], 0.1
                port.state, port.power_w = PortState.CHARGING, 1400.0
            if port.port == self.overheat_port:  # a poor contact in the socket
                port.temp_c = 72.0

    def powered(self) -> bool:
        return any(p.state is not PortState.DISABLED for p in self.ports)

    def advance(
        self, dt_s: float, hour: float, rng: random.Random, *, device_dt_s: float | None = None
    ) -> None:
        """Simulate `dt_s` seconds at `hour` of the day (0-24). `device_dt_s` is how long that
        took on the station's own clock (shorter when time is compressed): temperatures,
        which the service judges by how fast they rise on that clock, move by it."""
        heat_dt_s = dt_s if device_dt_s is None else device_dt_s
        socket_step = 1.0 - math.exp(-heat_dt_s / SOCKET_TAU_S)  # first order, any step
        rate_per_s = _PLUG_RATE[int(hour) % 24] / 3600.0
        for port in self.ports:
            if port.state is PortState.IDLE:
                port.power_w = 0.0
                if rng.random() < 1.0 - math.exp(-rate_per_s * dt_s):
                    port.plug_in(rng)
                    self.pending_events.append((port.port, StationEventType.PLUG_IN))
            elif port.state is PortState.CHARGING:
                port.power_w = port.charge_power() * rng.uniform(0.97, 1.03)
                delivered = port.power_w * dt_s / 3600.0
                port.energy_wh += delivered
                port.soc = min(1.0, port.soc + delivered * 0.9 / port.pack_wh)  # 90 % efficient
                if port.soc >= 1.0:
                    port.state = PortState.FULL
                    port.unplug_in_s = rng.uniform(*_STAY_AFTER_FULL_H) * 3600
                    self.pending_events.append((port.port, StationEventType.CHARGE_COMPLETE))
            elif port.state is PortState.FULL:
                port.power_w = rng.uniform(*TRICKLE_W)
                port.energy_wh += port.power_w * dt_s / 3600.0
                port.unplug_in_s -= dt_s
                if port.unplug_in_s <= 0:
                    port.unplug()
                    self.pending_events.append((port.port, StationEventType.UNPLUG))
            # the socket warms with the current through it and cools towards ambient
            port.temp_c += (port.socket_target_c(self.ambient_c) - port.temp_c) * socket_step
        cabinet_step = 1.0 - math.exp(-heat_dt_s / CABINET_TAU_S)
        self.cabinet_c += (self.cabinet_target_c() - self.cabinet_c) * cabinet_step
        self._faults()

    def power_off(self, port: int | None) -> None:
        """A `power_off` command: the port (or every port) is switched off, `disabled`."""
        for p in self.ports:
            if port is None or p.port == port:
                p.state = PortState.DISABLED
                p.power_w = 0.0

    def power_on(self, port: int | None) -> None:
        """A `power_on` command: switched-off ports come back, free."""
        for p in self.ports:
            if (port is None or p.port == port) and p.state is PortState.DISABLED:
                p.state = PortState.IDLE
                p.energy_wh = 0.0

    def telemetry(self, ts: float, rng: "Noise") -> StationTelemetry:
        readings = []
        for p in self.ports:
            voltage = rng.uniform(222.0, 232.0)
            readings.append(
                PortReading(
                    port=p.port,
                    state=p.state,
                    voltage_v=round(voltage, 1),
                    current_a=round(p.power_w / voltage, 3),
                    power_w=round(p.power_w, 1),
                    energy_wh=round(p.energy_wh, 1),
                    temp_c=round(p.temp_c, 1),
                )
            )
        message = StationTelemetry(
            seq=self.seq_telemetry,
            ts=ts,
            temp_c=round(self.cabinet_c, 1),
            leakage_ma=42.0 if self.leaking and self.powered() else round(rng.uniform(0.5, 4.0), 1),
            smoke=self.smoking and self.powered(),
            ports=readings,
        )
        self.seq_telemetry += 1
        return message

    def take_events(self, ts: float) -> list[StationEvent]:
        events = []
        for port, kind in self.pending_events:
            events.append(StationEvent(seq=self.seq_event, ts=ts, type=kind, port=port))
            self.seq_event += 1
        self.pending_events.clear()
        return events
