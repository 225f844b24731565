"""A crash in the middle of a persist, as the in-process restart tests model it.

The worker makes each group of state-table entries durable before it sends the next (one
changelog partition per table, so a group lands as a prefix of what was sent): a crash lets
through the groups before some group and a prefix of that one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson


def durable(rng: random.Random, steps: list[list[Any]]) -> tuple[list[list[Any]], bool]:
    """What of a batch's persist steps (each made durable before the next is sent) a crash lets
    through: every step, or for 30 % of batches the steps before a random one and a random part
    of it. Returns them and whether the batch crashed."""
    crash_at = rng.randrange(len(steps)) if rng.random() < 0.3 else None
    if crash_at is None:
        return steps, False
    return [*steps[:crash_at], steps[crash_at][: rng.randrange(len(steps[crash_at]) + 1)]], True


def apply(table: dict[str, Any], entries: Iterable[tuple[str, Any]]) -> None:
    """Table entries (key, value) as a changelog applies them: None deletes, and a value is what
    its JSON says at the time it is written (later changes to the engine's objects are not in it)."""
    for key, value in entries:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(orjson.dumps(value))
