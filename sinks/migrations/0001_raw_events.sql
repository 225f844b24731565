-- Raw events, one table per input topic, as validated by the worker's contracts.
-- Personal data never lands here in clear: customer ids and caller numbers are keyed HMAC
-- pseudonyms (*_pseudonym), survey comments are scrubbed of e-mail addresses and phone numbers.
-- ReplacingMergeTree keyed by the sorting key (which ends in event_id): a re-delivered event
-- replaces its earlier copy; read with FINAL (or LIMIT 1 BY event_id) for exact counts.
-- $datetime is DateTime64(3, 'UTC') on servers >= 20.1, DateTime('UTC') on older ones.

CREATE TABLE IF NOT EXISTS $db.call_events
(
    event_id String,
    ts $datetime,
    kind $lc,
    contact_id String,
    parent_contact_id Nullable(String),
    queue $lc,
    channel $lc,
    business_type $lc,
    direction $lc,
    agent_id Nullable(String),
    customer_pseudonym Nullable(String),
    caller_pseudonym Nullable(String),
    wait_seconds Nullable(Float64),
    ring_seconds Nullable(Float64),
    talk_seconds Nullable(Float64),
    hold_seconds Nullable(Float64),
    acw_seconds Nullable(Float64),
    queue_position Nullable(UInt32),
    transfer_target Nullable(String),
    hangup_by Nullable(String),
    source_system Nullable(String),
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(ts)
ORDER BY (queue, channel, business_type, ts, event_id)
SETTINGS index_granularity = 8192$dedup_window;

CREATE TABLE IF NOT EXISTS $db.ticket_events
(
    event_id String,
    ts $datetime,
    kind $lc,
    ticket_id String,
    created_at $datetime,
    category $lc,
    priority $lc,
    sla_due Nullable($datetime),
    channel $lc,
    team $lc,
    business_type $lc,
    agent_id Nullable(String),
    customer_pseudonym Nullable(String),
    status Nullable(String),
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(ts)
ORDER BY (team, channel, business_type, ts, event_id)
SETTINGS index_granularity = 8192$dedup_window;

CREATE TABLE IF NOT EXISTS $db.survey_responses
(
    event_id String,
    ts $datetime,
    survey_id String,
    contact_id Nullable(String),
    ticket_id Nullable(String),
    queue Nullable(String),
    channel Nullable(String),
    business_type Nullable(String),
    agent_id Nullable(String),
    customer_pseudonym Nullable(String),
    csat Nullable(UInt8),
    nps Nullable(UInt8),
    ces Nullable(UInt8),
    comment_scrubbed Nullable(String),
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id)
SETTINGS index_granularity = 8192$dedup_window;

CREATE TABLE IF NOT EXISTS $db.agent_state_events
(
    event_id String,
    ts $datetime,
    agent_id String,
    state $lc,
    queues Array(String),
    reason Nullable(String),
    channel Nullable(String),
    schema_version UInt8,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(ts)
ORDER BY (agent_id, ts, event_id)
SETTINGS index_granularity = 8192$dedup_window;
