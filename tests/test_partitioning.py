"""Kafka's default partitioner (``streams/partitioning.py``): the compiled murmur2 and its
pure-Python source give aiokafka's hash for every length of key, so records placed by callpulse
land where a Kafka producer puts them."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import compiled, partitioning
from streams.partitioning import murmur2, partition_for


def pure_source() -> ModuleType:
    """The module's source, imported as plain Python whatever is built."""
    spec = importlib.util.spec_from_file_location("partitioning_source", compiled.source_of("streams.partitioning"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = pure_source()


def test_the_loaded_module_is_the_compiled_one_unless_pure_python_is_asked_for() -> None:
    built = compiled.extension_of("streams.partitioning") is not None
    assert partitioning.__file__.endswith(".so") == (built and not compiled.pure_python())


def test_kafkas_own_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed ints there; unsigned here)
    for data, java in ((b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)):
        assert murmur2(data) == java & 0xFFFFFFFF
        assert PURE.murmur2(data) == java & 0xFFFFFFFF


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_murmur2_is_aiokafkas_for_any_key(data: bytes) -> None:
    expected = aiokafka_murmur2(data)
    assert murmur2(data) == expected
    assert PURE.murmur2(data) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60), st.integers(min_value=1, max_value=64))
def test_partition_for_is_the_default_partitioners_choice(key: str, partitions: int) -> None:
    parts = list(range(partitions))
    expected = DefaultPartitioner()(key.encode(), parts, parts)
    assert partition_for(key, partitions) == expected
    assert partition_for(key.encode(), partitions) == expected
