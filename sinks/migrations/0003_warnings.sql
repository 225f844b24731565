-- Warning history (topic cc.warnings): every change of a warning's life is a row (opened,
-- escalated, de-escalated, resolved). The current state of a warning is its latest row:
-- argMax(level, updated_at) per warning_id. Re-delivered changes replace their copy.

CREATE TABLE IF NOT EXISTS $db.warnings
(
    warning_id String,
    rule $lc,
    kpi $lc,
    dimension $lc,
    dimension_value String,
    level Nullable(String),
    change $lc,
    value Nullable(Float64),
    threshold Nullable(Float64),
    expected Nullable(Float64),
    started_at $datetime,
    updated_at $datetime,
    resolved_at Nullable($datetime),
    reason String,
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(started_at)
ORDER BY (warning_id, updated_at, change)
SETTINGS index_granularity = 8192$dedup_window;
