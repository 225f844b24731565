"""KPI formulas: from a final merged partial to a ``KpiRecord``.

Each formula and the variant chosen is written down, with its reason, in ``docs/kpis.md``.
Ratios are ``None`` when their denominator is zero.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from schemas.events import SCHEMA_VERSION
from schemas.records import KpiRecord
from streams.partial import WAIT_BUCKETS, KpiPartial

SL_VARIANTS: tuple[str, ...] = (
    "answered",  # Asterisk SL: answered within X / answered
    "answered_abandoned",  # Genesys, Cisco "abandons negative": / (answered + abandoned)
    "answered_abandoned_no_short",  # Genesys with short abandons excluded (callpulse default)
    "abandons_ignored",  # Cisco type 1: / (answered + abandoned - abandoned within X)
    "abandons_positive",  # Cisco type 3, Asterisk SL2: (answered + abandoned within X) / (answered + abandoned)
    "left_queue",  # Amazon Connect: left the queue within X (answered or abandoned) / offered
)


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _variant_values(
    a_x: int, ab_x: int, answered: int, abandoned: int, short: int, offered: int
) -> tuple[float | None, ...]:
    """The service level of each of ``SL_VARIANTS``, in its order, from one threshold's counts
    (answered and abandoned within it) and the window's: the one place of the six formulas."""
    both = answered + abandoned
    return (
        ratio(a_x, answered),
        ratio(a_x, both),
        ratio(a_x, both - short),
        ratio(a_x, both - ab_x),
        ratio(a_x + ab_x, both),
        ratio(a_x + ab_x, offered),
    )


_VARIANT_INDEX = {v: n for n, v in enumerate(SL_VARIANTS)}


def service_level(p: KpiPartial, i: int, variant: str) -> float | None:
    """Service level for threshold index ``i`` in one of ``SL_VARIANTS``."""
    n = _VARIANT_INDEX.get(variant)
    if n is None:
        raise ValueError(f"unknown service level variant {variant!r}")
    values = _variant_values(
        p.answered_within[i], p.abandoned_within[i], p.answered, p.abandoned, p.short_abandoned, p.offered
    )
    return values[n]


def service_levels(p: KpiPartial, thresholds: tuple[int, ...]) -> dict[str, float | None]:
    """Every variant at every threshold, keyed ``variant@threshold`` (thresholds in order, each
    with ``SL_VARIANTS`` in order), with the partial's counters read once per record instead of
    once per variant (12 ``service_level`` calls per record with the defaults)."""
    answered, abandoned, short, offered = p.answered, p.abandoned, p.short_abandoned, p.offered
    out: dict[str, float | None] = {}
    for keys, a_x, ab_x in zip(_variant_names(thresholds), p.answered_within, p.abandoned_within, strict=True):
        out.update(zip(keys, _variant_values(a_x, ab_x, answered, abandoned, short, offered), strict=True))
    return out


@lru_cache(maxsize=64)
def _variant_names(thresholds: tuple[int, ...]) -> tuple[tuple[str, ...], ...]:
    """Per threshold, ``variant@threshold`` of each of ``SL_VARIANTS``, in their order."""
    return tuple(tuple(f"{v}@{t}" for v in SL_VARIANTS) for t in thresholds)


def _percentiles(p: KpiPartial, name: str) -> list[float | None]:
    """p50, p90, p95 of a sketch (None without values)."""
    sketch = getattr(p, name)
    if sketch is None:
        return [None, None, None]
    return sketch.quantiles((0.5, 0.9, 0.95))


_set_attr = object.__setattr__


@lru_cache(maxsize=4096)
def _utc(ts: int) -> datetime:
    """Window boundaries repeat for every dimension of a window: build each datetime once."""
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=4096)
def epoch_s(dt: datetime) -> float:
    """``dt.timestamp()`` of a record's window boundary, cached: the detector reads each
    boundary of a window once per dimension value, and ``timestamp()`` of an aware datetime
    costs about a microsecond (the datetimes are ``_utc``'s shared ones, their hash cached)."""
    return dt.timestamp()


@lru_cache(maxsize=64)
def _threshold_names(thresholds: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(str(t) for t in thresholds)


def _trusted_record(fields: dict[str, Any]) -> KpiRecord:
    """``KpiRecord.model_construct`` for a record whose every field is given (as ``kpi_record``
    does; ``schema_version`` first, not counted as set): the same four attributes pydantic sets,
    without its per-field default handling, which was a fifth of the merge stage's time (tests
    compare it with ``model_construct``)."""
    record = KpiRecord.__new__(KpiRecord)
    given = set(fields)
    given.discard("schema_version")
    _set_attr(record, "__dict__", fields)
    _set_attr(record, "__pydantic_fields_set__", given)
    _set_attr(record, "__pydantic_extra__", None)
    _set_attr(record, "__pydantic_private__", None)
    return record


def kpi_record(
    p: KpiPartial,
    size: int,
    start: int,
    dimension: str,
    value: str,
    thresholds: tuple[int, ...],
    default_variant: str,
) -> KpiRecord:
    window_s = float(size)
    logged_in = p.ready_s + p.busy_s + p.acw_state_s + p.not_ready_s
    working = p.busy_s + p.acw_state_s
    lv = p.levels
    variants = service_levels(p, thresholds)
    names = _threshold_names(thresholds)
    frt, resolution = _percentiles(p, "frt"), _percentiles(p, "resolution")
    csat_by_wait: dict[str, dict[str, float | None]] = {}
    for bucket in WAIT_BUCKETS:
        n, total, top2 = p.csat_wait.get(bucket, (0, 0, 0))
        if n:
            csat_by_wait[bucket] = {"responses": float(n), "mean": total / n, "top2_ratio": top2 / n}
    # Values are computed here from trusted state: construct without re-validating each field.
    # Fields typed float get floats (agent seconds sum to ints when no agent was logged in), as
    # validation would make them: ``KpiRecord.to_json`` then writes what ``model_dump_json`` does.
    return _trusted_record(
        {
            "schema_version": SCHEMA_VERSION,
            "window_size_s": size,
            "window_start": _utc(start),
            "window_end": _utc(start + size),
            "dimension": dimension,
            "dimension_value": value,
            "offered": p.offered,
            "answered": p.answered,
            "abandoned": p.abandoned,
            "short_abandoned": p.short_abandoned,
            "answer_rate": ratio(p.answered, p.offered),
            "abandon_rate": ratio(p.abandoned, p.offered),
            "abandon_rate_excl_short": ratio(p.abandoned - p.short_abandoned, p.offered - p.short_abandoned),
            "answered_within": dict(zip(names, p.answered_within, strict=True)),
            "abandoned_within": dict(zip(names, p.abandoned_within, strict=True)),
            "service_level": variants[f"{default_variant}@{thresholds[0]}"] if thresholds else None,
            "service_level_variants": variants,
            "asa_seconds": ratio(p.answered_wait_sum, p.answered),
            "avg_abandon_wait_seconds": ratio(p.abandoned_wait_sum, p.abandoned),
            "longest_wait_seconds": p.longest_wait,
            "handled": p.handled,
            "aht_seconds": ratio(p.talk_sum + p.hold_sum + p.acw_sum, p.handled),
            "avg_talk_seconds": ratio(p.talk_sum, p.handled),
            "avg_hold_seconds": ratio(p.hold_sum, p.held),
            "avg_acw_seconds": ratio(p.acw_sum, p.with_acw),
            "hold_rate": ratio(p.held, p.handled),
            "transferred": p.transferred,
            "transfer_rate": ratio(p.transferred, p.handled),
            "rona": p.rona,
            "orphaned": p.orphaned,
            "waiting_at_end": lv.get("waiting", (0, 0, 0))[1],
            "in_progress_at_end": lv.get("in_progress", (0, 0, 0))[1],
            "peak_concurrent": lv.get("in_progress", (0, 0, 0))[2],
            "offered_identified": p.offered_identified,
            "repeat_contacts": p.repeat_contacts,
            "repeat_contact_rate": ratio(p.repeat_contacts, p.offered_identified),
            "staffed_agents": logged_in / window_s if dimension in ("all", "queue") else None,
            "logged_in_seconds": float(logged_in),
            "ready_seconds": float(p.ready_s),
            "busy_seconds": float(p.busy_s),
            "acw_state_seconds": float(p.acw_state_s),
            "not_ready_seconds": float(p.not_ready_s),
            "not_ready_by_reason": {reason: float(secs) for reason, secs in sorted(p.not_ready_reasons.items())},
            "occupancy": ratio(working, p.ready_s + working),
            "utilization": ratio(working, logged_in),
            "tickets_created": p.tickets_created,
            "tickets_first_responses": p.tickets_first_responses,
            "first_response_p50_seconds": frt[0],
            "first_response_p90_seconds": frt[1],
            "first_response_p95_seconds": frt[2],
            "tickets_resolved": p.tickets_resolved,
            "resolution_p50_seconds": resolution[0],
            "resolution_p90_seconds": resolution[1],
            "resolution_p95_seconds": resolution[2],
            "sla_evaluated": p.sla_evaluated,
            "sla_breached": p.sla_breached,
            "sla_breach_rate": ratio(p.sla_breached, p.sla_evaluated),
            "tickets_reopened": p.tickets_reopened,
            "reopen_rate": ratio(p.tickets_reopened, p.tickets_resolved),
            "tickets_closed": p.tickets_closed,
            "backlog": lv.get("backlog", (0, 0, 0))[1],
            "repeat_complaints": p.repeat_complaints,
            "survey_responses": p.survey_responses,
            "csat_responses": p.csat_n,
            "csat_mean": ratio(p.csat_sum, p.csat_n),
            "csat_top2_ratio": ratio(p.csat_top2, p.csat_n),
            "nps_responses": p.nps_n,
            "nps": (100.0 * (p.promoters - p.detractors) / p.nps_n) if p.nps_n else None,
            "ces_responses": p.ces_n,
            "ces_mean": ratio(p.ces_sum, p.ces_n),
            "csat_by_wait": csat_by_wait,
        }
    )
