"""Comparing streamed KPI records with the batch reference."""

from __future__ import annotations

from collections.abc import Mapping

from schemas.records import KpiRecord

PERCENTILE_SUFFIXES = ("_p50_seconds", "_p90_seconds", "_p95_seconds")
SKETCH_RELATIVE_ACCURACY = 0.01  # DDSketch guarantee; see docs/kpis.md


def differences(expected: Mapping[str, KpiRecord], got: Mapping[str, KpiRecord], limit: int = 20) -> list[str]:
    """Counts must be equal, ratios within 1e-9, sketch percentiles within the sketch's
    relative accuracy of the exact value."""
    out: list[str] = []
    for key in sorted(set(expected) - set(got))[:limit]:
        out.append(f"missing {key}")
    for key in sorted(set(got) - set(expected))[:limit]:
        out.append(f"unexpected {key}")
    for key in sorted(set(expected) & set(got)):
        a, b = expected[key].model_dump(), got[key].model_dump()
        for field, x in a.items():
            y = b[field]
            if field.endswith(PERCENTILE_SUFFIXES) and x is not None and y is not None:
                ok = abs(x - y) <= SKETCH_RELATIVE_ACCURACY * abs(x) + 1e-9
            else:
                ok = _close(x, y)
            if not ok:
                out.append(f"{key} {field}: expected {x!r}, got {y!r}")
                if len(out) >= limit:
                    return out
    return out


def _close(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(1.0, abs(x))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    return x == y
