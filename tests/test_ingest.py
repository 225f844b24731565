"""Ingest of Asterisk queue_log: a native file and PBXware's real export (make test-data) become
events whose KPIs, computed by the engine's batch reference, equal the values computed directly
from the lines; a corrupted file ingests without a crash and every bad line is in the reject
file; a followed file survives rotation."""

from __future__ import annotations

import csv
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from callpulse.cli import main
from callpulse.ingest.csv_export import Mapping, convert_rows
from callpulse.ingest.queue_log import QueueLogMapper, agent_id, convert, parse
from callpulse.ingest.runner import follow

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "callcenter"
T0 = 1762070400  # 2025-11-02 08:00 UTC

# a native queue_log in Asterisk's documented format (apps/app_queue.c field order)
NATIVE = [
    f"{T0}|NONE|NONE|NONE|QUEUESTART|",
    f"{T0 + 1}|MANAGER|support|PJSIP/201|ADDMEMBER|",
    f"{T0 + 1}|MANAGER|support|PJSIP/202|ADDMEMBER|",
    f"{T0 + 10}|1700.1|support|NONE|ENTERQUEUE||+15551230001|1",
    f"{T0 + 18}|1700.1|support|PJSIP/201|RINGNOANSWER|15000",
    f"{T0 + 25}|1700.1|support|PJSIP/202|CONNECT|15|1700.2|3",
    f"{T0 + 30}|1701.1|support|NONE|ENTERQUEUE||+15551230002|1",
    f"{T0 + 33}|1701.1|support|NONE|ABANDON|1|1|3",
    f"{T0 + 40}|1702.1|support|NONE|ENTERQUEUE||+15551230003|1",
    f"{T0 + 75}|1702.1|support|PJSIP/201|CONNECT|35|1702.2|4",
    f"{T0 + 90}|1703.1|support|NONE|ENTERQUEUE||+15551230004|1",
    f"{T0 + 200}|1703.1|support|NONE|EXITWITHTIMEOUT|1|1|110",
    f"{T0 + 205}|1700.1|support|PJSIP/202|COMPLETECALLER|15|180|1",
    f"{T0 + 210}|NONE|support|PJSIP/202|PAUSE|lunch",
    f"{T0 + 300}|1704.1|sales|NONE|ENTERQUEUE||+15551230005|1",
    f"{T0 + 305}|1704.1|sales|NONE|EXITWITHKEY|5|1|1|5",
    f"{T0 + 400}|1702.1|support|PJSIP/201|BLINDTRANSFER|2000|from-internal|35|325|1",
    f"{T0 + 420}|1705.1|sales|NONE|ENTERQUEUE||+15551230006|1",
    f"{T0 + 428}|1705.1|sales|PJSIP/201|CONNECT|8|1705.2|2",
    f"{T0 + 600}|1705.1|sales|PJSIP/201|COMPLETEAGENT|8|172|1",
    f"{T0 + 700}|NONE|support|PJSIP/202|UNPAUSE|",
    f"{T0 + 800}|1706.1|support|NONE|ENTERQUEUE||+15551230007|1",  # never ends: an orphan
]


def independent_kpis(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """From the lines themselves: offered = ENTERQUEUE, answered = CONNECT (wait = its holdtime),
    abandoned = every queue exit without an agent, short = waited <= 5 s."""
    exits = {"ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY", "WITHDRAW"}
    waits = [r["wait"] for r in rows if r["event"] == "CONNECT"]
    gone = [r["wait"] for r in rows if r["event"] in exits]
    return {
        "offered": sum(r["event"] == "ENTERQUEUE" for r in rows),
        "answered": len(waits),
        "abandoned": len(gone),
        "short_abandoned": sum(w <= 5 for w in gone),
        "answered_within_20": sum(w <= 20 for w in waits),
        "asa": sum(waits) / len(waits),
        "rona": sum(r["event"] == "RINGNOANSWER" for r in rows),
    }


def engine_kpis(events_file: Path, tmp: Path) -> dict[str, Any]:
    """The same KPIs from the events, through the batch reference (`callpulse kpis recompute`)."""
    out = CliRunner().invoke(
        main, ["kpis", "recompute", str(events_file), "--watermark-after", "10000", "--dimension", "all"]
    )
    assert out.exit_code == 0, out.output
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    hourly = [r for r in recs if r["window_size_s"] == 3600]
    answered = sum(r["answered"] for r in hourly)
    return {
        "offered": sum(r["offered"] for r in hourly),
        "answered": answered,
        "abandoned": sum(r["abandoned"] for r in hourly),
        "short_abandoned": sum(r["short_abandoned"] for r in hourly),
        "answered_within_20": sum(r["answered_within"]["20"] for r in hourly),
        "asa": sum((r["asa_seconds"] or 0) * r["answered"] for r in hourly) / answered,
        "rona": sum(r["rona"] for r in hourly),
    }


def ingest_file(path: Path, tmp: Path, *extra: str) -> tuple[dict[str, Any], Path, Path]:
    events, rejects = tmp / "events.jsonl", tmp / "rejects.jsonl"
    out = CliRunner().invoke(
        main, ["ingest", "queue-log", str(path), "--out", str(events), "--rejects", str(rejects), *extra]
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
    return summary, events, rejects


def test_native_queue_log_kpis_equal_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    path.write_text("\n".join(NATIVE) + "\n")
    summary, events, rejects = ingest_file(path, tmp_path)
    assert summary["rejected_by_reason"] == {} and summary["ignored_by_event"] == {"QUEUESTART": 1}
    assert summary["mapped_by_event"]["EXITWITHKEY"] == 1  # counted as abandoned, visible apart
    rows = []
    for line in NATIVE:
        f = line.split("|")
        wait = {"CONNECT": 5, "ABANDON": 7, "EXITWITHTIMEOUT": 7, "EXITWITHKEY": 8}.get(f[4])
        rows.append({"event": f[4], "wait": float(f[wait]) if wait else None})
    expected = independent_kpis(rows)
    assert expected["offered"] == 7 and expected["abandoned"] == 3
    assert engine_kpis(events, tmp_path) == pytest.approx(expected, rel=1e-9)
    # agents: ids without technology prefix, states from membership, calls and pauses
    agents = [json.loads(x)["event"] for x in events.read_text().splitlines() if '"topic":"agents"' in x]
    assert {a["agent_id"] for a in agents} == {"201", "202"}
    assert [a["state"] for a in agents if a["agent_id"] == "202"] == ["ready", "busy", "ready", "not_ready", "ready"]
    assert rejects.read_text() == ""


def test_agent_names_are_normalised() -> None:
    assert agent_id("Agent/1127") == agent_id("Local/1127@callback-agent") == agent_id("PJSIP/1127") == "1127"
    assert agent_id("NONE") is None


def test_realtime_export_with_local_times(tmp_path: Path) -> None:
    path = tmp_path / "queue_log.csv"
    path.write_text(
        "time,callid,queuename,agent,event,data1,data2,data3,data4,data5\n"
        "2025-11-02 09:00:10.000000,1800.1,support,NONE,ENTERQUEUE,,+15550000001,1,,\n"
        "2025-11-02 09:00:22.000000,1800.1,support,SIP/300,CONNECT,12,1800.2,2,,\n"
        "2025-11-02 09:03:22.000000,1800.1,support,SIP/300,COMPLETEAGENT,12,180,1,,\n"
    )
    summary, events, _ = ingest_file(path, tmp_path, "--tz", "Europe/Berlin")
    assert summary["events"] == 5 and summary["rejected_by_reason"] == {}
    first = json.loads(events.read_text().splitlines()[0])["event"]
    assert first["ts"].startswith("2025-11-02T08:00:10")  # 09:00 in Berlin is 08:00 UTC


def test_corrupted_queue_log_never_crashes_and_every_bad_line_is_rejected(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = list(NATIVE)
    bad = {
        "truncated": f"{T0 + 50}|1799.1|supp",
        "unknown event": f"{T0 + 51}|1799.1|support|NONE|TELEPORT|1|2",
        "epoch not a number": "12:00|1799.1|support|NONE|ENTERQUEUE||x|1",
        "holdtime not a number": f"{T0 + 52}|1799.1|support|PJSIP/201|CONNECT|soon|1799.2|3",
        "missing waittime": f"{T0 + 53}|1799.2|support|NONE|ABANDON|1",
        "negative talk": f"{T0 + 54}|1799.3|support|PJSIP/201|COMPLETEAGENT|3|-40|1",
        "binary garbage": "\x00\x01\x02|\xff",
        "call event without callid": f"{T0 + 55}|NONE|support|NONE|ENTERQUEUE||x|1",
        "epoch past year 9999": "99999999999999|1799.1|support|NONE|ENTERQUEUE||x|1",
        "epoch not finite": "nan|1799.1|support|NONE|ENTERQUEUE||x|1",
    }
    for text in bad.values():
        lines.insert(rng.randrange(1, len(lines)), text)
    lines[5], lines[9] = lines[9], lines[5]  # out-of-order timestamps
    path = tmp_path / "queue_log"
    path.write_text("\n".join(lines) + "\n")
    summary, _, rejects = ingest_file(path, tmp_path)
    rejected = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert sum(summary["rejected_by_reason"].values()) == len(rejected) == len(bad)
    assert {r["raw"] for r in rejected} == set(bad.values())
    assert all(r["line"] >= 1 and r["reason"] and r["error"] for r in rejected)
    # every line is accounted for: mapped, ignored or rejected
    mapped_lines = len(lines) - len(bad) - sum(summary["ignored_by_event"].values())
    assert mapped_lines == len(NATIVE) - 1
    assert summary["lines_read"] == len(lines)


def test_follow_reads_appends_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    path.write_text(NATIVE[0] + "\n")
    stop = threading.Event()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(follow(path, stop, poll_s=0.05)), daemon=True)
    reader.start()
    with path.open("a") as f:
        f.write(NATIVE[1] + "\n" + NATIVE[2][:10])  # a partial line waits for its end
    time.sleep(0.3)
    with path.open("a") as f:
        f.write(NATIVE[2][10:] + "\n")
    time.sleep(0.3)
    path.rename(tmp_path / "queue_log.1")  # logrotate
    path.write_text(NATIVE[3] + "\n")
    time.sleep(0.5)
    stop.set()
    reader.join(5)
    assert [x.rstrip("\n") for x in got] == NATIVE[:4]


@pytest.mark.shared_data
def test_pbxware_production_queue_log_kpis_equal_the_lines(tmp_path: Path) -> None:
    """1,000 genuine production rows (PBXware export of Asterisk's queue_log, one queue)."""
    path = SHARED / "pbxware_queue_log_2018-11.pseudonymized.csv"
    summary, events, _ = ingest_file(path, tmp_path)
    assert summary["lines_read"] == 1001 and summary["rejected_by_reason"] == {}
    with path.open() as f:
        rows = [
            {"event": r["event"], "wait": float(r["htime"])}
            for r in csv.DictReader(f)
            if r["event"]
            in ("ENTERQUEUE", "CONNECT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY", "RINGNOANSWER")
        ]
    expected = independent_kpis(rows)
    print(expected)
    assert expected["offered"] == 108 and expected["answered"] == 93
    assert engine_kpis(events, tmp_path) == pytest.approx(expected, rel=1e-9)


def test_mapper_is_line_by_line() -> None:
    """Out-of-order lines map the same: calls carry everything they need on their own line."""
    mapper = QueueLogMapper()
    forward = [e for e in convert(NATIVE, mapper) if isinstance(e, tuple) and e[0] == "calls"]
    backward = [
        e for e in convert(list(reversed(NATIVE)), QueueLogMapper()) if isinstance(e, tuple) and e[0] == "calls"
    ]
    assert sorted(e.event_id for _, e in forward) == sorted(e.event_id for _, e in backward)
    assert len(list(parse(NATIVE))) == len(NATIVE)


@pytest.mark.slow
def test_ingest_to_kafka_sends_rejects_to_the_dead_letter_topic(pipeline_factory: Any, tmp_path: Path) -> None:
    import asyncio

    from schemas.records import DeadLetter

    pipe = pipeline_factory()
    bad = f"{T0 + 51}|1799.1|support|NONE|TELEPORT|1|2"
    path = tmp_path / "queue_log"
    path.write_text("\n".join([*NATIVE[:6], bad, *NATIVE[6:]]) + "\n")
    out = CliRunner().invoke(main, ["ingest", "queue-log", str(path)], env=pipe.env())
    assert out.exit_code == 0, out.output
    calls = asyncio.run(pipe.read(pipe.topics.calls, idle_s=1.0))
    assert sum(r.value.count(b'"event_id"') for r in calls) == 18  # call events, in envelopes
    dlq = asyncio.run(pipe.read(pipe.topics.dlq, idle_s=1.0))
    assert [r.value for r in dlq] == [bad.encode()]
    letter = DeadLetter.from_headers(dlq[0].headers)
    assert letter.source_topic == "ingest:queue_log" and letter.offset == 7 and letter.reason.value == "invalid_enum"


CDR = """call_id,start_time,queue,channel,agent,answered,wait_seconds,talk_seconds,csat
c1,2025-11-03 09:00:00,billing,phone,ann,Y,12,0:03:10,5
c2,2025-11-03 09:01:00,billing,phone,,N,45,,
c3,2025-11-03 09:02:30,tech,chat,bob,Y,40,95,2
c4,2025-11-03 09:03:00,tech,phone,bob,yes,3,61,
c5,03/11/2025 09:04:00,billing,phone,ann,Y,25,120,4
bad1,2025-11-03 9h05,billing,phone,ann,Y,10,60,5
bad2,2025-11-03 09:06:00,billing,fax,ann,Y,10,60,5
bad3,2025-11-03 09:07:00,billing,phone,ann,Y,ten,60,5
bad4,2025-11-03 09:08:00,billing
"""


def test_call_detail_csv_kpis_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "cdr.csv"
    path.write_text(CDR)
    events, rejects = tmp_path / "events.jsonl", tmp_path / "rejects.jsonl"
    args = ["ingest", "csv", str(path), "--mapping", "call-detail", "--out", str(events), "--rejects", str(rejects)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    rejected = {json.loads(x)["raw"].split(",")[0]: json.loads(x)["reason"] for x in rejects.read_text().splitlines()}
    assert rejected == {"bad1": "bad_time", "bad2": "invalid_enum", "bad3": "not_a_number", "bad4": "wrong_field_count"}
    got = engine_kpis(events, tmp_path)
    waits = [12, 40, 3, 25]
    assert got["offered"] == 5 and got["answered"] == 4 and got["abandoned"] == 1
    assert got["asa"] == pytest.approx(sum(waits) / 4) and got["answered_within_20"] == 2
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    surveys = [x["event"] for x in lines if x["topic"] == "surveys"]
    assert sorted(s["csat"] for s in surveys) == [2, 4, 5]
    ended = {x["event"]["contact_id"]: x["event"]["talk_seconds"] for x in lines if x["event"].get("kind") == "ended"}
    assert ended["cdr-c1"] == 190.0  # H:MM:SS


def test_csv_time_outside_the_calendar_in_utc_is_rejected_not_raised() -> None:
    """Year 1 at midnight in Tokyo is before year 1 in UTC: once an ``OverflowError`` that stopped
    the ingest."""
    m = Mapping(kind="call_detail", timezone="Asia/Tokyo", columns={"id": "id", "date": "start"})
    rows = [(1, {"id": "x", "start": "0001-01-01 00:00:00"}, "x,0001-01-01 00:00:00")]
    out = list(convert_rows(rows, m))
    assert [(r.number, r.reason) for r in out] == [(1, "bad_time")]  # type: ignore[union-attr]


def test_contact_record_csv(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "id,date,channel,first_response_minutes,satisfaction,issue_type,agent,remark\n"
        "k1,2025-11-03 10:00,email,45,4,billing,ann,thanks - write me at jo@example.com\n"
        "k2,2025-11-03 10:30,social,,2,delivery,bob,\n"
    )
    events = tmp_path / "events.jsonl"
    out = CliRunner().invoke(main, ["ingest", "csv", str(path), "--mapping", "contact-record", "--out", str(events)])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    kinds = [(x["topic"], x["event"].get("kind")) for x in lines]
    assert kinds == [
        ("tickets", "created"),
        ("tickets", "first_response"),
        ("surveys", None),
        ("tickets", "created"),
        ("surveys", None),
    ]
    first_response = lines[1]["event"]
    assert first_response["ts"].startswith("2025-11-03T10:45") and first_response["category"] == "billing"
    assert lines[2]["event"]["ticket_id"] == "contacts-k1" and lines[2]["event"]["csat"] == 4


@pytest.mark.shared_data
def test_pwc_call_center_csv_kpis_equal_the_rows(tmp_path: Path) -> None:
    """5,000 rows of the (synthetic, third-party) PwC call-center dataset via the shipped mapping."""
    path = SHARED / "pwc_call_center_2021.csv"
    events = tmp_path / "events.jsonl"
    out = CliRunner().invoke(main, ["ingest", "csv", str(path), "--mapping", "pwc-call-center", "--out", str(events)])
    assert out.exit_code == 0, out.output
    with path.open() as f:
        rows = list(csv.DictReader(f))
    answered = [r for r in rows if r["Answered (Y/N)"] == "Y"]
    waits = [float(r["Speed of answer in seconds"]) for r in answered]
    # three months of sparse data: counted from the events themselves (the engine's equality
    # with the batch reference is tested elsewhere; here the mapping is under test)
    evs = [json.loads(x)["event"] for x in events.read_text().splitlines()]
    by_kind: dict[str, list[Any]] = {}
    for e in evs:
        by_kind.setdefault(e.get("kind") or "survey", []).append(e)
    assert len(by_kind["offered"]) == len(rows) == 5000
    assert len(by_kind["answered"]) == len(answered) == 4054 and len(by_kind["abandoned"]) == 946
    got_waits = [e["wait_seconds"] for e in by_kind["answered"]]
    assert sum(got_waits) / len(got_waits) == pytest.approx(sum(waits) / len(waits), rel=1e-9)
    talk = sum(e["talk_seconds"] for e in by_kind["ended"])
    assert talk == sum(_hms(r["AvgTalkDuration"]) for r in answered)
    csat = [e["csat"] for e in by_kind["survey"]]
    assert sorted(csat) == sorted(int(r["Satisfaction rating"]) for r in answered)


def _hms(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s
