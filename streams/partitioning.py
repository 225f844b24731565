"""Kafka's default partitioner (murmur2 of the key bytes), so that a batch recomputation can
place each event in the partition a Kafka producer would have chosen."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: str | bytes, partitions: int) -> int:
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
