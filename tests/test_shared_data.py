"""KPIs on genuine contact-center data (../shared/data, present in CI; `make test-data`).

The Technion "Anonymous Bank" call log (Feb 1999, research use, read in place, never copied):
each call becomes callpulse events (offered at queue entry, answered at service start with the
queue wait, abandoned at queue exit, ended at service end), goes through the streaming engine
and the batch reference, and the month's totals are checked against figures computed
independently from the raw file and published with it (18,058 queued, 3,963 abandoned, mean
wait of answered 78.6 s).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.events import CallEvent, CallEventKind, Channel
from streams.merge import MergeParams
from streams.pipeline import LocalPipeline
from streams.reference import arrivals_from_events, recompute
from streams.sources import EngineParams
from tests.kpicompare import differences

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "callcenter" / "anonymous_bank_1999-02.tsv"
pytestmark = pytest.mark.shared_data


def _at(date: str, clock: str) -> datetime:
    day = datetime.strptime(date, "%y%m%d").replace(tzinfo=UTC)
    h, m, s = (int(x) for x in clock.split(":"))
    return day + timedelta(hours=h, minutes=m, seconds=s)


def bank_events() -> list[tuple[str, CallEvent]]:
    out: list[tuple[str, CallEvent]] = []
    with open(DATA, newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
            if row["outcome"] == "PHANTOM" or row["q_start"] == "0:00:00":
                continue  # virtual calls; calls that never queued
            cid = f"bank-{row['call_id']}-{line}"  # call_id is recycled within the month
            common = dict(
                contact_id=cid,
                queue=row["type"],
                channel=Channel.phone,
                business_type=f"priority-{row['priority']}",
                customer_id=None if row["customer_id"] == "0" else row["customer_id"],
            )
            q_start = _at(row["date"], row["q_start"])
            wait = float(row["q_time"])
            out.append(("calls", CallEvent(event_id=f"{cid}-o", ts=q_start, kind=CallEventKind.offered, **common)))
            if row["outcome"] == "AGENT":
                start = q_start + timedelta(seconds=wait)
                out.append(
                    (
                        "calls",
                        CallEvent(
                            event_id=f"{cid}-a",
                            ts=start,
                            kind=CallEventKind.answered,
                            agent_id=row["server"],
                            wait_seconds=wait,
                            **common,
                        ),
                    )
                )
                out.append(
                    (
                        "calls",
                        CallEvent(
                            event_id=f"{cid}-e",
                            ts=start + timedelta(seconds=float(row["ser_time"])),
                            kind=CallEventKind.ended,
                            agent_id=row["server"],
                            talk_seconds=float(row["ser_time"]),
                            **common,
                        ),
                    )
                )
            else:
                out.append(
                    (
                        "calls",
                        CallEvent(
                            event_id=f"{cid}-x",
                            ts=q_start + timedelta(seconds=wait),
                            kind=CallEventKind.abandoned,
                            wait_seconds=wait,
                            **common,
                        ),
                    )
                )
    out.sort(key=lambda fe: fe[1].ts)
    return out


def test_anonymous_bank_month_stream_equals_reference_and_published_totals() -> None:
    events = bank_events()
    sizes = (3600, 86400)
    params = EngineParams(base=3600, grace=600, orphan_timeout=4 * 3600)
    final = max(e.ts.timestamp() for _, e in events) + 2 * 86400
    arrivals = arrivals_from_events(events, 4, final)
    ref, counts = recompute(arrivals, params, 4, sizes)
    assert counts["late"] == 0  # sorted input: nothing is late
    pipe = LocalPipeline(params, MergeParams(3600, sizes, params.thresholds), 4)
    pipe.feed(arrivals, batch=2000)
    expected = {r.key(): r for r in ref}
    assert differences(expected, {r.key(): r for r in pipe.records}) == []

    days = [r for r in ref if r.window_size_s == 86400 and r.dimension == "all"]
    assert len([d for d in days if d.offered]) == 28  # February 1999 (then a silent day, still emitted)
    offered = sum(r.offered for r in days)
    answered = sum(r.answered for r in days)
    abandoned = sum(r.abandoned for r in days)
    assert offered == 18_058
    assert abandoned == 3_963
    assert answered == 14_095
    asa = sum((r.asa_seconds or 0) * r.answered for r in days) / answered
    assert asa == pytest.approx(78.6, abs=0.05)


def test_nab_nyc_taxi_backtest() -> None:
    """The seasonal detector on NAB's nyc_taxi (30-min taxi demand, five labelled anomaly windows:
    marathon, Thanksgiving, Christmas, New Year, snow storm). Figures in docs/warnings.md."""
    from click.testing import CliRunner

    from callpulse.cli import main

    nab = DATA.parents[1] / "nab"
    series = nab / "data" / "realKnownCause" / "nyc_taxi.csv"
    args = ["backtest", str(series), "--labels", str(nab / "labels" / "combined_windows.json"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    overall = json.loads(result.output)["overall"]
    print(overall)
    assert overall["recall"] == 1.0
    assert overall["precision"] >= 0.45
    assert overall["warnings_per_day"] <= 0.25


def test_bank_calls_forecast_beats_seasonal_naive() -> None:
    """The interval forecast (seasonal baseline + level) on 164 weekdays of 5-minute bank call
    volumes, rolling origin, 15-minute intervals: lower WAPE than the same slot last week at
    every horizon, and an 80 % prediction interval that holds about what it says. Figures in
    docs/staffing.md."""
    from click.testing import CliRunner

    from callpulse.cli import main

    series = DATA.parents[1] / "bank_calls" / "bank_calls_5min.csv"
    args = ["forecast", "backtest", str(series), "--time-column", "DateTime", "--value-column", "Calls"]
    result = CliRunner().invoke(main, [*args, "--horizons", "1,4,8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    print(json.dumps(report))
    assert report["days"] == 164
    for h, row in report["horizons"].items():
        ours, naive = row["callpulse"], row["seasonal_naive"]
        assert ours["intervals"] == naive["intervals"] > 6000, h
        assert ours["wape"] < 0.75 * naive["wape"], h  # measured 5.5 % vs 9.2 % one interval ahead
        assert ours["mape"] < naive["mape"], h
        assert 0.65 <= ours["coverage"] <= 0.9, h
