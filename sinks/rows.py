"""Pure conversion of events and records into ClickHouse rows (no I/O).

This is where personal data is removed on the way to the BI store: customer ids and caller
numbers become keyed pseudonyms, survey comments are scrubbed. Column order matches the
migrations in ``sinks/migrations``; a test checks that every table column is produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.events import AgentStateEvent, CallEvent, EventBase, SurveyEvent, TicketEvent
from schemas.pii import Pseudonymizer, scrub_text
from schemas.records import KpiRecord, StaffingRecord, WarningRecord

KAFKA_COLUMNS = ("schema_version", "kafka_partition", "kafka_offset", "ingested_at")


@dataclass(frozen=True)
class Origin:
    """Where a row came from: the Kafka partition and offset (the row's version) and when."""

    partition: int
    offset: int
    ingested_at: datetime

    def values(self, schema_version: int) -> tuple[Any, ...]:
        return (schema_version, self.partition, self.offset, self.ingested_at)


CALL_COLUMNS = (
    "event_id",
    "ts",
    "kind",
    "contact_id",
    "parent_contact_id",
    "queue",
    "channel",
    "business_type",
    "direction",
    "agent_id",
    "customer_pseudonym",
    "caller_pseudonym",
    "wait_seconds",
    "ring_seconds",
    "talk_seconds",
    "hold_seconds",
    "acw_seconds",
    "queue_position",
    "transfer_target",
    "hangup_by",
    "source_system",
    *KAFKA_COLUMNS,
)
TICKET_COLUMNS = (
    "event_id",
    "ts",
    "kind",
    "ticket_id",
    "created_at",
    "category",
    "priority",
    "sla_due",
    "channel",
    "team",
    "business_type",
    "agent_id",
    "customer_pseudonym",
    "status",
    *KAFKA_COLUMNS,
)
SURVEY_COLUMNS = (
    "event_id",
    "ts",
    "survey_id",
    "contact_id",
    "ticket_id",
    "queue",
    "channel",
    "business_type",
    "agent_id",
    "customer_pseudonym",
    "csat",
    "nps",
    "ces",
    "comment_scrubbed",
    *KAFKA_COLUMNS,
)
AGENT_COLUMNS = ("event_id", "ts", "agent_id", "state", "queues", "reason", "channel", *KAFKA_COLUMNS)


def _v(e: Any) -> Any:
    return None if e is None else e.value


class RowBuilder:
    """Rows for every table; one instance per pseudonymisation key."""

    def __init__(self, pseudonymizer: Pseudonymizer) -> None:
        self.pseudo = pseudonymizer
        self.event_rows: dict[str, tuple[str, tuple[str, ...], Callable[[Any, Origin], tuple[Any, ...]]]] = {
            "calls": ("call_events", CALL_COLUMNS, self.call_row),
            "tickets": ("ticket_events", TICKET_COLUMNS, self.ticket_row),
            "surveys": ("survey_responses", SURVEY_COLUMNS, self.survey_row),
            "agents": ("agent_state_events", AGENT_COLUMNS, self.agent_row),
        }

    def event_table(self, family: str) -> tuple[str, tuple[str, ...]]:
        table, columns, _ = self.event_rows[family]
        return table, columns

    def event_row(self, family: str, event: EventBase, origin: Origin) -> tuple[Any, ...]:
        return self.event_rows[family][2](event, origin)

    def call_row(self, e: CallEvent, o: Origin) -> tuple[Any, ...]:
        return (
            e.event_id,
            e.ts,
            e.kind.value,
            e.contact_id,
            e.parent_contact_id,
            e.queue,
            e.channel.value,
            e.business_type,
            e.direction.value,
            e.agent_id,
            self.pseudo.token(e.customer_id, "customer"),
            self.pseudo.token(e.caller_number, "phone"),
            e.wait_seconds,
            e.ring_seconds,
            e.talk_seconds,
            e.hold_seconds,
            e.acw_seconds,
            e.queue_position,
            e.transfer_target,
            e.hangup_by,
            e.source_system,
            *o.values(e.schema_version),
        )

    def ticket_row(self, e: TicketEvent, o: Origin) -> tuple[Any, ...]:
        return (
            e.event_id,
            e.ts,
            e.kind.value,
            e.ticket_id,
            e.created_at,
            e.category,
            e.priority.value,
            e.sla_due,
            e.channel.value,
            e.team,
            e.business_type,
            e.agent_id,
            self.pseudo.token(e.customer_id, "customer"),
            e.status,
            *o.values(e.schema_version),
        )

    def survey_row(self, e: SurveyEvent, o: Origin) -> tuple[Any, ...]:
        return (
            e.event_id,
            e.ts,
            e.survey_id,
            e.contact_id,
            e.ticket_id,
            e.queue,
            _v(e.channel),
            e.business_type,
            e.agent_id,
            self.pseudo.token(e.customer_id, "customer"),
            e.csat,
            e.nps,
            e.ces,
            scrub_text(e.comment),
            *o.values(e.schema_version),
        )

    def agent_row(self, e: AgentStateEvent, o: Origin) -> tuple[Any, ...]:
        return (
            e.event_id,
            e.ts,
            e.agent_id,
            e.state.value,
            list(e.queues),
            e.reason,
            _v(e.channel),
            *o.values(e.schema_version),
        )


# -- KPI windows --------------------------------------------------------------------------------
_KPI_MAPPED = {
    "answered_within",
    "abandoned_within",
    "service_level_variants",
    "not_ready_by_reason",
    "csat_by_wait",
    "schema_version",
}
KPI_SCALARS = tuple(n for n in KpiRecord.model_fields if n not in _KPI_MAPPED)
KPI_COLUMNS = (
    *KPI_SCALARS,
    "sl_threshold_s",
    "answered_within",
    "abandoned_within",
    "service_level_at",
    "service_level_variant",
    "service_level_variant_value",
    "not_ready_reason",
    "not_ready_reason_seconds",
    "csat_wait_bucket",
    "csat_wait_responses",
    "csat_wait_mean",
    "csat_wait_top2_ratio",
    *KAFKA_COLUMNS,
)


def kpi_row(r: KpiRecord, o: Origin, default_variant: str) -> tuple[Any, ...]:
    """One ``kpi_window`` row. Dicts become parallel arrays; ``service_level_at[i]`` is the
    default variant at ``sl_threshold_s[i]``."""
    thresholds = sorted(int(t) for t in r.answered_within)
    variants = sorted(r.service_level_variants)
    reasons = sorted(r.not_ready_by_reason)
    buckets = list(r.csat_by_wait)
    d = r.__dict__
    return (
        *(d[n] for n in KPI_SCALARS),
        thresholds,
        [r.answered_within[str(t)] for t in thresholds],
        [r.abandoned_within.get(str(t), 0) for t in thresholds],
        [r.service_level_variants.get(f"{default_variant}@{t}") for t in thresholds],
        variants,
        [r.service_level_variants[v] for v in variants],
        reasons,
        [float(r.not_ready_by_reason[k]) for k in reasons],
        buckets,
        [int(r.csat_by_wait[b].get("responses") or 0) for b in buckets],
        [r.csat_by_wait[b].get("mean") for b in buckets],
        [r.csat_by_wait[b].get("top2_ratio") for b in buckets],
        *o.values(r.schema_version),
    )


# -- warnings -----------------------------------------------------------------------------------
WARNING_COLUMNS = (
    "warning_id",
    "rule",
    "kpi",
    "dimension",
    "dimension_value",
    "level",
    "change",
    "value",
    "threshold",
    "expected",
    "started_at",
    "updated_at",
    "resolved_at",
    "reason",
    *KAFKA_COLUMNS,
)


def warning_row(w: WarningRecord, o: Origin) -> tuple[Any, ...]:
    return (
        w.warning_id,
        w.rule,
        w.kpi,
        w.dimension,
        w.dimension_value,
        _v(w.level),
        w.change,
        w.value,
        w.threshold,
        w.expected,
        w.started_at,
        w.updated_at,
        w.resolved_at,
        w.reason,
        *o.values(w.schema_version),
    )


# -- staffing intervals ---------------------------------------------------------------------------
STAFFING_FIELDS = tuple(f for f in StaffingRecord.model_fields if f != "schema_version")
STAFFING_COLUMNS = (*STAFFING_FIELDS, *KAFKA_COLUMNS)


def staffing_row(r: StaffingRecord, o: Origin) -> tuple[Any, ...]:
    return (*(getattr(r, f) for f in STAFFING_FIELDS), *o.values(r.schema_version))
