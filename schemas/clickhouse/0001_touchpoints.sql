-- Raw enriched touchpoints, one row per event_id.
-- ReplacingMergeTree on the natural key: a batch re-delivered after a crash collapses on merge,
-- and queries that must be exact read with FINAL (see README "No loss, no double counts").
CREATE TABLE IF NOT EXISTS {db}.touchpoints
(
    tenant_id        LowCardinality(String),
    event_id         String,
    occurred_at      DateTime64(3, 'UTC'),
    channel          LowCardinality(String),
    type             LowCardinality(String),
    stage            LowCardinality(String),
    person_id        String,
    session_id       String,
    session_seq      UInt32,
    conversation_id  String,
    agent_id         String,
    team             LowCardinality(String),
    campaign_source  LowCardinality(String),
    campaign_medium  LowCardinality(String),
    campaign_name    LowCardinality(String),
    page_url         String,
    value_amount     Nullable(Float64),
    value_currency   LowCardinality(String),
    identities       String,
    properties       String,
    src_topic        LowCardinality(String),
    src_partition    UInt16,
    src_offset       UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (tenant_id, toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
