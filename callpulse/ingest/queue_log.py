"""Asterisk queue_log -> callpulse events (pure: lines in, events or rejects out).

Three input shapes, recognised from the first line (``detect_format``):

* ``native``: the file Asterisk writes, ``epoch|callid|queue|agent|event|data1|data2|...``;
* ``realtime``: a database export with columns ``time, callid, queuename, agent, event`` and
  either ``data1..data5`` or ``data`` (a pipe string); ``time`` is an epoch or ``%F %T[.%f]``
  in the zone given (Asterisk writes local time unless ``queue_log_realtime_use_gmt``);
* ``pbxware``: Bicom PBXware's export, ``uid, date_time, callid, queue_name, type, event,
  param1..3, entpos, expos, htime, ttime, time``, with the data fields already split (hold,
  talk and ring times in their own columns).

Every shape is normalised to a ``QueueLogLine`` with Asterisk's native data fields, then mapped
line by line (no cross-line state, so out-of-order lines cannot confuse it) to call and agent
events; the full mapping, per event, is in ``docs/ingest.md``. Traps handled: RINGNOANSWER's
ring time is in milliseconds (CONNECT's in seconds); EXITWITHKEY is not an abandon in Asterisk's
own counters (callpulse counts every queue exit without an agent as ``abandoned`` and the
summary reports EXITWITHKEY apart); membership lines name the agent ``Local/1127@ctx`` where call
lines say ``Agent/1127`` (both become ``1127``); calls with ENTERQUEUE and no terminal event are
closed out by the engine as orphans after ``CALLPULSE_ORPHAN_TIMEOUT_S``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from schemas.events import AgentState, AgentStateEvent, CallEvent, CallEventKind, Channel, EventBase

# Events callpulse maps, and those it reads and deliberately ignores (counted in the summary).
CALL_END = {"COMPLETEAGENT": "agent", "COMPLETECALLER": "customer"}
QUEUE_EXITS = {"ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY", "WITHDRAW", "AGENTDUMP", "SYSCOMPAT"}
TRANSFERS = {"TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER"}
AGENT_EVENTS = {
    "ADDMEMBER", "REMOVEMEMBER", "PAUSE", "UNPAUSE", "PAUSEALL", "UNPAUSEALL",
    "AGENTLOGIN", "AGENTLOGOFF", "AGENTCALLBACKLOGIN", "AGENTCALLBACKLOGOFF",
}  # fmt: skip
IGNORED = {
    "QUEUESTART", "CONFIGRELOAD", "RINGCANCELED", "PENALTY", "RINGINUSE", "DID", "INFO", "OUTCALL",
    "FULL", "JOINEMPTY", "JOINUNAVAIL", "PAUSEREASON", "CALLSTATUS", "CALLOUTBOUND",
    # PBXware's outbound agent calls
    "OUTDIAL", "OUTANSWER", "OUTCANCEL", "OUTCHANUNAVAIL", "OUTCONGESTION", "OUTTRANSFER", "OUTBUSY", "OUTNOANSWER",
}  # fmt: skip
KNOWN = {"ENTERQUEUE", "CONNECT", "RINGNOANSWER", *CALL_END, *QUEUE_EXITS, *TRANSFERS, *AGENT_EVENTS, *IGNORED}


@dataclass(frozen=True)
class QueueLogLine:
    number: int  # line number in the file (1-based, header included)
    raw: str
    ts: float
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]
    uid: str | None = None


@dataclass
class Rejected:
    number: int
    raw: str
    reason: str
    error: str


@dataclass
class Ignored:
    """A valid line whose event has no callpulse meaning (counted, not rejected)."""

    number: int
    event: str


@dataclass
class Mapped:
    events: list[tuple[str, EventBase]] = field(default_factory=list)
    ignored: str | None = None  # event name of a known line without a callpulse meaning


class LineError(ValueError):
    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason


# -- reading ------------------------------------------------------------------------------------
def detect_format(first_line: str) -> str:
    head = first_line.strip().lower()
    if re.match(r"^\d+(\.\d+)?\|", head):
        return "native"
    cols = [c.strip() for c in next(csv.reader([head]))]
    if {"param1", "htime", "ttime"} <= set(cols):
        return "pbxware"
    if "event" in cols and ("callid" in cols or "call_id" in cols):
        return "realtime"
    raise LineError("unknown_format", f"not a queue_log header or line: {first_line[:80]!r}")


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise LineError("not_a_number", f"{what} is not a number: {value!r}") from exc


#: The epoch seconds an event's datetime can hold (years 1-9999 in UTC, a day's margin).
_EPOCH_RANGE = (datetime(1, 1, 2, tzinfo=UTC).timestamp(), datetime(9999, 12, 30, tzinfo=UTC).timestamp())


def _epoch(ts: float, value: str) -> float:
    """``ts``, or a rejected line when no event can carry it (it would stop the ingest later)."""
    if not _EPOCH_RANGE[0] <= ts <= _EPOCH_RANGE[1]:  # NaN too
        raise LineError("bad_time", f"time {value!r} is outside years 1-9999")
    return ts


def _time(value: str, tz: ZoneInfo) -> float:
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return _epoch(float(value), value)
    try:
        t = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError as exc:
        raise LineError("bad_time", f"unreadable time {value!r}") from exc
    return _epoch((t if t.tzinfo else t.replace(tzinfo=tz)).timestamp(), value)


def parse(lines: Iterable[str], fmt: str | None = None, tz: str = "UTC") -> Iterator[QueueLogLine | Rejected]:
    """Lines of a queue_log file or export -> normalised lines or rejects (never raises)."""
    zone = ZoneInfo(tz)
    it = iter(lines)
    header: list[str] | None = None
    number = 0
    for raw in it:
        number += 1
        text = raw.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            if fmt is None:
                fmt = detect_format(text)
                if fmt != "native":
                    header = [c.strip().lower() for c in next(csv.reader([text]))]
                    continue
            if fmt == "native":
                yield _native(number, text)
            else:
                if header is None:
                    header = [c.strip().lower() for c in next(csv.reader([text]))]
                    continue
                row = next(csv.reader([text]))
                if len(row) != len(header):
                    raise LineError("wrong_field_count", f"{len(row)} fields where the header has {len(header)}")
                rec = dict(zip(header, row, strict=True))
                yield _pbxware(number, text, rec, zone) if fmt == "pbxware" else _realtime(number, text, rec, zone)
        except LineError as exc:
            yield Rejected(number, text, exc.reason, str(exc))
        except Exception as exc:  # a line must never stop the ingest
            yield Rejected(number, text, "unreadable", f"{type(exc).__name__}: {exc}")


def _native(number: int, text: str) -> QueueLogLine:
    parts = text.split("|")
    if len(parts) < 5:
        raise LineError(
            "wrong_field_count", f"{len(parts)} fields, at least 5 expected (epoch|callid|queue|agent|event)"
        )
    ts = _epoch(_float(parts[0], "epoch"), parts[0])
    return QueueLogLine(number, text, ts, parts[1], parts[2], parts[3], parts[4], tuple(parts[5:]))


def _realtime(number: int, text: str, rec: dict[str, str], tz: ZoneInfo) -> QueueLogLine:
    if "data" in rec and "data1" not in rec:
        data = tuple(rec["data"].split("|")) if rec["data"] else ()
    else:
        data = tuple(rec.get(f"data{i}", "") for i in range(1, 6))
    return QueueLogLine(
        number,
        text,
        _time(rec.get("time") or rec.get("time_id") or "", tz),
        rec.get("callid") or rec.get("call_id") or "",
        rec.get("queuename") or rec.get("queue") or "",
        rec.get("agent", ""),
        rec.get("event") or rec.get("verb") or "",
        data,
    )


def _pbxware(number: int, text: str, rec: dict[str, str], tz: ZoneInfo) -> QueueLogLine:
    """Rebuild Asterisk's native data fields from PBXware's split columns."""
    event = rec["event"].strip().upper()
    p1, p2, p3 = rec["param1"], rec["param2"], rec["param3"]
    ent, ex, h, t = rec["entpos"], rec["expos"], rec["htime"], rec["ttime"]
    if event == "ENTERQUEUE":
        data: tuple[str, ...] = ("", p1, ent)
    elif event == "CONNECT":
        data = (h, p2, p3)
    elif event in CALL_END:
        data = (h, t, ent)
    elif event in QUEUE_EXITS - {"EXITWITHKEY"}:
        data = (ex, ent, h)
    elif event == "EXITWITHKEY":
        data = (p2, ex, ent, h)
    elif event in TRANSFERS:
        data = (p2, p3, h, t, ent)
    elif event == "RINGNOANSWER":
        data = (h,)
    else:
        data = (p1, p2, p3)
    ts = _time(rec.get("date_time") or rec.get("time") or "", tz)
    return QueueLogLine(number, text, ts, rec["callid"], rec["queue_name"], rec["type"], event, data, rec.get("uid"))


# -- mapping ------------------------------------------------------------------------------------
def agent_id(member: str) -> str | None:
    """``Agent/1127``, ``Local/1127@callback-agent``, ``PJSIP/1127`` -> ``1127``."""
    if not member or member.upper() == "NONE":
        return None
    name = re.sub(r"^(Agent|Local|SIP|PJSIP|IAX2|DAHDI)/", "", member.strip(), flags=re.I)
    return name.split("@", 1)[0] or None


def _num(data: tuple[str, ...], i: int, what: str) -> float:
    if i >= len(data) or data[i].strip() == "":
        raise LineError("missing_field", f"{what} (data{i + 1}) is missing")
    v = _float(data[i], what)
    if v < 0:
        raise LineError("out_of_range", f"{what} is negative: {v}")
    return v


class QueueLogMapper:
    """Normalised lines -> callpulse events. Keeps only agents' queue membership (to say which
    queues an agent state applies to); calls need no state."""

    def __init__(
        self, channel: Channel = Channel.phone, business_type: str = "default", source: str = "asterisk"
    ) -> None:
        self.channel = channel
        self.business_type = business_type
        self.source = source
        self.membership: dict[str, set[str]] = {}
        self.mapped: Counter[str] = Counter()  # lines mapped, by queue_log event

    def map(self, line: QueueLogLine) -> Mapped:
        event = line.event.strip().upper()
        if event not in KNOWN:
            raise LineError("unknown_event", f"unknown queue_log event {line.event!r}")
        if event in IGNORED:
            return Mapped(ignored=event)
        try:
            out = Mapped(self._agent(line, event) if event in AGENT_EVENTS else self._call(line, event))
            self.mapped[event] += 1
            return out
        except ValidationError as exc:
            err = exc.errors()[0]
            raise LineError("invalid_value", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from exc

    def _id(self, line: QueueLogLine, suffix: str = "") -> str:
        base = line.uid or hashlib.sha1(line.raw.encode()).hexdigest()[:16]
        return f"ql-{base}{suffix}"

    def _call(self, line: QueueLogLine, event: str) -> list[tuple[str, EventBase]]:
        if not line.callid or line.callid.upper() == "NONE" or not line.queue or line.queue.upper() == "NONE":
            raise LineError("missing_field", f"{event} without callid or queue")
        ts = datetime.fromtimestamp(line.ts, UTC)
        base: dict[str, Any] = {
            "ts": ts,
            "contact_id": f"{line.callid}@{line.queue}",
            "queue": line.queue,
            "channel": self.channel,
            "business_type": self.business_type,
            "source_system": self.source,
        }
        agent = agent_id(line.agent)
        d = line.data
        out: list[tuple[str, EventBase]] = []

        def call(kind: CallEventKind, suffix: str = "", **fields: Any) -> None:
            out.append(("calls", CallEvent(event_id=self._id(line, suffix), kind=kind, **base, **fields)))

        def agent_now(state: AgentState) -> None:
            if agent:
                out.append(("agents", self._state(line, agent, state, "-a")))

        if event == "ENTERQUEUE":
            caller = d[1].strip() if len(d) > 1 and d[1].strip() not in ("", "unknown") else None
            pos = int(_num(d, 2, "position")) if len(d) > 2 and d[2].strip() else None
            call(CallEventKind.offered, caller_number=caller, queue_position=pos)
        elif event == "CONNECT":
            ring = _num(d, 2, "ringtime") if len(d) > 2 and d[2].strip() else None
            call(
                CallEventKind.answered,
                agent_id=agent or "unknown",
                wait_seconds=_num(d, 0, "holdtime"),
                ring_seconds=ring,
            )
            agent_now(AgentState.busy)
        elif event in CALL_END:
            call(CallEventKind.ended, agent_id=agent, talk_seconds=_num(d, 1, "calltime"), hangup_by=CALL_END[event])
            agent_now(AgentState.ready)
        elif event in QUEUE_EXITS:
            i = 3 if event == "EXITWITHKEY" else 2
            wait = _num(d, i, "waittime") if event not in ("AGENTDUMP", "SYSCOMPAT") else 0.0
            by = "customer" if event in ("ABANDON", "EXITWITHKEY", "AGENTDUMP") else "system"
            call(CallEventKind.abandoned, wait_seconds=wait, hangup_by=by)
        elif event in TRANSFERS:
            talk = _num(d, 3, "calltime")
            target = d[0].strip() if d and d[0].strip() else None
            target = re.sub(r"[^A-Za-z0-9_.:\-/ ]", "_", target)[:64] if target else None
            call(CallEventKind.transferred, "-t", agent_id=agent, transfer_target=target)
            call(CallEventKind.ended, agent_id=agent, talk_seconds=talk, hangup_by="agent")
            agent_now(AgentState.ready)
        elif event == "RINGNOANSWER":
            ring_ms = _num(d, 0, "ringtime (ms)")
            call(CallEventKind.ring_no_answer, agent_id=agent or "unknown", ring_seconds=ring_ms / 1000.0)
        return out

    def _state(
        self, line: QueueLogLine, agent: str, state: AgentState, suffix: str = "", reason: str | None = None
    ) -> AgentStateEvent:
        return AgentStateEvent(
            event_id=self._id(line, suffix),
            ts=datetime.fromtimestamp(line.ts, UTC),
            agent_id=agent,
            state=state,
            queues=sorted(self.membership.get(agent, ())),
            reason=reason,
        )

    def _agent(self, line: QueueLogLine, event: str) -> list[tuple[str, EventBase]]:
        agent = agent_id(line.agent)
        if agent is None:
            raise LineError("missing_field", f"{event} without an agent")
        queues = self.membership.setdefault(agent, set())
        queue = line.queue if line.queue and line.queue.upper() != "NONE" else None
        reason = (line.data[0].strip() or None) if line.data else None
        if event == "ADDMEMBER":
            if queue:
                queues.add(queue)
            paused = bool(line.data) and line.data[0].strip().upper() == "PAUSED"
            return [("agents", self._state(line, agent, AgentState.not_ready if paused else AgentState.ready))]
        if event == "REMOVEMEMBER":
            if queue:
                queues.discard(queue)
            state = AgentState.ready if queues else AgentState.logged_out
            return [("agents", self._state(line, agent, state))]
        if event in ("PAUSE", "PAUSEALL"):
            return [("agents", self._state(line, agent, AgentState.not_ready, reason=reason))]
        if event in ("UNPAUSE", "UNPAUSEALL"):
            return [("agents", self._state(line, agent, AgentState.ready))]
        if event in ("AGENTLOGIN", "AGENTCALLBACKLOGIN"):
            return [("agents", self._state(line, agent, AgentState.logged_in))]
        self.membership.pop(agent, None)  # AGENTLOGOFF, AGENTCALLBACKLOGOFF
        return [("agents", self._state(line, agent, AgentState.logged_out))]


def convert(
    lines: Iterable[str], mapper: QueueLogMapper, fmt: str | None = None, tz: str = "UTC"
) -> Iterator[tuple[str, EventBase] | Rejected | Ignored]:
    """Lines -> events, rejects and ignored lines, in line order."""
    for item in parse(lines, fmt, tz):
        if isinstance(item, Rejected):
            yield item
            continue
        try:
            mapped = mapper.map(item)
        except LineError as exc:
            yield Rejected(item.number, item.raw, exc.reason, str(exc))
            continue
        except Exception as exc:  # as in ``parse``: a line must never stop the ingest
            yield Rejected(item.number, item.raw, "unreadable", f"{type(exc).__name__}: {exc}")
            continue
        if mapped.ignored:
            yield Ignored(item.number, mapped.ignored)
        yield from mapped.events
