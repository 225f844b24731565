"""The one command line: ``callpulse <command>``. Settings come from ``CALLPULSE_*``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from callpulse.config import Settings


@click.group()
def main() -> None:
    """callpulse: real-time contact-center KPIs and early warnings."""


@main.command("compile")
@click.option("--force", is_flag=True, help="rebuild every module, changed or not")
@click.option("--clean", "remove", is_flag=True, help="remove the built modules (the sources run again)")
def compile_engine(force: bool, remove: bool) -> None:
    """Compile the KPI engine's modules with Cython (those whose source changed)."""
    from streams import compiled

    if remove:
        for path in compiled.clean():
            click.echo(f"removed {path}")
        return
    built = compiled.build(force=force)
    click.echo(f"compiled {len(built)} engine modules" + (f": {', '.join(built)}" if built else " (all current)"))


# -- contracts ----------------------------------------------------------------------------------
@main.group()
def schema() -> None:
    """Event contracts."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schema_export(directory: Path) -> None:
    """Write JSON Schema for every event and record model to DIRECTORY."""
    from schemas.export import export_schemas

    for path in export_schemas(directory):
        click.echo(str(path))


@main.command()
@click.option(
    "--topic",
    "family",
    type=click.Choice(["calls", "tickets", "surveys", "agents"]),
    default=None,
    help="the topic the file is for (default: recognised per line)",
)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(family: str | None, path: Path) -> None:
    """Check a JSONL file of events against the contract; exit 1 if any line is invalid."""
    from callpulse.jsonl import read_jsonl

    good = bad = 0
    for line in read_jsonl(path, family):
        if line.reason is None:
            good += 1
        else:
            bad += 1
            click.echo(f"{path}:{line.number}: {line.reason.value}: {line.error}")
    click.echo(f"{good} valid, {bad} invalid", err=True)
    sys.exit(1 if bad else 0)


# -- kafka --------------------------------------------------------------------------------------
@main.command()
@click.option("--port", type=int, default=None, help="default: CALLPULSE_EMBEDDED_BROKER_PORT")
def broker(port: int | None) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory storage) in the foreground."""
    from callpulse.embedded import EmbeddedBroker

    settings = Settings()
    b = EmbeddedBroker(port or settings.embedded_broker_port).start()
    click.echo(f"embedded broker on {b.bootstrap} (Ctrl-C stops it; data is in memory)")
    try:
        assert b.proc is not None
        b.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@main.command()
def topics() -> None:
    """Create callpulse's topics (idempotent)."""
    from streams.kafka import ensure_topics

    for name, n in asyncio.run(ensure_topics(Settings())).items():
        click.echo(f"{name}\t{n} partitions")


@main.command()
@click.option("--loglevel", default="info")
def worker(loglevel: str) -> None:
    """Run a stream worker (join more for scale-out: same CALLPULSE_APP_ID)."""
    import faust

    from sinks.metrics import WorkerMetrics
    from streams.app import create_app, tune_gc
    from streams.compiled import engine_mode
    from streams.kafka import ensure_topics

    settings = Settings()
    asyncio.run(ensure_topics(settings))
    metrics = WorkerMetrics(thresholds=settings.sl_thresholds_s, max_values=settings.metrics_max_label_values)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_host)
    app, kpi_worker = create_app(settings, metrics)
    tune_gc(settings)  # Python's trigger until the worker takes over (its own clock, BatchGc)
    kpi_worker.gc.start()
    click.echo(f"callpulse worker: KPI engine {engine_mode()}", err=True)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


@main.command()
@click.option("--loglevel", default="info")
def sink(loglevel: str) -> None:
    """Run the ClickHouse sink (own consumer group; applies migrations first)."""
    import faust

    from sinks.app import create_sink_app
    from sinks.metrics import SinkMetrics
    from streams.kafka import ensure_topics

    settings = Settings()
    asyncio.run(ensure_topics(settings))
    metrics = SinkMetrics()
    if settings.sink_metrics_port:
        metrics.serve(settings.sink_metrics_port, settings.metrics_host)
    app, _ = create_sink_app(settings, metrics)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


# -- ClickHouse -----------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The ClickHouse store (server from CALLPULSE_CLICKHOUSE_DSN, else embedded chdb)."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (idempotent; the sink also runs them on start)."""
    from sinks.clickhouse_client import connect
    from sinks.schema import migrate

    settings = Settings()
    client = connect(settings)
    try:
        applied = migrate(client, settings.clickhouse_database, settings.raw_retention_days)
    finally:
        client.close()
    click.echo(f"{client.description}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))


@main.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "jsonl"]), default="table")
def query(sql: str, fmt: str) -> None:
    """Run SQL on the configured ClickHouse and print the result (database: callpulse)."""
    from sinks.clickhouse_client import connect

    settings = Settings()
    try:
        client = connect(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        result = client.execute(sql)
    except Exception as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from exc
    finally:
        client.close()
    if fmt == "jsonl":
        for row in result.dicts():
            click.echo(json.dumps(row, default=str))
    elif fmt == "tsv":
        click.echo("\t".join(result.columns))
        for row in result.rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console(width=None if sys.stdout.isatty() else 200).print(table)
        click.echo(f"{len(result.rows)} rows", err=True)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--envelope", type=int, default=1, show_default=True, help="events per Kafka record")
@click.option(
    "--watermark-after",
    type=float,
    default=None,
    help="finally send a watermark this many seconds after the last event time",
)
@click.option("--speed", type=float, default=None, help="pace by event time: simulated seconds per second (60)")
def produce(path: Path, envelope: int, watermark_after: float | None, speed: float | None) -> None:
    """Produce a JSONL file of events to the input topics, keyed by entity id (all at once, or
    paced by event time with --speed)."""
    from callpulse.jsonl import read_jsonl
    from streams.kafka import EventProducer, ensure_topics

    settings = Settings()
    lines = list(read_jsonl(path))
    bad = [ln for ln in lines if ln.reason is not None]
    for ln in bad:
        click.echo(f"{path}:{ln.number}: {ln.reason.value}: {ln.error}", err=True)  # type: ignore[union-attr]
    events = [(ln.family, ln.event) for ln in lines if ln.event is not None]

    async def run() -> None:
        await ensure_topics(settings)
        async with EventProducer(settings) as producer:
            if speed:
                ordered = sorted(events, key=lambda fe: fe[1].ts)  # type: ignore[union-attr]
                await producer.replay(ordered, speed, max(envelope, 1))  # type: ignore[arg-type]
            else:
                await producer.send_events(events, envelope)  # type: ignore[arg-type]
            if watermark_after is not None and events:
                await producer.send_watermarks(max(e.ts.timestamp() for _, e in events) + watermark_after)

    asyncio.run(run())
    click.echo(f"produced {len(events)} events, {len(bad)} invalid lines not produced", err=True)


# -- ingest -------------------------------------------------------------------------------------
@main.group()
def ingest() -> None:
    """Bring other systems' data in: Asterisk queue_log, JSONL replay (docs/ingest.md)."""


@ingest.command("queue-log")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "native", "realtime", "pbxware"]), default="auto")
@click.option("--tz", default="UTC", show_default=True, help="zone of textual times in database exports")
@click.option("--channel", default="phone", show_default=True)
@click.option("--business-type", default="default", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write JSONL, not Kafka")
@click.option(
    "--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default PATH.rejects.jsonl"
)
@click.option("--follow", is_flag=True, help="keep reading a live file (rotation-safe) and produce continuously")
def ingest_queue_log(
    path: Path,
    fmt: str,
    tz: str,
    channel: str,
    business_type: str,
    out: Path | None,
    rejects: Path | None,
    follow: bool,
) -> None:
    """Asterisk queue_log (native file or database export) -> call and agent events."""
    import threading

    from rich.progress import Progress

    from callpulse.ingest.queue_log import QueueLogMapper, convert
    from callpulse.ingest.runner import EventSink, Summary, ingest, read_lines
    from callpulse.ingest.runner import follow as follow_file
    from schemas.events import Channel

    settings = Settings()
    summary = Summary()
    mapper = QueueLogMapper(Channel(channel), business_type)
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    with EventSink(settings, out, rejects, path.name, batch=1 if follow else 1000) as sink:
        if follow:
            stop = threading.Event()
            try:
                lines = follow_file(path, stop)
                ingest(convert(lines, mapper, None if fmt == "auto" else fmt, tz), sink, summary)
            except KeyboardInterrupt:
                stop.set()
        else:
            if not path.exists():
                raise click.ClickException(f"{path} does not exist")
            with Progress(transient=True) as progress:
                task = progress.add_task(f"ingest {path.name}", total=path.stat().st_size)
                lines = read_lines(path, summary, lambda n: progress.advance(task, n))
                ingest(convert(lines, mapper, None if fmt == "auto" else fmt, tz), sink, summary)
    click.echo(json.dumps({**summary.as_dict(), "mapped_by_event": dict(sorted(mapper.mapped.items()))}, indent=2))
    click.echo(f"rejected lines with reasons: {rejects}", err=True)


@ingest.command("csv")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping", required=True, help="a mapping file, or a shipped one: call-detail, contact-record, pwc-call-center"
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write JSONL, not Kafka")
@click.option(
    "--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default PATH.rejects.jsonl"
)
def ingest_csv(path: Path, mapping: str, out: Path | None, rejects: Path | None) -> None:
    """A CSV export of another system -> callpulse events, by a mapping file (docs/ingest.md)."""
    from callpulse.ingest.csv_export import convert_rows, load_mapping, read_rows
    from callpulse.ingest.runner import EventSink, Summary, ingest, read_lines

    settings = Settings()
    summary = Summary()
    m = load_mapping(mapping)
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    from rich.progress import Progress

    with EventSink(settings, out, rejects, path.name) as sink, Progress(transient=True) as progress:
        task = progress.add_task(f"ingest {path.name}", total=path.stat().st_size)
        lines = read_lines(path, summary, lambda n: progress.advance(task, n))
        ingest(convert_rows(read_rows(lines), m), sink, summary)
    click.echo(json.dumps(summary.as_dict(), indent=2))
    click.echo(f"rejected lines with reasons: {rejects}", err=True)


@ingest.command("jsonl")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", type=float, default=None, help="replay at event-time pace x speed (default: at once)")
@click.option("--envelope", type=int, default=50, show_default=True)
@click.pass_context
def ingest_jsonl(ctx: click.Context, path: Path, speed: float | None, envelope: int) -> None:
    """Replay a JSONL file of callpulse events (original or accelerated timing)."""
    ctx.invoke(produce, path=path, envelope=envelope, watermark_after=600.0, speed=speed)


# -- staffing -----------------------------------------------------------------------------------
def _duration(text: str) -> float:
    """``30m``, ``180s``, ``1h`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


@main.command()
@click.option("--volume", type=float, required=True, help="contacts offered in the interval")
@click.option("--interval", default="30m", show_default=True)
@click.option("--aht", default="180s", show_default=True, help="average handle time")
@click.option("--target", default="0.8/20s", show_default=True, help="service level target: share/answer time")
@click.option("--max-occupancy", type=float, default=None)
@click.option("--shrinkage", type=float, default=0.0, show_default=True)
@click.option("--patience", default=None, help="mean caller patience: adds an Erlang A line")
def staffing(
    volume: float,
    interval: str,
    aht: str,
    target: str,
    max_occupancy: float | None,
    shrinkage: float,
    patience: str | None,
) -> None:
    """Agents needed for an interval (Erlang C, optionally Erlang A), for planners."""
    from streams.staffing import ErlangA, ErlangC, scheduled_agents

    share, _, within = target.partition("/")
    sl_target, target_s = float(share), _duration(within or "20s")
    traffic = ErlangC(volume, _duration(interval), _duration(aht))
    n = traffic.required_agents(sl_target, target_s, max_occupancy)
    click.echo(f"offered load          {traffic.load:.2f} Erlangs")
    click.echo(
        f"agents needed         {n}  (service level >= {sl_target:.0%} in {target_s:g}s"
        + (f", occupancy <= {max_occupancy:.0%})" if max_occupancy else ")")
    )
    if n:
        click.echo(f"  service level       {traffic.service_level(n, target_s):.1%}")
        click.echo(f"  probability of wait {traffic.wait_probability(n):.1%}")
        click.echo(f"  ASA                 {traffic.asa(n):.1f}s")
        click.echo(f"  occupancy           {traffic.occupancy(n):.1%}")
    click.echo(f"agents to schedule    {scheduled_agents(n, shrinkage)}  (shrinkage {shrinkage:.0%})")
    if patience and n:
        a = ErlangA(volume, _duration(interval), _duration(aht), _duration(patience))
        click.echo(
            f"with abandonment (Erlang A, patience {_duration(patience):g}s) at {n} agents: "
            f"wait {a.wait_probability(n):.1%}, abandon {a.abandon_probability(n):.1%}, "
            f"mean queue time {a.asa(n):.1f}s, occupancy {a.occupancy(n):.1%}"
        )


@main.group()
def forecast() -> None:
    """Interval volume forecasts (the seasonal baseline of the surge detector)."""


@forecast.command("backtest")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--time-column", default="timestamp", show_default=True)
@click.option("--value-column", default="value", show_default=True)
@click.option("--interval", default="15m", show_default=True, help="forecast interval")
@click.option("--horizons", default="1,4", show_default=True, help="intervals ahead of the origin")
@click.option("--weeks", type=int, default=5, show_default=True, help="weeks of history in the profile")
@click.option("--warmup-days", type=int, default=35, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def forecast_backtest(
    path: Path,
    time_column: str,
    value_column: str,
    interval: str,
    horizons: str,
    weeks: int,
    warmup_days: int,
    as_json: bool,
) -> None:
    """Rolling-origin backtest of the interval forecast on a volume series (CSV), against the
    seasonal-naive forecast (the same slot one week earlier)."""
    from streams.early_warning.backtest import read_series
    from streams.forecast import backtest as run_backtest

    series = read_series(path, time_column, value_column)
    hs = tuple(int(h) for h in horizons.split(","))
    report = run_backtest(series, int(_duration(interval)), hs, weeks, warmup_days=warmup_days).as_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{report['days']} days, {report['origins']} forecast origins, {report['interval_s'] // 60}-minute intervals"
    )
    head = ("horizon", 8), ("intervals", 9), ("WAPE", 8), ("MAPE", 8), ("naive WAPE", 11), ("naive MAPE", 11)
    click.echo(" ".join(f"{name:>{width}}" for name, width in head) + f" {'80% PI':>7}")
    for h, row in report["horizons"].items():
        ours, naive = row["callpulse"], row["seasonal_naive"]
        click.echo(
            f"{h:>8} {ours['intervals']:>9} {ours['wape']:>8.2%} {ours['mape']:>8.2%} "
            f"{naive['wape']:>11.2%} {naive['mape']:>11.2%} {ours['coverage']:>7.1%}"
        )


# -- KPIs ---------------------------------------------------------------------------------------
@main.group()
def kpis() -> None:
    """KPI tools."""


@kpis.command("recompute")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl")
@click.option(
    "--watermark-after",
    type=float,
    default=None,
    help="close windows as if a watermark followed the last event by this many seconds",
)
@click.option("--dimension", default=None, help="only this dimension (all, queue, channel, business_type, agent)")
def kpis_recompute(path: Path, fmt: str, watermark_after: float | None, dimension: str | None) -> None:
    """Recompute every final KPI window from a JSONL file, in arrival order (the batch reference)."""
    from callpulse.jsonl import read_jsonl
    from streams.reference import FAMILIES, Arrival, arrivals_from_events, recompute_as_configured

    s = Settings()
    arrivals: list[Arrival] = []
    events = []
    for ln in read_jsonl(path):
        if ln.watermark is not None:
            arrivals.extend(arrivals_from_events(events, s.partitions))
            events = []
            arrivals.extend(Arrival(f, p, watermark=ln.watermark) for f in FAMILIES for p in range(s.partitions))
        elif ln.event is not None:
            events.append((ln.family, ln.event))
    final = None
    if watermark_after is not None and (events or arrivals):
        last = [a.event.ts.timestamp() for a in arrivals if a.event] + [e.ts.timestamp() for _, e in events]
        final = max(last) + watermark_after
    arrivals.extend(arrivals_from_events(events, s.partitions, final))
    records, counts = recompute_as_configured(arrivals, s)
    records = [r for r in records if dimension is None or r.dimension == dimension]
    if fmt == "jsonl":
        for r in records:
            click.echo(r.model_dump_json())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            "window", "size", "dimension", "offered", "answered", "abandoned", "SL", "ASA s", "AHT s", "CSAT", "backlog"
        )

        def f(v: float | None, pct: bool = False) -> str:
            return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.1f}")

        for r in records:
            table.add_row(
                r.window_start.strftime("%Y-%m-%d %H:%M"),
                str(r.window_size_s),
                f"{r.dimension}={r.dimension_value}" if r.dimension_value else r.dimension,
                str(r.offered),
                str(r.answered),
                str(r.abandoned),
                f(r.service_level, True),
                f(r.asa_seconds),
                f(r.aht_seconds),
                f(r.csat_mean),
                str(r.backlog),
            )
        Console(width=None if sys.stdout.isatty() else 160).print(table)
    click.echo(json.dumps(counts), err=True)


# -- data -----------------------------------------------------------------------------------------
def _incident(text: str, start: str) -> Any:
    """``kind:queue:start_hours:duration_hours[:factor]``, hours from the simulation start."""
    from datetime import datetime, timedelta

    from callpulse.simulator import Incident

    parts = text.split(":")
    if len(parts) not in (4, 5) or parts[0] not in ("surge", "staffing_drop", "outage"):
        raise click.BadParameter(
            f"{text!r}: expected kind:queue:start_h:duration_h[:factor], kind surge|staffing_drop|outage"
        )
    t0 = datetime.fromisoformat(start) + timedelta(hours=float(parts[2]))
    factor = float(parts[4]) if len(parts) == 5 else (2.0 if parts[0] == "surge" else 0.3)
    return Incident(parts[0], parts[1] or None, t0, t0 + timedelta(hours=float(parts[3])), factor)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--hours", type=float, default=12.0, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", default="2026-11-02T07:00:00+00:00", show_default=True)
@click.option(
    "--incident",
    "incidents",
    multiple=True,
    help="inject kind:queue:start_h:duration_h[:factor], e.g. surge:billing:3:1:2.5 (queue empty = all)",
)
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write incident labels")
def simulate(out: Path, hours: float, seed: int, start: str, incidents: tuple[str, ...], labels: Path | None) -> None:
    """Simulate a contact center and write its events as JSONL (sorted by event time)."""
    from datetime import datetime, timedelta

    from callpulse.jsonl import write_jsonl
    from callpulse.simulator import SimConfig
    from callpulse.simulator import simulate as run

    t0 = time.perf_counter()
    injected = tuple(_incident(text, start) for text in incidents)
    cfg = SimConfig(start=datetime.fromisoformat(start), duration=timedelta(hours=hours), seed=seed, incidents=injected)
    events = run(cfg)
    write_jsonl(out, events)
    if labels is not None:
        labels.write_text(json.dumps([i.label() for i in injected], indent=2))
    click.echo(f"{len(events)} events -> {out} ({time.perf_counter() - t0:.1f}s)", err=True)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--allowance", type=float, default=1800.0, show_default=True, help="seconds after an incident still matched"
)
@click.option("--lookback-windows", type=int, default=3, show_default=True, help="CSV series: lookback in intervals")
@click.option("--min-weeks", type=int, default=2, show_default=True, help="CSV series: weeks before a slot is trusted")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def backtest(path: Path, labels: Path, allowance: float, lookback_windows: int, min_weeks: int, as_json: bool) -> None:
    """Replay events (JSONL) or a time series (CSV timestamp,value) through the warning detector
    and score it against labelled incidents: precision, recall, delay, warnings per day."""
    from streams.early_warning.backtest import load_incidents, run_detector, score, series_records, span_days
    from streams.early_warning.detector import EarlyWarningDetector
    from streams.early_warning.rules import RuleSet, load_rules

    s = Settings()
    rules = load_rules(s.warning_rules)
    if path.suffix == ".csv":
        records, step = series_records(path)
        seasonal = [
            r.model_copy(
                update={
                    "lookback_s": lookback_windows * step,
                    "slot_s": step,
                    "min_weeks": min_weeks,
                    "min_expected": 0,
                }
            )
            for r in rules.seasonal
        ]
        detector = EarlyWarningDetector(
            RuleSet(seasonal=seasonal), step, tuple(s.sl_thresholds_s), s.sl_default_variant
        )
    else:
        records = _replay(path, s)
        detector = EarlyWarningDetector.from_settings(s, rules)
    warnings = run_detector(detector, records)
    report = score(warnings, load_incidents(labels, path), span_days(records), allowance)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ["episodes", "precision", "recall", "red_recall", "median_delay_s", "max_delay_s"]
    table = Table("rule", *cols, "red outside", "per day")
    for name, r in report.items():
        table.add_row(
            name,
            *("-" if r[c] is None else str(r[c]) for c in cols),
            str(r["red_outside_incidents"]),
            str(r["warnings_per_day"]),
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _replay(path: Path, s: Settings) -> list[Any]:
    """Events through the KPI engine and merger in-process (the worker's code, no Kafka)."""
    from callpulse.jsonl import read_jsonl
    from streams.merge import MergeParams
    from streams.pipeline import LocalPipeline
    from streams.reference import arrivals_from_events
    from streams.sources import EngineParams

    events = [(ln.family, ln.event) for ln in read_jsonl(path) if ln.event is not None]
    final = max(e.ts.timestamp() for _, e in events) + s.grace_s + 2 * s.base_window_s
    merge = MergeParams.from_settings(s)
    pipe = LocalPipeline(EngineParams.from_settings(s), merge, s.partitions, s.sl_default_variant)
    pipe.feed(arrivals_from_events(events, s.partitions, final), batch=2000)  # type: ignore[arg-type]
    return pipe.records


@main.command()
@click.option("--duration", type=float, default=None, help="stop after this many seconds (default: the whole day)")
@click.option("--speed", type=float, default=60.0, show_default=True, help="simulated seconds per second")
@click.option("--hours", type=float, default=8.0, show_default=True, help="simulated hours (from 08:00 UTC)")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(duration: float | None, speed: float, hours: float, seed: int) -> None:
    """Embedded broker + worker + ClickHouse sink + simulator with a live view (see README)."""
    from callpulse.demo import run_demo

    sys.exit(run_demo(Settings(), duration, speed, hours, seed))


if __name__ == "__main__":
    main()
