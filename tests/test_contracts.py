"""Event contracts, decoding, reasons, JSON Schema export, the validate command, PII."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from callpulse.jsonl import parse_line
from schemas.codec import EventDecoder, watermark_headers
from schemas.events import MODEL_BY_FAMILY, CallEvent
from schemas.export import export_schemas
from schemas.pii import Pseudonymizer, normalise_phone, scrub_text
from tests.badinputs import CORPUS, call

REPO = Path(__file__).resolve().parents[1]
NOW = 1_793_700_000.0  # 2026-11-03, after every fixture timestamp


@pytest.mark.parametrize(("name", "family", "raw", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_bad_input_gets_its_reason(name: str, family: str, raw: bytes, reason: str) -> None:
    good, bad = EventDecoder(family, 900).decode(raw, NOW)
    assert good == []
    assert len(bad) == 1
    assert bad[0].reason.value == reason, bad[0].error
    assert bad[0].raw == raw  # the original bytes, untouched
    assert bad[0].error


def test_corpus_is_large_and_distinct() -> None:
    assert len(CORPUS) >= 20
    assert len({c[2] for c in CORPUS}) == len(CORPUS)


def test_envelope_keeps_good_items_and_isolates_bad_ones() -> None:
    items = [call(event_id="e1"), call(event_id="e2", channel="fax"), call(event_id="e3")]
    good, bad = EventDecoder("calls", 900).decode(orjson.dumps(items), NOW)
    assert [e.event_id for e in good] == ["e1", "e3"]
    assert len(bad) == 1 and bad[0].index == 1 and bad[0].reason.value == "invalid_enum"
    assert orjson.loads(bad[0].raw) == items[1]


def test_a_validator_raising_anything_else_dead_letters_the_input_and_keeps_the_rest() -> None:
    """Mocked fault (no input is known to cause one for real since the zone-offset overflow was
    fixed): validation raising something other than a ``ValidationError`` for one item."""
    decoder = EventDecoder("calls", 900)
    model, many = decoder.model, decoder._many

    def exploding(validate: Any) -> Any:
        def run(raw: bytes) -> Any:
            if b"c-boom" in raw:
                raise OverflowError("a validator's bug")
            return validate(raw)

        return run

    decoder.model = SimpleNamespace(model_validate_json=exploding(model.model_validate_json))  # type: ignore[assignment]
    decoder._many = SimpleNamespace(validate_json=exploding(many.validate_json))  # type: ignore[assignment]
    items = [call(event_id="e1"), call(event_id="e2", contact_id="c-boom"), call(event_id="e3")]
    good, bad = decoder.decode(orjson.dumps(items), NOW)
    assert [e.event_id for e in good] == ["e1", "e3"]
    assert [(b.index, b.reason.value) for b in bad] == [(1, "invalid_value")]
    assert "OverflowError: a validator's bug" in bad[0].error
    assert orjson.loads(bad[0].raw) == items[1]
    single = orjson.dumps(items[1])
    good, bad = decoder.decode(single, NOW)
    assert good == [] and [(b.raw, b.index, b.reason.value) for b in bad] == [(single, None, "invalid_value")]


def test_jsonl_watermark_lines_that_are_not_times_get_a_reason() -> None:
    assert parse_line(1, b'{"watermark": "2026-11-02T10:00:00Z"}').watermark == 1793613600.0
    for raw, reason in [(b'{"watermark": "soon"}', "wrong_type"), (b'{"watermark": "nan"}', "out_of_range")]:
        line = parse_line(7, raw)
        assert (line.watermark, line.reason, line.raw) == (None, reason, raw) and line.error


def test_timestamps_are_utc_and_naive_is_rejected() -> None:
    e = CallEvent.model_validate_json(orjson.dumps(call(ts="2026-11-02T12:00:00+02:00")))
    assert e.ts.isoformat() == "2026-11-02T10:00:00+00:00"


def test_watermark_header_round_trip_and_bad_watermarks_get_their_reason() -> None:
    decoder = EventDecoder("calls", 900)
    assert decoder.watermark(watermark_headers(1234.5), b"", NOW) == (1234.5, None)
    assert decoder.watermark([("callpulse.watermark", b"2026-11-02T10:00:00Z")], None, NOW) == (1793613600.0, None)
    assert decoder.watermark({"callpulse.watermark": b"1793613600"}, b"", NOW) == (1793613600.0, None)
    assert decoder.watermark([("other", b"x")], b"{}", NOW) == (None, None)
    assert decoder.watermark(None, b"{}", NOW) == (None, None)
    for header, value, reason in [
        (b"yesterday", b"", "wrong_type"),
        (b"\xff\xfe", b"", "wrong_type"),
        (b"nan", b"", "out_of_range"),
        (b"inf", b"", "out_of_range"),
        (repr(NOW + 901).encode(), b"", "future_timestamp"),
        (b"1793613600", b'[{"event_id": "x"}]', "invalid_value"),
    ]:
        ts, bad = decoder.watermark([("callpulse.watermark", header)], value, NOW)
        assert ts is None and bad is not None, header
        assert (bad.reason.value, bad.raw, bad.index) == (reason, value, None), header
        assert "callpulse.watermark" in bad.error
    assert decoder.watermark([("callpulse.watermark", repr(NOW + 899).encode())], b"", NOW) == (NOW + 899, None)


def _doc_examples() -> list[tuple[str, dict[str, object]]]:
    text = (REPO / "docs" / "events.md").read_text()
    out = []
    for topic, body in re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, re.S):
        out.append((topic, json.loads(body)))
    return out


def test_docs_have_examples_for_every_topic() -> None:
    assert {t for t, _ in _doc_examples()} == set(MODEL_BY_FAMILY)


def test_every_doc_example_validates_against_exported_schema_and_model(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    schemas = {p.name.split(".")[1]: json.loads(p.read_text()) for p in tmp_path.glob("cc.*.v1.json")}
    assert set(schemas) == {"calls", "tickets", "surveys", "agents", "kpis", "warnings"}
    for topic, doc_example in _doc_examples():
        jsonschema.validate(doc_example, schemas[topic])
        MODEL_BY_FAMILY[topic].model_validate_json(json.dumps(doc_example))


def test_exported_schema_rejects_what_the_model_rejects(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    schema = json.loads((tmp_path / "cc.calls.v1.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(call(channel="fax"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(call(quue="x"), schema)


def test_validate_command_reports_line_numbers_and_reasons(tmp_path: Path) -> None:
    f = tmp_path / "calls.jsonl"
    lines = [orjson.dumps(call(event_id="ok1")), b"{broken", orjson.dumps(call(channel="fax")), orjson.dumps(call())]
    f.write_bytes(b"\n".join(lines) + b"\n")
    res = subprocess.run(
        [sys.executable, "-m", "callpulse", "validate", "--topic", "calls", str(f)], capture_output=True, text=True
    )
    assert res.returncode == 1
    assert f"{f}:2: malformed_json" in res.stdout
    assert f"{f}:3: invalid_enum" in res.stdout
    assert "2 valid, 2 invalid" in res.stderr
    good = tmp_path / "good.jsonl"
    good.write_bytes(orjson.dumps(call()) + b"\n")
    assert subprocess.run([sys.executable, "-m", "callpulse", "validate", str(good)]).returncode == 0


def test_pseudonyms_are_keyed_stable_and_not_the_value() -> None:
    a, b = Pseudonymizer("k1"), Pseudonymizer("k2")
    assert a.token("cust-1") == a.token("cust-1")
    assert a.token("cust-1") != b.token("cust-1")
    assert "cust-1" not in (a.token("cust-1") or "")
    assert a.token("+1 (555) 010-2030", "phone") == a.token("15550102030", "phone")
    assert a.token(None) is None


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.text(max_size=80), st.binary(max_size=200)),
    value=st.text(min_size=1, max_size=60),
    kind=st.sampled_from(["id", "customer", "phone"]),
)
def test_pseudonyms_are_hmac_sha256_of_kind_and_value(key: str | bytes, value: str, kind: str) -> None:
    """The precomputed inner and outer states give ``hmac.new``'s digest for any key length
    (keys over the 64-byte block are hashed first, as RFC 2104 says)."""
    raw = key.encode() if isinstance(key, str) else key
    normalised = normalise_phone(value) if kind == "phone" else value.strip()
    expected = hmac.new(raw, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()[:32]
    token = Pseudonymizer(key).token(value, kind)
    assert token == (expected if value != "" else None)


def test_scrub_removes_emails_and_phone_numbers_but_keeps_words() -> None:
    text = "call me at +1 555 010 2030 or mail jane.doe@example.com, order 12345"
    out = scrub_text(text)
    assert out == "call me at [phone] or mail [email], order 12345"


_TIMES = st.builds(  # RFC 3339-like times, the calendar's edges and impossible dates among them
    lambda date, h, mi, s, frac, off: f"{date}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
    st.sampled_from(["0001-01-01", "0001-01-02", "9999-12-31", "2026-11-02", "2024-02-29", "2026-02-30", "2026-13-01"]),
    st.integers(0, 23) | st.just(24),
    st.integers(0, 59) | st.just(60),
    st.integers(0, 59) | st.just(60),
    st.sampled_from(["", ".5", ".123456", ".1234567"]),
    st.sampled_from(["", "Z", "+00:00", "+02:00", "-02:00", "+23:59", "-23:59", "+24:00", "+0530", "+05"]),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | _TIMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_VALID = {
    "calls": call(ts="2026-11-02T10:00:00Z", kind="answered", wait_seconds=5.0, agent_id="a-1"),
    "tickets": {
        "event_id": "t",
        "ts": "2026-11-02T10:00:00Z",
        "kind": "resolved",
        "ticket_id": "t-1",
        "created_at": "2026-11-01T10:00:00Z",
        "sla_due": "2026-11-02T09:00:00Z",
        "category": "billing",
        "channel": "email",
        "team": "billing",
    },
    "surveys": {"event_id": "s", "ts": "2026-11-02T10:00:00Z", "survey_id": "s-1", "contact_id": "c-1", "csat": 4},
    "agents": {"event_id": "a", "ts": "2026-11-02T10:00:00Z", "agent_id": "a-1", "state": "ready", "queues": ["x"]},
}


@settings(max_examples=400, deadline=None)
@given(
    family=st.sampled_from(sorted(_VALID)),
    changes=st.dictionaries(
        st.sampled_from(sorted({k for v in _VALID.values() for k in v} | {"extra", "queues", "nps"})),
        _JSON,
        min_size=1,
        max_size=3,
    )
    | st.dictionaries(st.sampled_from(["ts", "created_at", "sla_due"]), _TIMES, min_size=1),
    envelope=st.booleans(),
)
@example(family="agents", changes={"ts": "0001-01-01T00:00:00+02:00"}, envelope=False)  # an OverflowError once
@example(family="tickets", changes={"sla_due": "9999-12-31T23:00:00-02:00"}, envelope=True)
def test_no_input_makes_the_decoder_raise(family: str, changes: dict[str, Any], envelope: bool) -> None:
    """A valid event with up to three fields replaced by arbitrary JSON (times around years 1 and
    9999 with odd offsets among them): decoded or dead-lettered with a reason, never raised."""
    item = {**_VALID[family], **changes}
    raw = json.dumps([_VALID[family], item] if envelope else item).encode()  # big integers too
    good, bad = EventDecoder(family, 900).decode(raw, NOW)
    assert len(good) + len(bad) == (2 if envelope else 1)
    assert all(b.reason and b.error for b in bad)
