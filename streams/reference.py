"""Batch reference: every KPI recomputed from raw events, independently of the streaming engine.

It shares only the event contracts, the KPI formulas (``streams/kpis.py``, tested on their own)
and the documented rules, and re-derives everything else in batch style: which events count
(per-partition stream time, grace, de-duplication, in arrival order, with each event placed in
the partition Kafka's default partitioner would choose), then plain group-bys per window size
over the accepted events. Tests compare the stream's ``cc.kpis`` with this; users run it as
``callpulse kpis recompute`` to audit the stream.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from schemas.events import (
    AgentState,
    CallEvent,
    CallEventKind,
    EventBase,
    SurveyEvent,
    TicketEvent,
    TicketEventKind,
    entity_key,
)
from schemas.pii import Pseudonymizer
from schemas.records import KpiRecord
from streams.kpis import kpi_record
from streams.partial import KpiPartial, wait_bucket
from streams.partitioning import partition_for
from streams.sources import AGENT_STATE_FIELD, EngineParams, split_dimkey
from streams.windows import floor_to

FAMILIES = ("calls", "tickets", "surveys", "agents")


@dataclass
class Arrival:
    """One record as it arrived: an event, or a watermark for one partition."""

    family: str
    partition: int
    event: EventBase | None = None
    watermark: float | None = None


def arrivals_from_events(
    items: Iterable[tuple[str, EventBase]], partitions: int, final_watermark: float | None = None
) -> list[Arrival]:
    """Place events in partitions as a Kafka producer keyed by entity id would, and optionally
    append a watermark to every partition of every topic (what ``callpulse produce`` sends)."""
    out = [Arrival(f, partition_for(entity_key(f, e), partitions), e) for f, e in items]
    if final_watermark is not None:
        out.extend(Arrival(f, p, watermark=final_watermark) for f in FAMILIES for p in range(partitions))
    return out


def _dims(*pairs: tuple[str, str | None]) -> list[str]:
    return [f"{d}\t{v}" for d, v in pairs if v is not None]


@dataclass
class Tally:
    """Everything accepted events contribute, keyed by base window."""

    sums: dict[tuple[int, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    thresholds: dict[tuple[int, str], dict[str, list[int]]] = field(default_factory=dict)
    maxes: dict[tuple[int, str], float] = field(default_factory=dict)
    reasons: dict[tuple[int, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    values: dict[tuple[int, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    deltas: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)  # dim -> level -> sec -> d
    csat_wait: dict[tuple[int, str], dict[str, list[int]]] = field(default_factory=dict)
    firsts: list[tuple[str, str, float, str, str, list[str]]] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)  # base windows any source opened
    data: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # dim -> windows with data

    def add(self, w: int, dims: Iterable[str], name: str, value: float = 1) -> None:
        for d in dims:
            cell = self.sums[(w, d)]
            cell[name] = cell.get(name, 0) + value
            self._seen(w, d)

    def _seen(self, w: int, d: str) -> None:
        self.data[d].add(w)

    def level(self, base: int, dims: Iterable[str], level: str, ts: float, delta: int) -> None:
        w = floor_to(ts, base)
        for d in dims:
            series = self.deltas.setdefault(d, {}).setdefault(level, {})
            series[int(ts)] = series.get(int(ts), 0) + delta
            self._seen(w, d)


class Reference:
    def __init__(self, params: EngineParams, partitions: int, repeat_horizon: int, complaint_horizon: int):
        self.p = params
        self.partitions = partitions
        self.repeat_horizon = repeat_horizon
        self.complaint_horizon = complaint_horizon
        self.t = Tally()
        self.answers: dict[str, tuple[float, float]] = {}  # contact -> (answer ts, wait), last accepted
        self.surveys: list[tuple[int, str | None, int, list[str]]] = []
        self.closed: dict[tuple[str, int], int] = {}
        self.counts = {"accepted": 0, "late": 0, "duplicate": 0}
        self.pseudo = Pseudonymizer(params.pii_key)
        self._cum: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    # -- acceptance, per source in arrival order ------------------------------------------------
    def run(self, arrivals: list[Arrival]) -> None:
        by_source: dict[tuple[str, int], list[Arrival]] = defaultdict(list)
        for a in arrivals:
            by_source[(a.family, a.partition)].append(a)
        for family in FAMILIES:  # calls first: the survey join reads their answers
            for part in range(self.partitions):
                self._walk(family, part, by_source.get((family, part), []))

    def _walk(self, family: str, part: int, items: list[Arrival]) -> None:
        base, grace = self.p.base, self.p.grace
        st: float | None = None
        closed: int | None = None
        seen: set[tuple[str, str]] = set()
        state: dict[str, dict[str, Any]] = {}
        for a in items:
            t = a.watermark if a.event is None else a.event.ts.timestamp()
            assert t is not None
            st = t if st is None else max(st, t)
            b = floor_to(st - grace, base)
            if closed is None:
                closed = b
            elif b > closed:
                self._hooks(family, state, closed, b)
                closed = b
            e = a.event
            if e is None:
                continue
            ts = e.ts.timestamp()
            if floor_to(ts, base) + base + grace <= st:
                self.counts["late"] += 1
                continue
            key = entity_key(family, e)
            if (key, e.event_id) in seen:
                self.counts["duplicate"] += 1
                continue
            seen.add((key, e.event_id))
            self.counts["accepted"] += 1
            getattr(self, f"_{family}")(e, ts, state, key, closed)
        if closed is not None:
            self.closed[(family, part)] = closed

    def _hooks(self, family: str, state: dict[str, dict[str, Any]], old: int, new: int) -> None:
        if family == "calls":
            for cid in sorted(state):
                s = state[cid]
                deadline = s["last"] + self.p.orphan_timeout
                if s["open"] and deadline < new:
                    self.t.add(floor_to(deadline, self.p.base), s["dims"], "orphaned")
                    self.t.touched.add(floor_to(deadline, self.p.base))
                    self._end_contact(s, deadline)
        elif family == "agents":
            timeout = self.p.agent_state_timeout
            for aid in sorted(state):
                s = state[aid]
                if s["state"] in (None, "logged_out") or s["since"] >= new:
                    continue
                self._credit(s, max(s["since"], s["cred"] or s["since"], old), min(new, s["since"] + timeout))
                s["cred"] = new
                if s["since"] + timeout <= new:  # no event for the timeout: logged out from then
                    s["state"] = "logged_out"

    # -- calls ---------------------------------------------------------------------------------
    def _end_contact(self, s: dict[str, Any], ts: float) -> None:
        if s["waiting"]:
            s["waiting"] = False
            self.t.level(self.p.base, s["dims"], "waiting", ts, -1)
        if s["open"]:
            s["open"] = False
            self.t.level(self.p.base, s["dims"], "in_progress", ts, -1)
        s["term"] = True

    def _calls(self, e: CallEvent, ts: float, state: dict[str, Any], key: str, closed: int) -> None:
        w = floor_to(ts, self.p.base)
        self.t.touched.add(w)
        dims = _dims(("all", ""), ("queue", e.queue), ("channel", e.channel.value), ("business_type", e.business_type))
        s = state.get(key)
        if s is None:
            s = state[key] = {"dims": dims, "open": False, "waiting": False, "term": False, "last": ts}
        s["last"] = max(s["last"], ts)
        k = e.kind
        if k is CallEventKind.offered:
            self.t.add(w, dims, "offered")
            if e.customer_id:
                self.t.add(w, dims, "offered_identified")
                self.t.firsts.append(("contact", self.pseudo.token(e.customer_id) or "", ts, e.contact_id, "", dims))
            if not s["open"] and not s["term"]:
                s["open"] = s["waiting"] = True
                self.t.level(self.p.base, s["dims"], "in_progress", ts, +1)
                self.t.level(self.p.base, s["dims"], "waiting", ts, +1)
        elif k in (CallEventKind.answered, CallEventKind.abandoned):
            wait = e.wait_seconds or 0.0
            name = k.value
            self.t.add(w, dims, name)
            self.t.add(w, dims, f"{name}_wait_sum", wait)
            for d in dims:
                cell = self.t.thresholds.setdefault((w, d), {})
                counts = cell.setdefault(f"{name}_within", [0] * len(self.p.thresholds))
                for i, thr in enumerate(self.p.thresholds):
                    counts[i] += wait <= thr
                self.t.maxes[(w, d)] = max(self.t.maxes.get((w, d), wait), wait)
            if k is CallEventKind.answered:
                self.answers[e.contact_id] = (ts, wait)
                if s["waiting"]:
                    s["waiting"] = False
                    self.t.level(self.p.base, s["dims"], "waiting", ts, -1)
            else:
                if wait <= self.p.short_abandon:
                    self.t.add(w, dims, "short_abandoned")
                self._end_contact(s, ts)
        elif k is CallEventKind.ended:
            agent = _dims(("agent", e.agent_id)) if e.agent_id else []
            talk, hold, acw = e.talk_seconds or 0.0, e.hold_seconds or 0.0, e.acw_seconds or 0.0
            for name, v in (
                ("handled", 1),
                ("talk_sum", talk),
                ("hold_sum", hold),
                ("acw_sum", acw),
                ("held", int(hold > 0)),
                ("with_acw", int(acw > 0)),
            ):
                self.t.add(w, dims + agent, name, v)
            self._end_contact(s, ts)
        elif k is CallEventKind.transferred:
            self.t.add(w, dims, "transferred")
        elif k is CallEventKind.ring_no_answer:
            agent = _dims(("agent", e.agent_id)) if e.agent_id else []
            self.t.add(w, dims + agent, "rona")

    # -- agents --------------------------------------------------------------------------------
    def _credit(self, s: dict[str, Any], start: float, end: float) -> None:
        state = AgentState(s["state"])
        name = AGENT_STATE_FIELD.get(state)
        if name is None or end <= start:
            return
        reason = None
        if state is AgentState.not_ready:
            reason = s["reason"] or "unspecified"
        elif state is AgentState.logged_in:
            reason = "login"
        dims = ["all\t", *(f"queue\t{q}" for q in s["queues"])]
        base = self.p.base
        w = floor_to(start, base)
        while w < end:
            secs = min(end, w + base) - max(start, w)
            self.t.touched.add(w)
            self.t.add(w, dims, name, secs)
            if reason is not None:
                for d in dims:
                    cell = self.t.reasons[(w, d)]
                    cell[reason] = cell.get(reason, 0) + secs
            w += base

    def _agents(self, e: Any, ts: float, state: dict[str, Any], key: str, closed: int) -> None:
        s = state.get(key)
        if s is None:
            s = state[key] = {"state": None, "since": None, "cred": None, "queues": [], "reason": None}
        if s["since"] is not None and ts < s["since"]:
            return
        if s["state"] is not None:
            end = min(ts, s["since"] + self.p.agent_state_timeout)
            self._credit(s, max(s["since"], s["cred"] or s["since"], closed), end)
        s.update(state=e.state.value, since=ts, cred=None, reason=e.reason)
        if e.queues:
            s["queues"] = list(e.queues)

    # -- tickets -------------------------------------------------------------------------------
    def _tickets(self, e: TicketEvent, ts: float, state: dict[str, Any], key: str, closed: int) -> None:
        w = floor_to(ts, self.p.base)
        self.t.touched.add(w)
        dims = _dims(("all", ""), ("queue", e.team), ("channel", e.channel.value), ("business_type", e.business_type))
        s = state.get(key)
        if s is None:
            s = state[key] = {"dims": dims, "open": False, "fr": False}
        age = ts - e.created_at.timestamp()
        k = e.kind

        def backlog(delta: int) -> None:
            self.t.level(self.p.base, s["dims"], "backlog", ts, delta)

        if k is TicketEventKind.created:
            self.t.add(w, dims, "tickets_created")
            if e.customer_id:
                token = self.pseudo.token(e.customer_id) or ""
                self.t.firsts.append(("ticket", token, ts, e.ticket_id, e.category, dims))
            if not s["open"]:
                s["open"] = True
                backlog(+1)
        elif k is TicketEventKind.first_response and not s["fr"]:
            s["fr"] = True
            self.t.add(w, dims, "tickets_first_responses")
            for d in dims:
                self.t.values[(w, d, "frt")].append(max(age, 0.0))
        elif k is TicketEventKind.resolved:
            self.t.add(w, dims, "tickets_resolved")
            for d in dims:
                self.t.values[(w, d, "resolution")].append(max(age, 0.0))
            if e.sla_due is not None:
                self.t.add(w, dims, "sla_evaluated")
                self.t.add(w, dims, "sla_breached", int(e.ts > e.sla_due))
            if s["open"]:
                s["open"] = False
                backlog(-1)
        elif k is TicketEventKind.reopened:
            self.t.add(w, dims, "tickets_reopened")
            if not s["open"]:
                s["open"] = True
                backlog(+1)
        elif k is TicketEventKind.closed:
            self.t.add(w, dims, "tickets_closed")
            if s["open"]:
                s["open"] = False
                backlog(-1)

    # -- surveys -------------------------------------------------------------------------------
    def _surveys(self, e: SurveyEvent, ts: float, state: dict[str, Any], key: str, closed: int) -> None:
        w = floor_to(ts, self.p.base)
        self.t.touched.add(w)
        dims = _dims(
            ("all", ""),
            ("queue", e.queue),
            ("channel", e.channel.value if e.channel else None),
            ("business_type", e.business_type),
            ("agent", e.agent_id),
        )
        self.t.add(w, dims, "survey_responses")
        if e.csat is not None:
            self.t.add(w, dims, "csat_n")
            self.t.add(w, dims, "csat_sum", e.csat)
            self.t.add(w, dims, "csat_top2", int(e.csat >= 4))
            self.surveys.append((w, e.contact_id, e.csat, dims))
        if e.nps is not None:
            self.t.add(w, dims, "nps_n")
            self.t.add(w, dims, "promoters", int(e.nps >= 9))
            self.t.add(w, dims, "detractors", int(e.nps <= 6))
        if e.ces is not None:
            self.t.add(w, dims, "ces_n")
            self.t.add(w, dims, "ces_sum", e.ces)

    # -- group-bys -----------------------------------------------------------------------------
    def _finish_joins(self) -> None:
        base = self.p.base
        for w, contact, csat, dims in self.surveys:
            answer = self.answers.get(contact) if contact else None
            wait = answer[1] if answer is not None and answer[0] < w + base else None
            bucket = wait_bucket(wait)
            for d in dims:
                cell = self.t.csat_wait.setdefault((w, d), {}).setdefault(bucket, [0, 0, 0])
                cell[0] += 1
                cell[1] += csat
                cell[2] += int(csat >= 4)

    def _repeats(self) -> None:
        history: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for kind, token, ts, entity, category, dims in sorted(self.t.firsts, key=lambda f: (f[2], f[3], f[0])):
            if not token:
                continue
            horizon = self.repeat_horizon if kind == "contact" else self.complaint_horizon
            earlier = history[f"{kind}|{token}|{category}"]
            if any(ts - horizon <= t and (t, ent) < (ts, entity) for t, ent in earlier):
                self.t.add(
                    floor_to(ts, self.p.base), dims, "repeat_contacts" if kind == "contact" else "repeat_complaints"
                )
            earlier.append((ts, entity))

    def records(self, sizes: tuple[int, ...], default_variant: str) -> list[KpiRecord]:
        self._finish_joins()
        self._repeats()
        if not self.t.touched or len(self.closed) < len(FAMILIES) * self.partitions:
            return []
        first = min(self.t.touched)
        last_end = min(self.closed.values())  # base windows ending here or before are final
        self._data = {d: sorted(ws) for d, ws in self.t.data.items() if not d.startswith("agent\t")}
        out: list[KpiRecord] = []
        for size in sizes:
            start = floor_to(first, size)
            while start + size <= last_end:
                out.extend(self._window_records(size, start, first))
                start += size
        return out

    def _window_records(self, size: int, start: int, first: int) -> list[KpiRecord]:
        base = self.p.base
        lo = max(start, first)
        bases = range(lo, start + size, base)
        # a value is in a base window within the zero-fill horizon after one of its data windows,
        # and in a longer window when it is in one of its base windows: it has data in
        # (lo - horizon, end)
        end, since = start + size, lo - self.zero_fill_horizon
        dims = {d for d, ws in self._data.items() if (i := bisect_right(ws, since)) < len(ws) and ws[i] < end}
        if self.agent_sizes is None or size in self.agent_sizes:
            dims |= {d for (w, d) in self.t.sums if d.startswith("agent\t") and lo <= w < start + size}
        records = []
        for d in sorted(dims):
            p = KpiPartial(len(self.p.thresholds))
            pct: dict[str, list[float]] = {"frt": [], "resolution": []}
            for w in bases:
                for name, v in self.t.sums.get((w, d), {}).items():
                    setattr(p, name, getattr(p, name) + v)
                for name, counts in self.t.thresholds.get((w, d), {}).items():
                    mine = getattr(p, name)
                    for i, c in enumerate(counts):
                        mine[i] += c
                if (w, d) in self.t.maxes:
                    p.add_wait(self.t.maxes[(w, d)])
                for r, secs in self.t.reasons.get((w, d), {}).items():
                    p.not_ready_reasons[r] = p.not_ready_reasons.get(r, 0) + secs
                for b, (n, tot, top) in self.t.csat_wait.get((w, d), {}).items():
                    cell = p.csat_wait.setdefault(b, [0, 0, 0])
                    cell[0] += n
                    cell[1] += tot
                    cell[2] += top
                for name in pct:
                    pct[name].extend(self.t.values.get((w, d, name), []))
            p.levels = self._levels(d, lo, start + size)
            dim, value = split_dimkey(d)
            rec = kpi_record(p, size, start, dim, value, self.p.thresholds, self._variant)
            rec = rec.model_copy(update=_exact_percentiles(pct))
            records.append(rec)
        return records

    def _levels(self, d: str, lo: int, hi: int) -> dict[str, tuple[int, int, int]]:
        """Level at ``lo`` (all earlier deltas), at ``hi``, and the peak in between."""
        out = {}
        for level in ("waiting", "in_progress", "backlog"):
            seconds, running = self._cumulative(d, level)
            i, j = bisect_left(seconds, lo), bisect_left(seconds, hi)
            start = running[i - 1] if i else 0
            inside = running[i:j]
            out[level] = (start, inside[-1] if inside else start, max([start, *inside]))
        return out

    def _cumulative(self, d: str, level: str) -> tuple[list[int], list[int]]:
        key = (d, level)
        if key not in self._cum:
            series = self.t.deltas.get(d, {}).get(level, {})
            seconds = sorted(series)
            self._cum[key] = (seconds, list(accumulate(series[s] for s in seconds)))
        return self._cum[key]

    _variant = "answered_abandoned_no_short"
    agent_sizes: tuple[int, ...] | None = None  # window sizes with per-agent records; None = all
    zero_fill_horizon = 7 * 86_400
    _data: dict[str, list[int]]  # non-agent dim -> its base windows with data, in order


def _exact_percentiles(values: dict[str, list[float]]) -> dict[str, float | None]:
    """Exact quantiles at rank q*(n-1) (lower), the rank DDSketch's guarantee refers to."""
    names = {"frt": "first_response", "resolution": "resolution"}
    out: dict[str, float | None] = {}
    for key, vals in values.items():
        vals = sorted(vals)
        for q, label in ((0.5, "p50"), (0.9, "p90"), (0.95, "p95")):
            out[f"{names[key]}_{label}_seconds"] = vals[int(q * (len(vals) - 1))] if vals else None
    return out


def recompute(
    arrivals: list[Arrival],
    params: EngineParams,
    partitions: int,
    sizes: tuple[int, ...],
    default_variant: str = "answered_abandoned_no_short",
    repeat_horizon: int = 86_400,
    complaint_horizon: int = 7 * 86_400,
    agent_sizes: tuple[int, ...] | None = None,
    zero_fill_horizon: int = 7 * 86_400,
) -> tuple[list[KpiRecord], dict[str, int]]:
    """All final KPI records for ``arrivals``, and how many events were accepted/late/duplicate.
    Per-agent records only for ``agent_sizes`` (None: every size)."""
    ref = Reference(params, partitions, repeat_horizon, complaint_horizon)
    ref._variant = default_variant
    ref.agent_sizes = agent_sizes
    ref.zero_fill_horizon = zero_fill_horizon
    ref.run(arrivals)
    return ref.records(sizes, default_variant), ref.counts


def recompute_as_configured(arrivals: list[Arrival], s: Any) -> tuple[list[KpiRecord], dict[str, int]]:
    """``recompute`` with every parameter from ``callpulse.config.Settings`` (as the worker runs)."""
    return recompute(
        arrivals,
        EngineParams.from_settings(s),
        s.partitions,
        tuple(s.window_sizes_s),
        s.sl_default_variant,
        s.repeat_horizon_s,
        s.repeat_complaint_horizon_s,
        tuple(s.agent_window_sizes_s),
        s.zero_fill_horizon_s,
    )
