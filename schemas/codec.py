"""Decoding Kafka record values into validated events, in bulk.

A record value is either one event (a JSON object) or an *envelope*: a JSON array of events of
the topic's type, which lets producers amortise per-record costs over many events. A record
with the header ``callpulse.watermark`` (event time, ISO 8601 or epoch seconds) and an empty
value is a watermark: the producer's promise that this partition has no events older than that.

Anything that cannot be decoded becomes a ``BadInput`` carrying the original bytes and a reason
code; nothing is dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.events import MODEL_BY_FAMILY, EventBase
from schemas.records import DeadLetterReason

WATERMARK_HEADER = "callpulse.watermark"

_RANGE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_long",
    "too_short",
    "string_too_long",
    "string_too_short",
    "datetime_out_of_range",  # ours (schemas/events.py): a zone offset past year 1 or 9999
    "datetime_too_early",  # ours: an event time before 1990
}


@dataclass(slots=True)
class BadInput:
    """One undecodable record or envelope item."""

    raw: bytes
    index: int | None
    reason: DeadLetterReason
    error: str


def reason_for(exc: ValidationError) -> DeadLetterReason:
    """Map pydantic's first error to a dead-letter reason code."""
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], err["loc"]
    if kind == "json_invalid":
        return DeadLetterReason.malformed_json
    if kind == "missing":
        return DeadLetterReason.missing_field
    if kind == "extra_forbidden":
        return DeadLetterReason.unknown_field
    if kind == "literal_error" and loc and loc[-1] == "schema_version":
        return DeadLetterReason.unsupported_schema_version
    if kind in ("enum", "literal_error"):
        return DeadLetterReason.invalid_enum
    if kind in _RANGE_ERRORS:
        return DeadLetterReason.out_of_range
    if kind == "timezone_aware":
        return DeadLetterReason.naive_timestamp
    if kind in ("model_type", "model_attributes_type", "dict_type") and len(loc) <= 1:
        return DeadLetterReason.not_an_object
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return DeadLetterReason.wrong_type
    return DeadLetterReason.invalid_value


def unexpected(raw: bytes, index: int | None, exc: Exception) -> BadInput:
    """A record whose validation raised something other than a ``ValidationError`` (a validator's
    bug, such as the ``OverflowError`` a zone offset once raised): dead-lettered with the error,
    so no single input can stop a worker."""
    return BadInput(raw, index, DeadLetterReason.invalid_value, f"validation failed: {type(exc).__name__}: {exc}")


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "<record>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class EventDecoder:
    """Decodes one topic's record values. ``now`` is injected so tests and replays decide the
    future-timestamp rule reproducibly."""

    def __init__(self, family: str, max_future_skew_s: float) -> None:
        self.family = family
        self.model = MODEL_BY_FAMILY[family]
        self._many: TypeAdapter[list[Any]] = TypeAdapter(list[self.model])  # type: ignore[name-defined]
        self.max_future_skew_s = max_future_skew_s

    def decode(self, raw: bytes | None, now: float) -> tuple[list[EventBase], list[BadInput]]:
        if not raw or not raw.strip():
            return [], [BadInput(raw or b"", None, DeadLetterReason.empty_record, "record has no value")]
        envelope = raw.lstrip()[:1] == b"["
        try:
            events = self._many.validate_json(raw) if envelope else [self.model.model_validate_json(raw)]
        except ValidationError as exc:
            if not envelope:
                return [], [BadInput(raw, None, reason_for(exc), describe(exc))]
            return self._decode_items(raw, now)
        except Exception as exc:  # a validator's bug is this input's fault, not the worker's
            if not envelope:
                return [], [unexpected(raw, None, exc)]
            return self._decode_items(raw, now)
        return self._check_future(events, raw, envelope, now)

    def watermark(self, headers: Any, raw: bytes | None, now: float) -> tuple[float | None, BadInput | None]:
        """``(event time, None)`` for a watermark record, ``(None, None)`` for an ordinary one, and
        ``(None, bad)`` for a watermark that cannot be kept: a header that is not a time, one in
        the future (it would close every window and make what follows late), or one on a record
        that carries a value (its events would otherwise be skipped unseen)."""
        text = watermark_text(headers)
        if text is None:
            return None, None
        raw = raw or b""
        if raw.strip():
            why = f"a watermark record ({WATERMARK_HEADER}: {text!r}) carries a value; send events apart"
            return None, BadInput(raw, None, DeadLetterReason.invalid_value, why)
        ts, reason, why = read_watermark(text)
        if ts is None:
            return None, BadInput(raw, None, reason, f"{WATERMARK_HEADER} header: {why}")  # type: ignore[arg-type]
        if ts > now + self.max_future_skew_s:
            why = f"{WATERMARK_HEADER} {text!r} is more than {self.max_future_skew_s:.0f}s in the future"
            return None, BadInput(raw, None, DeadLetterReason.future_timestamp, why)
        return ts, None

    def _decode_items(self, raw: bytes, now: float) -> tuple[list[EventBase], list[BadInput]]:
        """Slow path for an envelope with bad items: validate item by item."""
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return [], [BadInput(raw, None, DeadLetterReason.malformed_json, str(exc))]
        good: list[EventBase] = []
        bad: list[BadInput] = []
        for i, item in enumerate(items):
            item_raw = orjson.dumps(item)
            try:
                event = self.model.model_validate_json(item_raw)
            except ValidationError as exc:
                bad.append(BadInput(item_raw, i, reason_for(exc), describe(exc)))
                continue
            except Exception as exc:  # as in ``decode``
                bad.append(unexpected(item_raw, i, exc))
                continue
            if self._is_future(event, now):
                bad.append(self._future(event, item_raw, i))
            else:
                good.append(event)
        return good, bad

    def _is_future(self, event: EventBase, now: float) -> bool:
        return event.ts.timestamp() > now + self.max_future_skew_s

    def _future(self, event: EventBase, raw: bytes, index: int | None) -> BadInput:
        return BadInput(
            raw,
            index,
            DeadLetterReason.future_timestamp,
            f"ts {event.ts.isoformat()} is more than {self.max_future_skew_s:.0f}s in the future",
        )

    def _check_future(
        self, events: list[EventBase], raw: bytes, envelope: bool, now: float
    ) -> tuple[list[EventBase], list[BadInput]]:
        limit = now + self.max_future_skew_s  # as ``_is_future``; a plain loop, per event
        for e in events:
            if e.ts.timestamp() > limit:
                break
        else:
            return events, []
        if not envelope:
            return [], [self._future(events[0], raw, None)]
        items = orjson.loads(raw)
        good, bad = [], []
        for i, e in enumerate(events):
            if self._is_future(e, now):
                bad.append(self._future(e, orjson.dumps(items[i]), i))
            else:
                good.append(e)
        return good, bad


def watermark_text(headers: Any) -> str | None:
    """The watermark header's value, or None for an ordinary record (``EventDecoder.watermark``
    checks it)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == WATERMARK_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def read_watermark(text: str) -> tuple[float | None, DeadLetterReason | None, str]:
    """``(event time, None, "")`` of a watermark's text, or ``(None, reason, why)`` when it is no
    time (a Kafka header's or a JSONL line's: one rule for both)."""
    try:
        ts = parse_event_time(text)
    except ValueError:
        return None, DeadLetterReason.wrong_type, f"{text!r} is not an event time (ISO 8601 or epoch seconds)"
    if not math.isfinite(ts):
        return None, DeadLetterReason.out_of_range, f"{text!r} is not a finite time"
    return ts, None, ""


def parse_event_time(text: str) -> float:
    """Epoch seconds from ``1793613600.0`` or ISO 8601 (``Z`` allowed; no zone means UTC);
    ``ValueError`` for anything else."""
    try:
        return float(text)
    except ValueError:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def watermark_headers(ts: float) -> list[tuple[str, bytes]]:
    return [(WATERMARK_HEADER, repr(float(ts)).encode())]


def family_of_item(item: dict[str, Any]) -> str:
    """Which input family a JSON event belongs to, for files that mix them (JSONL replays).

    A file may also say it outright with a ``"topic"`` wrapper: ``{"topic": "calls", "event": {...}}``.
    """
    if "survey_id" in item:
        return "surveys"
    if "state" in item and "agent_id" in item:
        return "agents"
    if "ticket_id" in item:
        return "tickets"
    return "calls"
