"""Rule thresholds with the defaults of docs/rules.md, overridable in the site file."""

from pydantic import BaseModel, ConfigDict, Field

from facilities.rule_ids import RuleId


class Thresholds(BaseModel):
    """Every tunable number of docs/rules.md; a `[rules]` table may set any of them
    (docs/site.md, "Thresholds")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    overload_samples: int = Field(2, ge=1, description="samples in a row over a power limit")
    port_temp_max_c: float = Field(
        60.0, description=f"{RuleId.PORT_OVER_TEMPERATURE} fires at this"
    )
    cabinet_temp_warn_c: float = Field(
        50.0, description=f"{RuleId.OVER_TEMPERATURE} warning (station)"
    )
    cabinet_temp_max_c: float = Field(
        60.0, description=f"{RuleId.OVER_TEMPERATURE} critical (station)"
    )
    temp_rise_c: float = Field(
        10.0, gt=0, description=f"{RuleId.TEMPERATURE_RISE}: rise in degrees"
    )
    temp_rise_window_s: float = Field(
        60.0, gt=0, description=f"{RuleId.TEMPERATURE_RISE}: within seconds"
    )
    leakage_max_ma: float = Field(30.0, gt=0, description="residual current limit, 30 mA rule")
    charge_complete_w: float = Field(30.0, ge=0, description="below this a port is trickling")
    charge_complete_s: float = Field(7200.0, gt=0, description="trickle time before power-off")
    no_load_w: float = Field(2.0, ge=0, description="a switched-on port below this is unloaded")
    no_load_wh: float = Field(1.0, ge=0, description="... and has delivered less than this")
    no_load_s: float = Field(300.0, gt=0, description=f"{RuleId.NO_LOAD} fires after this long")
    session_max_s: float = Field(28800.0, gt=0, description=f"{RuleId.SESSION_TOO_LONG}: 8 h")
    telemetry_interval_s: float = Field(10.0, gt=0, description="devices' telemetry cadence")
    offline_intervals: int = Field(3, ge=1, description="missed intervals before offline")
    clock_skew_s: float = Field(600.0, gt=0, description="device clock vs server clock")
    garage_temp_max_c: float = Field(50.0, description=f"garage {RuleId.OVER_TEMPERATURE}")
    gate_held_open_s: float = Field(60.0, gt=0, description="opened and not closed within")
    denied_burst_count: int = Field(5, ge=1, description="denied events for a burst")
    denied_burst_window_s: float = Field(60.0, gt=0, description="... within seconds")
    clear_after_s: float = Field(60.0, ge=0, description="condition false this long: clear")
    hysteresis: float = Field(0.9, gt=0, le=1, description="clear below this share of a limit")
    fire_release_gates: bool = Field(True, description="garage smoke opens its gates")
    command_timeout_s: float = Field(5.0, gt=0, description="wait this long for an ack")
    command_tries: int = Field(3, ge=1, description=f"tries before {RuleId.COMMAND_FAILED}")

    def merged(self, overrides: dict[str, object]) -> "Thresholds":
        """These thresholds with `overrides` (already validated keys) applied."""
        return self.model_validate({**self.model_dump(), **overrides})
