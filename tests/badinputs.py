"""A corpus of bad inputs, each with the dead-letter reason it must get."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

T0 = "2026-11-02T10:00:00Z"


def call(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "bad-1",
        "ts": T0,
        "kind": "offered",
        "contact_id": "c-bad",
        "queue": "dlq-test",
        "channel": "phone",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def survey(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "bad-s", "ts": T0, "survey_id": "s-1", "contact_id": "c-1", "csat": 4}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def ticket(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "bad-t",
        "ts": T0,
        "kind": "created",
        "ticket_id": "t-1",
        "created_at": T0,
        "category": "billing",
        "channel": "email",
        "team": "billing",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def agent(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "bad-a", "ts": T0, "agent_id": "a-1", "state": "ready", "queues": ["x"]}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def j(obj: object) -> bytes:
    return orjson.dumps(obj)


FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()

#: (name, family, raw value, expected reason)
CORPUS: list[tuple[str, str, bytes, str]] = [
    ("truncated json", "calls", b'{"event_id": "x", "ts": ', "malformed_json"),
    ("truncated envelope", "calls", b'[{"event_id": "x"}, ', "malformed_json"),
    ("json string", "calls", b'"just a string"', "not_an_object"),
    ("json number", "calls", b"42", "not_an_object"),
    ("empty value", "calls", b"", "empty_record"),
    ("missing event_id", "calls", j(call(event_id=...)), "missing_field"),
    ("missing queue", "calls", j(call(queue=...)), "missing_field"),
    ("typo field", "calls", j(call(quue="x")), "unknown_field"),
    ("wait as string", "calls", j(call(kind="answered", agent_id="a", wait_seconds="12")), "wrong_type"),
    ("unknown channel", "calls", j(call(channel="fax")), "invalid_enum"),
    ("unknown kind", "calls", j(call(kind="exploded")), "invalid_enum"),
    ("naive timestamp", "calls", j(call(ts="2026-11-02T10:00:00")), "naive_timestamp"),
    ("timestamp in the future", "calls", j(call(ts=FUTURE)), "future_timestamp"),
    ("schema version 2", "calls", j(call(schema_version=2)), "unsupported_schema_version"),
    ("negative wait", "calls", j(call(kind="abandoned", wait_seconds=-5)), "out_of_range"),
    ("answered without wait", "calls", j(call(kind="answered", agent_id="a")), "invalid_value"),
    ("not a date", "calls", j(call(ts="yesterday")), "wrong_type"),
    ("ts before year 1 in UTC", "agents", j(agent(ts="0001-01-01T00:00:00+02:00")), "out_of_range"),
    ("ts at epoch 0 (a clock never set)", "calls", j(call(ts="1970-01-01T00:00:00Z")), "out_of_range"),
    ("ts just before 1990", "tickets", j(ticket(ts="1990-01-01T00:59:59+01:00")), "out_of_range"),
    ("ts after year 9999 in UTC", "calls", j(call(ts="9999-12-31T23:00:00-02:00")), "out_of_range"),
    ("sla_due after year 9999 in UTC", "tickets", j(ticket(sla_due="9999-12-31T23:30:00-01:00")), "out_of_range"),
    ("empty event_id", "calls", j(call(event_id="")), "out_of_range"),
    ("csat 6", "surveys", j(survey(csat=6)), "out_of_range"),
    ("nps -1", "surveys", j(survey(csat=..., nps=-1)), "out_of_range"),
    ("survey without scores", "surveys", j(survey(csat=...)), "invalid_value"),
    ("survey rating nothing", "surveys", j(survey(contact_id=...)), "invalid_value"),
    ("ticket created after ts", "tickets", j(ticket(created_at="2026-11-02T11:00:00Z")), "invalid_value"),
    ("unknown priority", "tickets", j(ticket(priority="p1")), "invalid_enum"),
    ("unknown agent state", "agents", j(agent(state="sleeping")), "invalid_enum"),
    ("queues not a list", "agents", j(agent(queues="x")), "wrong_type"),
]
