"""A fault the embedded broker cannot cause: it takes every batch it is sent. With this folder on
``PYTHONPATH`` a callpulse process imports this file at start-up; when ``CALLPULSE_FAULT_TRIGGER``
names a file, the first ``RecordBatches.flush`` with records to deliver once that file exists
removes it (one fault, whichever process takes it) and raises the error aiokafka raises for a
batch the broker refused or lost; those records are gone. The one mock of the tests that use it
(``tests/test_kpi_stream.py``, ``tests/test_demo.py``), and they say so."""

from __future__ import annotations

import os

_TRIGGER = os.environ.get("CALLPULSE_FAULT_TRIGGER")

if _TRIGGER:
    from aiokafka.errors import KafkaError

    import streams.kafka

    _flush = streams.kafka.RecordBatches.flush

    async def _failing_flush(self: streams.kafka.RecordBatches) -> None:
        if self._open:
            try:
                os.remove(_TRIGGER)
            except FileNotFoundError:
                pass
            else:
                self._open = {}
                raise KafkaError("injected fault: the broker did not take a batch")
        await _flush(self)

    streams.kafka.RecordBatches.flush = _failing_flush  # type: ignore[method-assign]
