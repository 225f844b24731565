"""Where callpulse's results go: Prometheus metrics, ClickHouse, dead letters."""
