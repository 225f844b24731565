"""What the fixed shape costs per event before any KPI: the ceiling of a worker that validates.

    python benchmarks/bench_floor.py [--events 100000] [--runs 3]

The throughput issue asks for >= 100,000 events/s per worker process "with every KPI computed
and all events validated", and the brief fixes validation to pydantic v2 and pseudonymisation
of customer ids before any sink. This measures those obligations alone, on the benchmark's
seeded event mix (``bench_kpi_engine.events``), with no KPI, no faust, no changelog, no sink:

* in process, per event of each family and weighted by the mix: callpulse's ``EventDecoder``
  (pydantic v2 ``validate_json`` of a record, envelopes of 100 and one event per record), and
  the HMAC pseudonyms the worker makes (one per contact and per ticket with a customer id);
* on the real broker (Tansu, embedded), the backlog in envelopes of 100 read from the start by
  a bare aiokafka consumer (``getmany``): the records alone, then the records decoded and
  validated by the same decoder.

The printed ceiling is 1 / (validation + pseudonymisation) per event: the rate no worker of this
shape can pass on this machine, whatever its KPI engine costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_kpi_engine import events, produce_backlog  # noqa: E402

from callpulse.config import Settings, Topics  # noqa: E402
from callpulse.embedded import EmbeddedBroker  # noqa: E402
from schemas.codec import EventDecoder  # noqa: E402
from schemas.pii import Pseudonymizer  # noqa: E402

ENVELOPE = 100
SETTINGS = Settings()  # the worker's skew limit and pseudonym key
NOW = time.time() + 10 * 365 * 86_400  # decoding "now": no event counts as a future timestamp
FLOOR = Topics(calls="floor.calls", tickets="floor.tickets", surveys="floor.surveys", agents="floor.agents")


def best_us_per_event(fn: object, n: int, runs: int) -> float:
    """Fastest of ``runs`` calls of ``fn`` (no arguments), in microseconds per event of ``n``."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def in_process(evs: list, runs: int) -> dict[str, float]:
    """Microseconds per event, weighted by the mix: validation (envelopes, single records) and
    pseudonyms. Printed per family too."""
    by_family: dict[str, list[dict]] = {}
    for family, e in evs:
        by_family.setdefault(family, []).append(e.model_dump(mode="json"))
    pseudo = Pseudonymizer(SETTINGS.pii_key.get_secret_value())
    totals = {"envelopes": 0.0, "single": 0.0, "pseudonyms": 0.0}
    print(f"{'family':10} {'events':>7} {'share':>6} {'envelopes us':>13} {'single us':>10} {'pseudonyms us':>14}")
    for family, items in sorted(by_family.items()):
        decoder = EventDecoder(family, SETTINGS.max_future_skew_s)
        envelopes = [orjson.dumps(items[i : i + ENVELOPE]) for i in range(0, len(items), ENVELOPE)]
        singles = [orjson.dumps(item) for item in items]
        # the worker pseudonymises a customer id once per contact (its ``offered`` event) and
        # per ticket (``created``), where it records the first contact for repeat detection
        ids = [i["customer_id"] for i in items if i.get("customer_id") and i.get("kind") in ("offered", "created")]

        def decode_all(records: list[bytes], decoder: EventDecoder = decoder) -> None:
            for r in records:
                _good, bad = decoder.decode(r, NOW)
                assert not bad, bad

        def tokens(ids: list[str] = ids) -> None:
            for i in ids:
                pseudo.token(i)

        env = best_us_per_event(lambda records=envelopes: decode_all(records), len(items), runs)
        one = best_us_per_event(lambda records=singles: decode_all(records), len(items), runs)
        pii = best_us_per_event(tokens, len(items), runs)
        share = len(items) / len(evs)
        print(f"{family:10} {len(items):>7} {share:>6.1%} {env:>13.2f} {one:>10.2f} {pii:>14.2f}")
        totals["envelopes"] += share * env
        totals["single"] += share * one
        totals["pseudonyms"] += share * pii
    print(
        f"{'mix':10} {len(evs):>7} {'':>6} {totals['envelopes']:>13.2f} {totals['single']:>10.2f}"
        f" {totals['pseudonyms']:>14.2f}"
    )
    return totals


async def consume(bootstrap: str, total: int, validate: bool, group: str) -> float:
    """Events/s of a bare aiokafka consumer reading the enveloped backlog from the start."""
    decoders = {t: EventDecoder(f, SETTINGS.max_future_skew_s) for f, t in FLOOR.inputs().items()}
    consumer = AIOKafkaConsumer(
        *decoders,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    n, first = 0, None
    try:
        while n < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if first is None and batches:
                first = time.perf_counter()
            for tp, records in batches.items():
                decoder = decoders[tp.topic]
                for r in records:
                    if validate:  # good and bad items alike: a bad one must not stall the count
                        good, bad = decoder.decode(r.value, NOW)
                        n += len(good) + len(bad)
                    else:
                        n += len(orjson.loads(r.value))
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - (first or 0.0))


def on_broker(evs: list, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="callpulse-floor-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log").start()
        try:
            settings = Settings(kafka_bootstrap=broker.bootstrap, partitions=4, topics=FLOOR)
            produce_backlog(settings, evs, ENVELOPE, watermark=False)
            out = {}
            for validate in (False, True):
                rates = [
                    asyncio.run(consume(broker.bootstrap, len(evs), validate, f"floor-{validate}-{i}"))
                    for i in range(runs)
                ]
                out["validated" if validate else "records"] = statistics.median(rates)
            return out
        finally:
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    evs = events(args.events)
    print(f"{len(evs)} simulated events of the benchmark's large center\n")
    print("In process, microseconds per event (best of runs):")
    cost = in_process(evs, args.runs)
    print("\nReal broker, envelopes of 100, bare aiokafka consumer (median of runs):")
    rates = on_broker(evs, args.runs)
    print(f"  records read and parsed (orjson), nothing else: {rates['records']:>10,.0f} events/s")
    print(f"  records read, decoded and validated (pydantic):  {rates['validated']:>10,.0f} events/s")
    print("\nCeiling of a worker that validates and pseudonymises, before any KPI:")
    for form in ("envelopes", "single"):
        us = cost[form] + cost["pseudonyms"]
        print(f"  {form:9} 1 / {us:.2f} us = {1e6 / us:>10,.0f} events/s")


if __name__ == "__main__":
    main()
