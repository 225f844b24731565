"""A contact-center simulator: reproducible (``seed``), discrete-event, no I/O.

Arrivals per queue are a non-homogeneous Poisson process (thinning) with two daily peaks and a
weekly shape; agents with skills work shifts with breaks; contacts wait FIFO per queue and are
answered by a free skilled agent, or abandon when their patience (exponential, Erlang-A style)
runs out; handle times are lognormal by business type; some calls are transferred, some
routings ring unanswered (RONA); customers come back (a finite pool); tickets follow created ->
first response -> resolved (-> reopened -> resolved) -> closed with an SLA; surveys arrive after
some calls with CSAT falling as the wait grows. Incidents (surge, staffing drop, line outage)
can be injected and are returned as labels.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import (
    AgentState,
    AgentStateEvent,
    CallEvent,
    CallEventKind,
    Channel,
    EventBase,
    Priority,
    SurveyEvent,
    TicketEvent,
    TicketEventKind,
)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    channel: Channel
    business_type: str
    rate_per_hour: float  # mean arrivals per hour at the daily peak
    aht_s: float  # mean talk time


@dataclass(frozen=True)
class Incident:
    kind: str  # "surge" | "staffing_drop" | "outage"
    queue: str | None
    start: datetime
    end: datetime
    factor: float = 2.0  # surge multiplier, or share of agents kept for a staffing drop

    def label(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "queue": self.queue,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "factor": self.factor,
        }


DEFAULT_QUEUES = (
    QueueSpec("billing", Channel.phone, "retail", 90, 240),
    QueueSpec("tech", Channel.phone, "retail", 60, 420),
    QueueSpec("sales", Channel.phone, "business", 40, 300),
    QueueSpec("chat", Channel.chat, "retail", 50, 360),
)


def intraday_profile(hour: float, weekday: int) -> float:
    """Relative arrival intensity: two peaks (about 10:00 and 15:00), quiet nights, lighter
    weekends. 1.0 at the morning peak on a weekday."""
    morning = math.exp(-((hour - 10.0) ** 2) / (2 * 1.5**2))
    afternoon = 0.8 * math.exp(-((hour - 15.0) ** 2) / (2 * 1.8**2))
    night = 0.04
    week = 1.0 if weekday < 5 else 0.45
    return week * max(night, morning + afternoon)


@dataclass
class SimConfig:
    start: datetime = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # a Monday
    duration: timedelta = timedelta(hours=12)
    seed: int = 7
    queues: tuple[QueueSpec, ...] = DEFAULT_QUEUES
    agents: int = 36  # staffed for about 90 % in 30 s at the weekday peaks, with breaks staggered
    patience_mean_s: float = 150.0
    acw_mean_s: float = 30.0
    transfer_prob: float = 0.04
    rona_prob: float = 0.03
    survey_prob: float = 0.25
    ticket_rate_per_hour: float = 40.0
    customers: int = 4000
    incidents: tuple[Incident, ...] = ()


@dataclass(order=True)
class _Ev:
    t: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.out: list[tuple[str, EventBase]] = []
        self.t0 = cfg.start.timestamp()
        self.t1 = self.t0 + cfg.duration.total_seconds()
        self._seq = 0
        self._ids = 0
        self.heap: list[_Ev] = []
        names = [q.name for q in cfg.queues]
        # each agent has 1-2 skills
        self.skills = {
            f"agent-{i:03d}": sorted({names[i % len(names)], self.rng.choice(names)}) for i in range(cfg.agents)
        }
        self.free: dict[str, bool] = {}
        # the free agents of each queue, sorted: who can answer is a lookup, not a walk over every
        # agent per contact (a center of tens of thousands of agents then simulates in minutes)
        self.free_in: dict[str, list[str]] = {name: [] for name in names}
        self.waiting: dict[str, list[dict[str, Any]]] = {q.name: [] for q in cfg.queues}
        self.qspec = {q.name: q for q in cfg.queues}

    # -- helpers ---------------------------------------------------------------------------------
    def _push(self, t: float, kind: str, data: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self.heap, _Ev(t, self._seq, kind, data))

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self.cfg.seed}-{self._ids:07d}"

    def _ts(self, t: float) -> datetime:
        return datetime.fromtimestamp(round(t, 3), UTC)

    def _emit(self, family: str, event: EventBase) -> None:
        self.out.append((family, event))

    def _incident(self, kind: str, queue: str | None, t: float) -> Incident | None:
        for inc in self.cfg.incidents:
            in_time = inc.kind == kind and inc.start.timestamp() <= t < inc.end.timestamp()
            if in_time and (inc.queue is None or queue is None or inc.queue == queue):
                return inc
        return None

    def _customer(self) -> tuple[str, str]:
        n = int(self.rng.paretovariate(1.2)) % self.cfg.customers
        return f"cust-{n:06d}", f"+1 555 {n:03d} {n * 7 % 10000:04d}"

    # -- agents ----------------------------------------------------------------------------------
    def _set_free(self, agent: str, free: bool) -> None:
        """Mark an agent free or not, in each of its queues' sorted free lists too."""
        if self.free.get(agent, False) != free:
            for name in self.skills[agent]:
                agents = self.free_in[name]
                if free:
                    insort(agents, agent)
                else:
                    del agents[bisect_left(agents, agent)]
        self.free[agent] = free

    def _agent_state(self, agent: str, state: AgentState, t: float, reason: str | None = None) -> None:
        self._emit(
            "agents",
            AgentStateEvent(
                event_id=self._id("as"),
                ts=self._ts(t),
                agent_id=agent,
                state=state,
                queues=self.skills[agent],
                reason=reason,
            ),
        )

    def _setup_agents(self) -> None:
        for i, agent in enumerate(self.skills):
            login = self.t0 + self.rng.uniform(0, 600)
            self._push(login, "login", agent)
            # a 15-minute break every ~3 hours, staggered over the team as a WFM plan does
            t = login + (i + self.rng.random()) / len(self.skills) * 3 * 3600
            while t < self.t1 - 900:
                self._push(t, "break", agent)
                t += 3 * 3600 + self.rng.uniform(-900, 900)

    # -- arrivals --------------------------------------------------------------------------------
    def _setup_arrivals(self) -> None:
        for q in self.cfg.queues:
            lam_max = q.rate_per_hour / 3600 * 3.0  # bound for thinning (surges up to 3x)
            t = self.t0
            while True:
                t += self.rng.expovariate(lam_max)
                if t >= self.t1:
                    break
                dt = datetime.fromtimestamp(t, UTC)
                lam = q.rate_per_hour / 3600 * intraday_profile(dt.hour + dt.minute / 60, dt.weekday())
                surge = self._incident("surge", q.name, t)
                if surge:
                    lam *= surge.factor
                if self._incident("outage", q.name, t):
                    lam = 0.0
                if self.rng.random() < lam / lam_max:
                    self._push(t, "arrive", q.name)
        t = self.t0
        while True:
            t += self.rng.expovariate(self.cfg.ticket_rate_per_hour / 3600)
            if t >= self.t1:
                break
            self._ticket(t)

    # -- tickets (independent of the call floor) -------------------------------------------------
    def _ticket(self, t: float) -> None:
        rng = self.rng
        tid = self._id("tk")
        cust, _ = self._customer()
        category = rng.choice(["billing", "delivery", "account", "technical"])
        priority = rng.choice(["low", "normal", "normal", "high", "urgent"])
        sla_h = {"low": 48, "normal": 24, "high": 8, "urgent": 4}[priority]
        channel = rng.choice([Channel.email, Channel.email, Channel.social, Channel.chat])
        team = {"billing": "billing", "delivery": "logistics", "account": "billing", "technical": "tech"}[category]
        base: dict[str, Any] = dict(
            ticket_id=tid,
            created_at=self._ts(t),
            category=category,
            priority=Priority(priority),
            sla_due=self._ts(t + sla_h * 3600),
            channel=channel,
            team=team,
            business_type="retail" if team != "logistics" else "business",
        )

        def ev(kind: TicketEventKind, at: float, **kw: Any) -> None:
            self._emit("tickets", TicketEvent(event_id=self._id("te"), ts=self._ts(at), kind=kind, **base, **kw))

        ev(TicketEventKind.created, t, customer_id=cust)
        fr = t + rng.lognormvariate(math.log(1800), 0.9)
        ev(TicketEventKind.first_response, fr, agent_id=rng.choice(list(self.skills)))
        # triaged by priority: resolved in about a fifth of the SLA, a few percent breach it
        res = fr + rng.lognormvariate(math.log(sla_h * 3600 / 5), 0.8)
        ev(TicketEventKind.resolved, res)
        if rng.random() < 0.08:
            ro = res + rng.uniform(600, 7200)
            ev(TicketEventKind.reopened, ro)
            res = ro + rng.lognormvariate(math.log(3600), 0.8)
            ev(TicketEventKind.resolved, res)
        ev(TicketEventKind.closed, res + rng.uniform(60, 3600))

    # -- the call floor --------------------------------------------------------------------------
    def _call(self, kind: CallEventKind, c: dict[str, Any], t: float, **kw: Any) -> None:
        q = self.qspec[c["queue"]]
        self._emit(
            "calls",
            CallEvent(
                event_id=self._id("ce"),
                ts=self._ts(t),
                kind=kind,
                contact_id=c["id"],
                queue=q.name,
                channel=q.channel,
                business_type=q.business_type,
                customer_id=c["customer"],
                caller_number=c["phone"],
                source_system="simulator",
                **kw,
            ),
        )

    def _dispatch(self, t: float) -> None:
        """Give waiting contacts (longest waiting first) to free skilled agents."""
        while True:
            best = None
            for qname, line in self.waiting.items():
                if line and (best is None or line[0]["t"] < best[0]["t"]):
                    best = (line[0], qname)
            if best is None:
                return
            contact, qname = best
            if not self.free_in[qname]:
                # try other queues whose head has a free agent
                progressed = False
                for qn, line in self.waiting.items():
                    if line and self.free_in[qn]:
                        self._answer(line[0], qn, t)
                        progressed = True
                        break
                if not progressed:
                    return
                continue
            self._answer(contact, qname, t)

    def _answer(self, c: dict[str, Any], qname: str, t: float) -> None:
        rng = self.rng
        self.waiting[qname].remove(c)
        agent = rng.choice(self.free_in[qname])
        if rng.random() < self.cfg.rona_prob:
            self._call(CallEventKind.ring_no_answer, c, t + 0.5, agent_id=agent, ring_seconds=15.0)
            t += 15.0
        c["answered"] = True
        wait = t - c["t"]
        self._set_free(agent, False)
        self._agent_state(agent, AgentState.busy, t)
        self._call(CallEventKind.answered, c, t, agent_id=agent, wait_seconds=round(wait, 3), ring_seconds=2.0)
        spec = self.qspec[qname]
        sigma = 0.6
        talk = rng.lognormvariate(math.log(spec.aht_s) - sigma**2 / 2, sigma)
        hold = rng.uniform(10, 90) if rng.random() < 0.2 else 0.0
        acw = rng.expovariate(1 / self.cfg.acw_mean_s)
        end_talk = t + talk + hold
        if hold:
            self._call(CallEventKind.hold_started, c, t + talk / 2, agent_id=agent)
            self._call(CallEventKind.hold_ended, c, t + talk / 2 + hold, agent_id=agent)
        if rng.random() < self.cfg.transfer_prob:
            self._call(
                CallEventKind.transferred, c, end_talk, agent_id=agent, transfer_target=rng.choice(list(self.qspec))
            )
        self._push(end_talk, "talk_end", (agent, c, wait, talk, hold, acw))

    def run(self) -> list[tuple[str, EventBase]]:
        self._setup_agents()
        self._setup_arrivals()
        rng = self.rng
        while self.heap:
            ev = heapq.heappop(self.heap)
            t = ev.t
            if ev.kind == "login":
                agent = ev.data
                self._agent_state(agent, AgentState.logged_in, t)
                self._agent_state(agent, AgentState.ready, t + 5)
                self._push(t + 5, "ready", agent)
            elif ev.kind == "ready":
                agent = ev.data
                if (
                    self._incident("staffing_drop", None, t)
                    and rng.random() > self._incident("staffing_drop", None, t).factor
                ):  # type: ignore[union-attr]
                    self._agent_state(agent, AgentState.not_ready, t, reason="unplanned")
                    self._push(t + 600, "back", agent)
                    continue
                self._set_free(agent, True)
                self._dispatch(t)
            elif ev.kind == "back":
                self._agent_state(ev.data, AgentState.ready, t)
                self._push(t, "ready", ev.data)
            elif ev.kind == "break":
                agent = ev.data
                if self.free.get(agent):
                    self._set_free(agent, False)
                    self._agent_state(agent, AgentState.not_ready, t, reason="break")
                    self._push(t + 900, "back", agent)
                elif t + 120 < self.t1 - 900:
                    self._push(t + 120, "break", agent)  # finish the call first
            elif ev.kind == "arrive":
                cust, phone = self._customer()
                c = {
                    "id": self._id("ct"),
                    "queue": ev.data,
                    "t": t,
                    "customer": cust,
                    "phone": phone,
                    "answered": False,
                }
                self._call(CallEventKind.offered, c, t, queue_position=len(self.waiting[ev.data]))
                self.waiting[ev.data].append(c)
                self._push(t + rng.expovariate(1 / self.cfg.patience_mean_s), "patience", c)
                self._dispatch(t)
            elif ev.kind == "patience":
                c = ev.data
                if not c["answered"] and c in self.waiting[c["queue"]]:
                    self.waiting[c["queue"]].remove(c)
                    self._call(CallEventKind.abandoned, c, t, wait_seconds=round(t - c["t"], 3), hangup_by="customer")
            elif ev.kind == "talk_end":
                agent, c, wait, talk, hold, acw = ev.data
                self._agent_state(agent, AgentState.after_call_work, t)
                self._push(t + acw, "acw_end", ev.data)
            elif ev.kind == "acw_end":
                agent, c, wait, talk, hold, acw = ev.data
                self._call(
                    CallEventKind.ended,
                    c,
                    t,
                    agent_id=agent,
                    talk_seconds=round(talk, 3),
                    hold_seconds=round(hold, 3),
                    acw_seconds=round(acw, 3),
                )
                if rng.random() < self.cfg.survey_prob:
                    self._survey(c, agent, wait, t)
                if t < self.t1:
                    self._agent_state(agent, AgentState.ready, t)
                    self._push(t, "ready", agent)
                else:
                    self._agent_state(agent, AgentState.logged_out, t)
        # the period is a snapshot: tickets still open at its end stay open (the backlog)
        self.out = [fe for fe in self.out if fe[1].ts.timestamp() < self.t1]
        self.out.sort(key=lambda fe: fe[1].ts)
        return self.out

    def _survey(self, c: dict[str, Any], agent: str, wait: float, t: float) -> None:
        rng = self.rng
        # CSAT falls with the wait: mean 4.6 at no wait, about 3 at 5 minutes, floor 1
        mean = max(1.2, 4.6 - wait / 180)
        csat = int(min(5, max(1, round(rng.gauss(mean, 0.7)))))
        nps = int(min(10, max(0, round(rng.gauss(mean * 2 - 0.5, 1.5)))))
        ces = int(min(7, max(1, round(rng.gauss(8 - mean * 1.3, 1.0)))))
        q = self.qspec[c["queue"]]
        comment = rng.choice([None, None, "quick and helpful", f"call me at {c['phone']}", "waited too long"])
        self._emit(
            "surveys",
            SurveyEvent(
                event_id=self._id("sv"),
                ts=self._ts(t + rng.uniform(30, 900)),
                survey_id=self._id("s"),
                contact_id=c["id"],
                queue=q.name,
                channel=q.channel,
                business_type=q.business_type,
                agent_id=agent,
                customer_id=c["customer"],
                csat=csat,
                nps=nps,
                ces=ces,
                comment=comment,
            ),
        )


def simulate(cfg: SimConfig) -> list[tuple[str, EventBase]]:
    """All events of the simulated period, sorted by event time."""
    return Simulator(cfg).run()


def disorder(
    events: list[tuple[str, EventBase]],
    seed: int,
    shuffle_s: float = 30.0,
    duplicate_rate: float = 0.01,
    late_rate: float = 0.002,
    late_by_s: float = 1800.0,
) -> list[tuple[str, EventBase]]:
    """Arrival order as a real pipeline sees it: events delayed by up to ``shuffle_s`` (out of
    order but within grace when ``shuffle_s`` < grace), some duplicated (same event_id), some
    held back ``late_by_s`` (beyond grace: they must come out as late)."""
    rng = random.Random(seed)
    keyed: list[tuple[float, int, tuple[str, EventBase]]] = []
    for i, fe in enumerate(events):
        t = fe[1].ts.timestamp()
        arrival = t + late_by_s if rng.random() < late_rate else t + rng.uniform(0, shuffle_s)
        keyed.append((arrival, i, fe))
        if rng.random() < duplicate_rate:
            keyed.append((arrival + rng.uniform(0, shuffle_s), i, fe))
    keyed.sort(key=lambda x: (x[0], x[1]))
    return [fe for _, _, fe in keyed]
