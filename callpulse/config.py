"""The one configuration object. Every setting is an env var ``CALLPULSE_<NAME>``.

Nested settings use a double underscore: ``CALLPULSE_TOPICS__CALLS=acme.calls``.
Defaults give the embedded setup (Tansu broker, chdb under ``./var``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SlVariant = Literal[
    "answered",
    "answered_abandoned",
    "answered_abandoned_no_short",
    "abandons_ignored",
    "abandons_negative",
    "abandons_positive",
    "left_queue",
]


class Topics(BaseModel):
    """The one place for topic names."""

    calls: str = "cc.calls"
    tickets: str = "cc.tickets"
    surveys: str = "cc.surveys"
    agents: str = "cc.agents"
    kpis: str = "cc.kpis"
    warnings: str = "cc.warnings"
    staffing: str = "cc.staffing"
    dlq: str = "cc.dlq"
    partials: str = "cc.kpi-partials"

    def inputs(self) -> dict[str, str]:
        """Input family -> topic name, in a fixed order."""
        return {"calls": self.calls, "tickets": self.tickets, "surveys": self.surveys, "agents": self.agents}


class Settings(BaseSettings):
    """Everything callpulse reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", env_nested_delimiter="__", extra="ignore")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port list; empty = start the embedded Tansu broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    embedded_broker_port: int = 19092
    topics: Topics = Topics()
    partitions: int = Field(default=4, ge=1, description="partitions of every input topic (co-partitioned)")
    replication_factor: int = 1
    app_id: str = "callpulse"
    session_timeout_s: float = 10.0
    batch_max: int = Field(default=2000, ge=1, description="records per processing batch")
    batch_within_s: float = Field(default=0.1, gt=0, description="longest a batch waits to fill")
    fetch_max_wait_ms: int = Field(
        default=500, ge=1, description="longest a fetch waits at the broker for new records (faust fixes 1,500)"
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        description="allocations between young-generation garbage collections where Python's trigger stays on "
        "(gc_young_every_s 0; Python's default 700; 0 keeps it)",
    )
    gc_young_every_s: float = Field(
        default=2.0,
        ge=0,
        description="the worker's young garbage collections: Python's allocation trigger is off, and after a batch "
        "or heartbeat at least this long after the last one the worker collects and freezes what survived "
        "(0: Python's trigger, gc_gen0_threshold, and a young collection after every batch)",
    )
    gc_full_every_s: float = Field(
        default=600.0,
        ge=0,
        description="the worker freezes its state out of the garbage collector and runs a full collection this "
        "often (0: no freezing, Python's generations alone)",
    )

    # ClickHouse
    clickhouse_dsn: str | None = Field(default=None, description="clickhouse://...; empty = embedded chdb")
    clickhouse_database: str = Field(default="callpulse", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    data_dir: Path = Field(default=Path("var"), description="embedded data (chdb under <data_dir>/chdb)")
    raw_retention_days: int | None = Field(
        default=None, ge=1, description="TTL of the raw event tables (servers >= 20.1); empty = keep"
    )
    sink_batch_records: int = Field(default=5_000, ge=1, description="Kafka records the sink takes per batch")
    sink_batch_rows: int = Field(default=50_000, ge=1, description="rows per ClickHouse insert, at most")
    sink_flush_interval_s: float = Field(default=1.0, gt=0, description="insert at least this often when data waits")
    sink_max_backoff_s: float = Field(default=30.0, gt=0, description="longest pause between insert retries")
    sink_metrics_port: int = 9465
    test_kill_after_inserts: int | None = Field(
        default=None, description="fault injection for tests: SIGKILL the sink after this many acknowledged inserts"
    )

    # Prometheus
    metrics_port: int = 9464
    metrics_host: str = Field(default="127.0.0.1", description="bind address of the metrics endpoints")
    metrics_max_label_values: int = Field(default=50, ge=1, description="per dimension; the rest is `other`")

    # Windows and time
    window_sizes_s: list[int] = [60, 900, 3600]
    agent_window_sizes_s: list[int] = Field(
        default=[3600],
        description="window sizes with per-agent records (ClickHouse only): an agent's minute holds a contact or "
        "none; hours add up to days in ClickHouse; add 900 for interval reports per agent",
    )
    grace_s: int = Field(default=120, ge=0, description="allowed lateness in event time")
    idle_timeout_s: float = Field(default=30.0, gt=0, description="wall seconds before an idle source advances")
    max_future_skew_s: int = Field(default=900, description="events further in the future are rejected")

    # KPI parameters
    sl_thresholds_s: list[int] = [20, 30]
    sl_default_variant: SlVariant = "answered_abandoned_no_short"
    short_abandon_s: float = 5.0
    repeat_horizon_s: int = 86_400
    repeat_complaint_horizon_s: int = 7 * 86_400
    orphan_timeout_s: int = 7_200
    agent_state_timeout_s: int = Field(
        default=86_400, description="an agent state with no event this long ends there: the agent counts as logged out"
    )
    zero_fill_horizon_s: int = Field(
        default=7 * 86_400,
        description="a dimension value is zero-filled this long after its last data, then not until it has data again",
    )
    facts_retention_s: int = 86_400

    # Early warnings
    warning_rules: Path | None = Field(default=None, description="rules YAML; empty = the shipped defaults")

    # Personal data
    pii_key: SecretStr = SecretStr("callpulse-dev-key-change-me")

    @field_validator("window_sizes_s")
    @classmethod
    def _sizes_nest(cls, v: list[int]) -> list[int]:
        v = sorted(set(v))
        if not v or v[0] <= 0:
            raise ValueError("window sizes must be positive")
        if any(s % v[0] for s in v):
            raise ValueError("every window size must be a multiple of the smallest (the base window)")
        if any(86_400 % s and s % 86_400 for s in v):
            raise ValueError("window sizes must divide a day (or be whole days)")
        return v

    @model_validator(mode="after")
    def _orphan_after_grace(self) -> Settings:
        if not set(self.agent_window_sizes_s) <= set(self.window_sizes_s):
            raise ValueError("agent_window_sizes_s must be a subset of window_sizes_s")
        if self.orphan_timeout_s <= self.grace_s + self.window_sizes_s[0]:
            raise ValueError("orphan_timeout_s must exceed grace_s + the base window")
        if self.agent_state_timeout_s <= self.grace_s + self.window_sizes_s[0]:
            raise ValueError("agent_state_timeout_s must exceed grace_s + the base window")
        if self.zero_fill_horizon_s < self.window_sizes_s[-1]:
            raise ValueError("zero_fill_horizon_s must cover the longest window")
        if self.facts_retention_s < self.grace_s + 2 * self.window_sizes_s[0]:
            raise ValueError("facts_retention_s must cover grace_s + two base windows (the dedup horizon)")
        return self

    @cached_property
    def base_window_s(self) -> int:
        return self.window_sizes_s[0]

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def sink_app_id(self) -> str:
        """The sink's own consumer group: the BI store never holds back the real-time path."""
        return f"{self.app_id}-sink"

    def kafka_url(self) -> str:
        return f"kafka://{self.bootstrap()}"

    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_broker_port}"
