"""Event-time window arithmetic (tumbling windows aligned to the epoch, in UTC).

Semantics follow Kafka Streams / Quix Streams: *stream time* is the highest event time a source
has seen; a window ``[start, end)`` accepts events while ``stream time < end + grace``; after
that it is closed and its result is final. Only the *base* window (the smallest size) is
computed from events; longer windows are unions of base windows, so every size agrees on which
events counted.
"""

from __future__ import annotations


def floor_to(ts: float, size: int) -> int:
    """Start of the window of ``size`` seconds containing ``ts``."""
    return int(ts // size) * size


def closed_boundary(stream_time: float, base: int, grace: int) -> int:
    """Largest base-window boundary ``b`` with ``b + grace <= stream_time``: every base window
    ending at or before ``b`` is closed."""
    return floor_to(stream_time - grace, base)


def is_late(ts: float, stream_time: float, base: int, grace: int) -> bool:
    """An event is late when its base window is already closed."""
    return floor_to(ts, base) + base + grace <= stream_time


def split_by_window(start: float, end: float, base: int) -> list[tuple[int, float]]:
    """``(window_start, seconds)`` for the part of ``[start, end)`` in each base window. A list,
    not a generator: it is called per agent state change, and a compiled generator's resumption
    costs more than the list (an interval spans a few windows)."""
    out = []
    t = start
    while t < end:
        w = floor_to(t, base)
        stop = min(end, w + base)
        out.append((w, stop - t))
        t = stop
    return out
