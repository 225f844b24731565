"""The compiled engine (``streams/compiled.py``): built by ``make test``, loaded instead of the
sources, refused when stale, and giving exactly the records and warnings of the pure Python
engine on the same events."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams import compiled

REPO = Path(__file__).resolve().parent.parent

# Runs the engine (stages 1 and 2, records, warnings, staffing records) over a messy simulated day
# and prints every record and warning; which engine depends on CALLPULSE_PURE_PYTHON.
RUN = r"""
import json, sys
from datetime import UTC, datetime, timedelta
from callpulse.config import Settings
from callpulse.simulator import Incident, SimConfig, disorder, simulate
from streams import compiled
from streams.early_warning.backtest import run_detector
from streams.early_warning.detector import EarlyWarningDetector
from streams.early_warning.rules import load_rules
from streams.merge import MergeParams
from streams.pipeline import LocalPipeline
from streams.reference import arrivals_from_events
from streams.sources import EngineParams

s = Settings()
start = datetime(2026, 11, 3, 7, tzinfo=UTC)
surge = start + timedelta(hours=2)
events = simulate(SimConfig(start=start, duration=timedelta(hours=4), seed=9,
                            incidents=(Incident("surge", None, surge, surge + timedelta(hours=1), 3.0),)))
final = max(e.ts.timestamp() for _, e in events) + 900
arrivals = arrivals_from_events(disorder(events, 9, shuffle_s=60, duplicate_rate=0.02, late_rate=0.005,
                                         late_by_s=900), 3, final)
pipe = LocalPipeline(EngineParams.from_settings(s), MergeParams.from_settings(s), 3)
pipe.feed(arrivals, batch=700)
detector = EarlyWarningDetector(load_rules(), s.base_window_s, tuple(s.sl_thresholds_s), s.sl_default_variant)
warnings = run_detector(detector, pipe.records)
print(json.dumps({
    "mode": compiled.engine_mode(),
    "late": pipe.late, "duplicates": pipe.duplicates,
    "records": [r.model_dump(mode="json") for r in pipe.records],
    "warnings": [w.model_dump(mode="json") for w in warnings],
    "staffing": [r.model_dump(mode="json") for r in detector.drain_staffing()],
}))
"""


def run_engine(pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_every_engine_module_is_built_from_its_current_source() -> None:
    """``make test`` compiles first: the tests then run the engine as it runs in production."""
    manifest = compiled.read_manifest()
    missing = [m for m in compiled.MODULES if compiled.extension_of(m) is None]
    assert missing == [], f"not compiled (run `make compile`): {missing}"
    assert {m: manifest.get(m) for m in compiled.MODULES} == {m: compiled.source_hash(m) for m in compiled.MODULES}
    assert "streams.reference" not in compiled.MODULES  # the independent batch recomputation stays Python


def test_the_compiled_engine_gives_the_records_and_warnings_of_the_pure_python_one() -> None:
    fast, pure = run_engine(pure=False), run_engine(pure=True)
    assert fast["mode"].startswith("compiled") and pure["mode"] == "pure Python"
    assert fast["late"] > 0 and fast["duplicates"] > 0
    assert len(fast["records"]) > 3000 and len(fast["warnings"]) > 0
    assert {w["rule"] for w in fast["warnings"]} & {"service_level_collapse", "understaffing", "asa_high"}
    print(fast["mode"], len(fast["records"]), "records", sorted({w["rule"] for w in fast["warnings"]}))
    # staffing: Erlang C's loops run on C doubles when compiled (streams/staffing.py)
    assert len(fast["staffing"]) > 20 and any(r["required_agents_actual"] for r in fast["staffing"])
    for key in ("late", "duplicates", "records", "warnings", "staffing"):
        assert fast[key] == pure[key], key


def test_a_compiled_module_older_than_its_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    finder = compiled.CompiledFinder()
    monkeypatch.setattr(compiled, "read_manifest", lambda: {"streams.windows": "0" * 64})
    with pytest.raises(ImportError, match=r"compiled from an older windows\.py: run `callpulse compile`"):
        finder.find_spec("streams.windows", None)
    monkeypatch.setenv(compiled.PURE_ENV, "1")  # the sources, whatever is built
    spec = finder.find_spec("streams.windows", None)
    assert spec is not None and spec.origin == str(REPO / "streams" / "windows.py")
    assert finder.find_spec("streams.reference", None) is None  # Python's own finders


def test_a_modules_pxd_is_part_of_its_build() -> None:
    """Stage 1's classes and the sketch are extension types when compiled (``streams/*.pxd``);
    editing only a ``.pxd`` makes the build stale as editing the source does."""
    from streams.partial import Sketch
    from streams.sources import CallsSource, EngineParams

    src = CallsSource("cc.calls", 0, EngineParams(), {})
    assert not hasattr(src, "__dict__")  # struct fields, not an instance dict
    assert not hasattr(Sketch(), "__dict__")  # streams/partial.pxd
    with pytest.raises(AttributeError):
        src.not_declared = 1  # type: ignore[attr-defined]
    py_only = hashlib.sha256(compiled.source_of("streams.sources").read_bytes()).hexdigest()
    assert compiled.declarations_of("streams.sources").exists()
    assert compiled.source_hash("streams.sources") != py_only
    assert (
        compiled.source_hash("streams.windows")
        == hashlib.sha256(compiled.source_of("streams.windows").read_bytes()).hexdigest()
    )
