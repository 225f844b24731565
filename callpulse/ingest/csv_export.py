"""CSV exports of other systems -> callpulse events, driven by a mapping file (pure).

A mapping (YAML, validated here) names the export's kind, which CSV column holds which field,
how times are written and in which zone, and defaults for what the export lacks. Two kinds:

* ``call_detail``: one row per call (id, start, queue, channel, agent, answered flag, wait,
  talk, optional satisfaction) -> ``offered``, then ``answered`` + ``ended`` or ``abandoned``,
  and a survey when a satisfaction is given;
* ``contact_record``: one row per non-voice contact (date, channel, first-response minutes,
  satisfaction 1-5, issue type, agent, remark) -> a ticket ``created`` and ``first_response``,
  and a survey rating it with the remark as its comment (scrubbed before any sink).

Shipped mappings: ``callpulse/ingest/mappings/*.yml``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from callpulse.ingest.queue_log import Rejected
from schemas.events import (
    CallEvent,
    CallEventKind,
    Channel,
    EventBase,
    SurveyEvent,
    TicketEvent,
    TicketEventKind,
)

MAPPINGS = Path(__file__).parent / "mappings"
TRUE = {"y", "yes", "true", "1", "answered", "t"}


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["call_detail", "contact_record"]
    timezone: str = "UTC"
    date_formats: list[str] = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
    columns: dict[str, str]  # callpulse field -> CSV column
    defaults: dict[str, str] = {}
    source: str = "csv"

    def column(self, row: dict[str, str], name: str) -> str | None:
        col = self.columns.get(name)
        value = row.get(col, "").strip() if col else ""
        return value or self.defaults.get(name)


def load_mapping(name_or_path: str) -> Mapping:
    path = Path(name_or_path)
    if not path.exists():
        path = MAPPINGS / f"{name_or_path}.yml"
    return Mapping.model_validate(yaml.safe_load(path.read_text()))


class RowError(ValueError):
    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason


def _when(m: Mapping, row: dict[str, str]) -> datetime:
    date = m.column(row, "date")
    if date is None:
        raise RowError("missing_field", "no date")
    clock = m.column(row, "time")
    text = f"{date} {clock}" if clock else date
    for fmt in m.date_formats:
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        try:
            return (t if t.tzinfo else t.replace(tzinfo=ZoneInfo(m.timezone))).astimezone(UTC)
        except OverflowError:
            raise RowError("bad_time", f"{text!r} is outside years 1-9999 in UTC") from None
    raise RowError("bad_time", f"{text!r} matches none of {m.date_formats}")


def _seconds(text: str | None, what: str) -> float | None:
    """``123``, ``12.5`` or ``H:MM:SS`` / ``MM:SS``."""
    if text is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}", text):
        total = 0.0
        for part in text.split(":"):
            total = total * 60 + int(part)
        return total
    raise RowError("not_a_number", f"{what} is not a duration: {text!r}")


def _name(text: str | None, default: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:\-/ ]", "_", text)[:64] if text else default


def convert_rows(
    rows: Iterable[tuple[int, dict[str, str], str] | Rejected], m: Mapping
) -> Iterator[tuple[str, EventBase] | Rejected]:
    """(line number, row, raw line) -> events or rejects."""
    for item in rows:
        if isinstance(item, Rejected):
            yield item
            continue
        number, row, raw = item
        try:
            yield from _call_detail(m, row) if m.kind == "call_detail" else _contact_record(m, row)
        except RowError as exc:
            yield Rejected(number, raw, exc.reason, str(exc))
        except ValidationError as exc:
            err = exc.errors()[0]
            yield Rejected(number, raw, "invalid_value", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
        except Exception as exc:  # as the queue_log reader: a row must never stop the ingest
            yield Rejected(number, raw, "unreadable", f"{type(exc).__name__}: {exc}")


def _rid(m: Mapping, row: dict[str, str]) -> str:
    rid = m.column(row, "id")
    return rid or hashlib.sha1(repr(sorted(row.items())).encode()).hexdigest()[:16]


def _channel(m: Mapping, row: dict[str, str], default: str) -> Channel:
    value = (m.column(row, "channel") or default).lower()
    try:
        return Channel(value)
    except ValueError as exc:
        raise RowError("invalid_enum", f"unknown channel {value!r}") from exc


def _csat(m: Mapping, row: dict[str, str]) -> int | None:
    text = m.column(row, "satisfaction")
    if text is None:
        return None
    if not re.fullmatch(r"\d+", text):
        raise RowError("not_a_number", f"satisfaction is not a number: {text!r}")
    return int(text)


def _survey(m: Mapping, row: dict[str, str], rid: str, ts: datetime, **rated: Any) -> list[tuple[str, EventBase]]:
    """The row's satisfaction rating, if any, as a survey one second after the contact."""
    csat = _csat(m, row)
    if csat is None:
        return []
    sid = f"{m.source}-{rid}"
    return [
        ("surveys", SurveyEvent(event_id=f"{sid}-s", ts=ts + timedelta(seconds=1), survey_id=sid, csat=csat, **rated))
    ]


def _call_detail(m: Mapping, row: dict[str, str]) -> list[tuple[str, EventBase]]:
    rid = _rid(m, row)
    start = _when(m, row)
    wait = _seconds(m.column(row, "wait_seconds"), "wait") or 0.0
    answered = (m.column(row, "answered") or "").lower() in TRUE
    base: dict[str, Any] = {
        "contact_id": f"{m.source}-{rid}",
        "queue": _name(m.column(row, "queue"), "default"),
        "channel": _channel(m, row, "phone"),
        "business_type": _name(m.column(row, "business_type"), "default"),
        "source_system": _name(m.source, "csv"),
    }

    def call(suffix: str, ts: datetime, kind: CallEventKind, **fields: Any) -> tuple[str, EventBase]:
        return ("calls", CallEvent(event_id=f"{m.source}-{rid}-{suffix}", ts=ts, kind=kind, **base, **fields))

    out = [call("o", start, CallEventKind.offered)]
    at = start + timedelta(seconds=wait)
    if not answered:
        return [*out, call("x", at, CallEventKind.abandoned, wait_seconds=wait)]
    talk = _seconds(m.column(row, "talk_seconds"), "talk") or 0.0
    who = m.column(row, "agent") or "unknown"
    end = at + timedelta(seconds=talk)
    out.append(call("a", at, CallEventKind.answered, agent_id=who, wait_seconds=wait))
    out.append(call("e", end, CallEventKind.ended, agent_id=who, talk_seconds=talk))
    rated = {"contact_id": base["contact_id"], "queue": base["queue"], "channel": base["channel"], "agent_id": who}
    return out + _survey(m, row, rid, end, **rated)


def _contact_record(m: Mapping, row: dict[str, str]) -> list[tuple[str, EventBase]]:
    rid = _rid(m, row)
    created = _when(m, row)
    minutes = _seconds(m.column(row, "first_response_minutes"), "first response")
    channel = _channel(m, row, "email")
    base: dict[str, Any] = {
        "ticket_id": f"{m.source}-{rid}",
        "created_at": created,
        "category": _name(m.column(row, "issue_type"), "general"),
        "channel": channel,
        "team": _name(m.column(row, "team"), "support"),
        "business_type": _name(m.column(row, "business_type"), "default"),
    }
    agent = m.column(row, "agent")
    out: list[tuple[str, EventBase]] = [
        ("tickets", TicketEvent(event_id=f"{m.source}-{rid}-c", ts=created, kind=TicketEventKind.created, **base))
    ]
    last = created
    if minutes is not None:
        last = created + timedelta(minutes=minutes)
        first = TicketEvent(
            event_id=f"{m.source}-{rid}-r", ts=last, kind=TicketEventKind.first_response, agent_id=agent, **base
        )
        out.append(("tickets", first))
    rated = {"ticket_id": base["ticket_id"], "channel": channel, "agent_id": agent, "comment": m.column(row, "remark")}
    return out + _survey(m, row, rid, last, **rated)


def read_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str], str] | Rejected]:
    """CSV lines (header first) -> (line number, row, raw) or a reject for a malformed row."""
    import csv

    reader = csv.reader(lines)
    header: list[str] | None = None
    for row in reader:
        number = reader.line_num
        raw = ",".join(row)
        if header is None:
            header = [c.strip() for c in row]
            continue
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield Rejected(number, raw, "wrong_field_count", f"{len(row)} fields where the header has {len(header)}")
            continue
        yield number, dict(zip(header, row, strict=True)), raw
