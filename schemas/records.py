"""Records the pipeline emits: final KPI windows, warnings, staffing intervals, dead-letter metadata.

Field meanings and formulas: ``docs/kpis.md``. Ratios are 0..1 (``None`` when the
denominator is zero: "no calls" is not "0 % service level"). Durations are seconds.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION

Dimension = Literal["all", "queue", "channel", "business_type", "agent"]
Number = float | None


class KpiRecord(BaseModel):
    """One final window for one dimension value (topic ``cc.kpis``, key
    ``size|start|dimension|value``). Emitted once, when the window closes."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    window_size_s: int
    window_start: AwareDatetime
    window_end: AwareDatetime
    dimension: Dimension
    dimension_value: str

    # calls (attributed to the window of the event: offered at enqueue, answered at answer, ...)
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answer_rate: Number = None
    abandon_rate: Number = None
    abandon_rate_excl_short: Number = None
    answered_within: dict[str, int] = Field(default_factory=dict)
    abandoned_within: dict[str, int] = Field(default_factory=dict)
    service_level: Number = None
    service_level_variants: dict[str, Number] = Field(default_factory=dict)
    asa_seconds: Number = None
    avg_abandon_wait_seconds: Number = None
    longest_wait_seconds: Number = None
    handled: int = 0
    aht_seconds: Number = None
    avg_talk_seconds: Number = None
    avg_hold_seconds: Number = None
    avg_acw_seconds: Number = None
    hold_rate: Number = None
    transferred: int = 0
    transfer_rate: Number = None
    rona: int = 0
    orphaned: int = 0
    waiting_at_end: int = 0
    in_progress_at_end: int = 0
    peak_concurrent: int = 0
    offered_identified: int = 0
    repeat_contacts: int = 0
    repeat_contact_rate: Number = None

    # agents
    staffed_agents: Number = None
    logged_in_seconds: float = 0.0
    ready_seconds: float = 0.0
    busy_seconds: float = 0.0
    acw_state_seconds: float = 0.0
    not_ready_seconds: float = 0.0
    not_ready_by_reason: dict[str, float] = Field(default_factory=dict)
    occupancy: Number = None
    utilization: Number = None

    # tickets
    tickets_created: int = 0
    tickets_first_responses: int = 0
    first_response_p50_seconds: Number = None
    first_response_p90_seconds: Number = None
    first_response_p95_seconds: Number = None
    tickets_resolved: int = 0
    resolution_p50_seconds: Number = None
    resolution_p90_seconds: Number = None
    resolution_p95_seconds: Number = None
    sla_evaluated: int = 0
    sla_breached: int = 0
    sla_breach_rate: Number = None
    tickets_reopened: int = 0
    reopen_rate: Number = None
    tickets_closed: int = 0
    backlog: int = 0
    repeat_complaints: int = 0

    # surveys
    survey_responses: int = 0
    csat_responses: int = 0
    csat_mean: Number = None
    csat_top2_ratio: Number = None
    nps_responses: int = 0
    nps: Number = None
    ces_responses: int = 0
    ces_mean: Number = None
    csat_by_wait: dict[str, dict[str, Number]] = Field(default_factory=dict)

    def key(self) -> str:
        return f"{self.window_size_s}|{int(self.window_start.timestamp())}|{self.dimension}|{self.dimension_value}"

    def to_json(self) -> bytes:
        """``model_dump_json().encode()``, the same bytes (field order, floats, ``Z`` times) in
        about 40 % of the time: the merge stage writes a record per dimension value and window,
        and every field of a record is already of its type (``streams.kpis.kpi_record`` makes
        it so; ``tests/test_kpi_engine.py`` compares the two on a simulated day's records)."""
        return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z)


class WarningLevel(StrEnum):
    yellow = "yellow"
    orange = "orange"
    red = "red"


class WarningRecord(BaseModel):
    """A change in a warning's life (topic ``cc.warnings``): opened, escalated, de-escalated or
    resolved. One open warning per (rule, dimension)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    warning_id: str
    rule: str
    kpi: str
    dimension: Dimension
    dimension_value: str
    level: WarningLevel | None  # None once resolved
    change: Literal["opened", "escalated", "de-escalated", "resolved"]
    value: float | None
    threshold: float | None = None
    expected: float | None = None
    started_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    reason: str


class StaffingRecord(BaseModel):
    """The staffing figures of one closed planning interval for one dimension value (topic
    ``cc.staffing``, key ``interval|start|dimension|value``): the forecast made when the interval
    started, what was offered, agents required (Erlang C for the target) on each, agents staffed
    (ready + busy + ACW, mean), the gap and the service level those agents could give.
    Definitions: ``docs/staffing.md``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    interval_start: AwareDatetime
    interval_end: AwareDatetime
    interval_s: int
    dimension: Dimension
    dimension_value: str
    windows: int  # base windows seen in the interval
    forecast_contacts: Number = None
    forecast_low: Number = None
    forecast_high: Number = None
    offered: int = 0
    aht_seconds: Number = None
    required_agents_forecast: int | None = None
    required_agents_actual: int | None = None
    staffed_agents: Number = None
    gap_agents: Number = None  # max(required) - staffed; > 0 = understaffed
    expected_service_level: Number = None  # Erlang C with the staffed agents on the offered load
    service_level: Number = None  # measured, same threshold
    target_service_level: float
    threshold_s: int
    forecast_wape: Number = None  # rolling, over the last day of intervals incl. this one

    def key(self) -> str:
        return f"{self.interval_s}|{int(self.interval_start.timestamp())}|{self.dimension}|{self.dimension_value}"


class DeadLetterReason(StrEnum):
    malformed_json = "malformed_json"
    not_an_object = "not_an_object"
    missing_field = "missing_field"
    unknown_field = "unknown_field"
    wrong_type = "wrong_type"
    invalid_enum = "invalid_enum"
    out_of_range = "out_of_range"
    naive_timestamp = "naive_timestamp"
    future_timestamp = "future_timestamp"
    unsupported_schema_version = "unsupported_schema_version"
    invalid_value = "invalid_value"
    empty_record = "empty_record"
    late = "late"


class DeadLetter(BaseModel):
    """Metadata of a dead letter. On ``cc.dlq`` the record value is the original bytes and
    these fields travel as ``callpulse.*`` headers (as Kafka Connect's DLQ context headers do)."""

    source_topic: str
    partition: int
    offset: int
    index: int | None = None  # position inside an envelope record, if any
    reason: DeadLetterReason
    error: str
    dead_lettered_at: datetime

    def headers(self) -> list[tuple[str, bytes]]:
        h = [
            ("callpulse.reason", self.reason.value.encode()),
            ("callpulse.error", self.error.encode()[:4000]),
            ("callpulse.source_topic", self.source_topic.encode()),
            ("callpulse.partition", str(self.partition).encode()),
            ("callpulse.offset", str(self.offset).encode()),
            ("callpulse.dead_lettered_at", self.dead_lettered_at.isoformat().encode()),
        ]
        if self.index is not None:
            h.append(("callpulse.index", str(self.index).encode()))
        return h

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | dict[str, bytes]) -> DeadLetter:
        items = headers.items() if isinstance(headers, dict) else headers
        d = {k.removeprefix("callpulse."): v.decode() for k, v in items if k.startswith("callpulse.")}
        return cls.model_validate(d)
