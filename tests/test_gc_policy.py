"""The worker's garbage-collection policy (``streams.app.BatchGc``), on the real collector.

Python's allocation trigger is off in the worker; young cycles are collected on the worker's own
clock, frozen survivors only by the periodic full collection, and every pause is observed.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from streams.app import BatchGc


class Node:
    """A container that can be part of a cycle and weakly referenced."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """Cyclic garbage: only the cyclic collector can free it; the weak reference says when."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def pauses() -> Iterator[list[tuple[int, float]]]:
    seen: list[tuple[int, float]] = []
    callbacks = list(gc.callbacks)
    yield seen
    gc.callbacks[:] = callbacks
    gc.unfreeze()
    gc.enable()
    gc.collect()


def test_the_trigger_is_off_and_young_cycles_wait_for_the_worker_clock(pauses: list[tuple[int, float]]) -> None:
    policy = BatchGc(young_every_s=0.2, full_every_s=600, observe=lambda g, s: pauses.append((g, s)))
    policy.start()
    assert not gc.isenabled()
    ref = cycle()
    keep = [[i] for i in range(200_000)]  # far past any allocation threshold: no collection
    assert ref() is not None
    policy.after_batch()  # too soon after the last young collection
    assert ref() is not None and pauses == []
    time.sleep(0.25)
    policy.after_batch()
    assert ref() is None
    assert [g for g, _ in pauses] == [1] and pauses[0][1] > 0
    assert gc.get_freeze_count() >= len(keep)  # the survivors are frozen out of later passes


def test_a_cycle_that_dies_after_freezing_waits_for_the_full_collection(pauses: list[tuple[int, float]]) -> None:
    policy = BatchGc(young_every_s=0.05, full_every_s=600, observe=lambda g, s: pauses.append((g, s)))
    policy.start()
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    time.sleep(0.06)
    policy.after_batch()  # alive: survives the young collection and is frozen
    del a, b
    time.sleep(0.06)
    policy.after_batch()
    assert ref() is not None  # frozen: young collections skip it
    policy.last_full -= 600  # the full collection is due
    policy.after_batch()
    assert ref() is None
    assert [g for g, _ in pauses] == [1, 1, 2]


def test_with_young_every_zero_python_keeps_its_trigger_and_every_batch_collects(
    pauses: list[tuple[int, float]],
) -> None:
    policy = BatchGc(young_every_s=0, full_every_s=600, observe=lambda g, s: pauses.append((g, s)))
    policy.start()
    assert gc.isenabled()
    gc.collect()  # what the test session left behind
    pauses.clear()
    ref = cycle()
    policy.after_batch()
    assert ref() is None
    assert 1 in [g for g, _ in pauses]
