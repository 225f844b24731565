"""JSONL files of callpulse events: one event per line, in arrival order.

A line is an event object (its family is recognised from its fields), or
``{"topic": "calls", "event": {...}}`` to say the family outright, or
``{"watermark": "2026-11-02T12:00:00Z"}``: a watermark for every partition of every topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas.codec import describe, family_of_item, read_watermark, reason_for, unexpected
from schemas.events import MODEL_BY_FAMILY, EventBase
from schemas.records import DeadLetterReason


@dataclass
class Line:
    number: int
    family: str | None = None
    event: EventBase | None = None
    watermark: float | None = None
    reason: DeadLetterReason | None = None
    error: str | None = None
    raw: bytes = b""


def parse_line(number: int, raw: bytes, family: str | None = None) -> Line:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Line(number, family, reason=DeadLetterReason.malformed_json, error=str(exc), raw=raw)
    if not isinstance(item, dict):
        return Line(number, family, reason=DeadLetterReason.not_an_object, error="line is not a JSON object", raw=raw)
    if "watermark" in item and "event_id" not in item:
        ts, reason, why = read_watermark(str(item["watermark"]))
        if ts is None:
            return Line(number, family, reason=reason, error=f"watermark: {why}", raw=raw)
        return Line(number, watermark=ts, raw=raw)
    if "event" in item and "topic" in item:
        family = str(item["topic"]).removeprefix("cc.")
        item = item["event"]
        raw = orjson.dumps(item)
    family = family or family_of_item(item)
    if family not in MODEL_BY_FAMILY:
        return Line(number, family, reason=DeadLetterReason.invalid_enum, error=f"unknown topic {family!r}", raw=raw)
    try:
        event = MODEL_BY_FAMILY[family].model_validate_json(raw)
    except ValidationError as exc:
        return Line(number, family, reason=reason_for(exc), error=describe(exc), raw=raw)
    except Exception as exc:  # as the worker's decoder: one line never stops a replay
        bad = unexpected(raw, None, exc)
        return Line(number, family, reason=bad.reason, error=bad.error, raw=raw)
    return Line(number, family, event=event, raw=raw)


def read_jsonl(path: Path, family: str | None = None) -> Iterator[Line]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield parse_line(number, raw.strip(), family)


def write_jsonl(path: Path, items: list[tuple[str, EventBase]], wrap: bool = False) -> None:
    with open(path, "wb") as fh:
        for family, event in items:
            body = event.model_dump_json().encode()
            if wrap:
                body = b'{"topic":"' + family.encode() + b'","event":' + body + b"}"
            fh.write(body + b"\n")
