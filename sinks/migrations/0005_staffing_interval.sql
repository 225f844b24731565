-- Staffing per planning interval (topic cc.staffing; definitions: docs/staffing.md): one row per
-- interval x dimension value, written when the interval closes. The forecast is the one made when
-- the interval started; required agents are Erlang C for the target (target_service_level of
-- calls answered within threshold_s) on the forecast and on what was offered; staffed agents are
-- ready + busy + after-call work, averaged over the interval (a queue counts every agent skilled
-- for it); gap_agents = max(required) - staffed, > 0 = understaffed. A re-delivered record
-- replaces its earlier copy (same sorting key, newest Kafka offset wins).

CREATE TABLE IF NOT EXISTS $db.staffing_interval
(
    interval_start $datetime,
    interval_end $datetime,
    interval_s UInt32,
    dimension $lc,
    dimension_value String,
    windows UInt32,
    forecast_contacts Nullable(Float64),
    forecast_low Nullable(Float64),
    forecast_high Nullable(Float64),
    offered UInt64,
    aht_seconds Nullable(Float64),
    required_agents_forecast Nullable(UInt32),
    required_agents_actual Nullable(UInt32),
    staffed_agents Nullable(Float64),
    gap_agents Nullable(Float64),
    expected_service_level Nullable(Float64),
    service_level Nullable(Float64),
    target_service_level Float64,
    threshold_s UInt32,
    forecast_wape Nullable(Float64),
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (interval_s, dimension, dimension_value, interval_start)
SETTINGS index_granularity = 8192$dedup_window;
