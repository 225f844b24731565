"""Ingest adapters: other systems\x27 data into callpulse events (queue_log, CSV, JSONL)."""
