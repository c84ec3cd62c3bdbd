-- Generated from schemas/clickhouse/*.sql: replicated local tables + Distributed tables.
-- Replace {cluster}; {shard}/{replica} are server macros. See README.md beside this file.

CREATE TABLE IF NOT EXISTS {db}.touchpoints_local ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/touchpoints', '{replica}', ingested_at)
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (tenant_id, toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.touchpoints ON CLUSTER '{cluster}' AS {db}.touchpoints_local
ENGINE = Distributed('{cluster}', '{db}', 'touchpoints_local', cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS {db}.sessions_local ON CLUSTER '{cluster}'
(
    tenant_id          LowCardinality(String),
    session_id         String,
    person_id          String,
    started_at         DateTime64(3, 'UTC'),
    ended_at           DateTime64(3, 'UTC'),
    touchpoints        UInt32,
    channels           Array(LowCardinality(String)),
    first_channel      LowCardinality(String),
    first_campaign     String,
    first_page         String,
    last_channel       LowCardinality(String),
    last_campaign      String,
    last_page          String,
    max_stage          LowCardinality(String),
    converted          UInt8,
    merged_session_ids Array(String),
    late_events        UInt32,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/sessions', '{replica}', ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, session_id)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.sessions ON CLUSTER '{cluster}' AS {db}.sessions_local
ENGINE = Distributed('{cluster}', '{db}', 'sessions_local', cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS {db}.identity_merges_local ON CLUSTER '{cluster}'
(
    tenant_id        LowCardinality(String),
    status           LowCardinality(String),
    from_person_id   String,
    into_person_id   String,
    reason           LowCardinality(String),
    identifier_type  LowCardinality(String),
    event_id         String,
    at               DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/identity_merges', '{replica}', ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY (tenant_id, from_person_id, into_person_id, status, event_id)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.identity_merges ON CLUSTER '{cluster}' AS {db}.identity_merges_local
ENGINE = Distributed('{cluster}', '{db}', 'identity_merges_local', cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS {db}.sla_events_local ON CLUSTER '{cluster}'
(
    tenant_id        LowCardinality(String),
    wait_id          String,
    event            LowCardinality(String),
    conversation_id  String,
    channel          LowCardinality(String),
    team             LowCardinality(String),
    agent_id         String,
    priority         LowCardinality(String),
    policy           LowCardinality(String),
    kind             LowCardinality(String),
    started_at       DateTime64(3, 'UTC'),
    due_at           DateTime64(3, 'UTC'),
    fired_at         DateTime64(3, 'UTC'),
    response_s       Nullable(Float64),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/sla_events', '{replica}', ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, wait_id, event)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.sla_events ON CLUSTER '{cluster}' AS {db}.sla_events_local
ENGINE = Distributed('{cluster}', '{db}', 'sla_events_local', cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS {db}.response_times_local ON CLUSTER '{cluster}'
(
    tenant_id        LowCardinality(String),
    wait_id          String,
    conversation_id  String,
    channel          LowCardinality(String),
    team             LowCardinality(String),
    agent_id         String,
    priority         LowCardinality(String),
    policy           LowCardinality(String),
    kind             LowCardinality(String),
    started_at       DateTime64(3, 'UTC'),
    replied_at       DateTime64(3, 'UTC'),
    response_s       Float64,
    response_wall_s  Float64,
    target_s         Float64,
    breached         UInt8,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/response_times', '{replica}', ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, wait_id)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.response_times ON CLUSTER '{cluster}' AS {db}.response_times_local
ENGINE = Distributed('{cluster}', '{db}', 'response_times_local', cityHash64(tenant_id));

CREATE TABLE IF NOT EXISTS {db}.funnel_minute_local ON CLUSTER '{cluster}'
(
    tenant_id     LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    campaign      String,
    stage         LowCardinality(String),
    events        UInt64,
    persons       UInt64,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/funnel_minute', '{replica}', ingested_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, channel, campaign, stage)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.funnel_minute ON CLUSTER '{cluster}' AS {db}.funnel_minute_local
ENGINE = Distributed('{cluster}', '{db}', 'funnel_minute_local', cityHash64(tenant_id));

CREATE VIEW IF NOT EXISTS {db}.funnel_hourly ON CLUSTER '{cluster}' AS
SELECT tenant_id, toStartOfHour(window_start) AS hour, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, hour, channel, campaign, stage;

CREATE VIEW IF NOT EXISTS {db}.funnel_daily ON CLUSTER '{cluster}' AS
SELECT tenant_id, toDate(window_start) AS day, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, day, channel, campaign, stage;

CREATE TABLE IF NOT EXISTS {db}.anomalies_local ON CLUSTER '{cluster}'
(
    anomaly_id            String,
    tenant_id             LowCardinality(String),
    channel               String,
    campaign              String,
    stage_from            LowCardinality(String),
    stage_to              LowCardinality(String),
    kind                  LowCardinality(String),
    status                LowCardinality(String),
    window_start          DateTime64(3, 'UTC'),
    detected_at           DateTime64(3, 'UTC'),
    observed              Float64,
    expected              Float64,
    score                 Float64,
    est_lost_conversions  Float64,
    ingested_at           DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/anomalies', '{replica}', ingested_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, anomaly_id, status, detected_at)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.anomalies ON CLUSTER '{cluster}' AS {db}.anomalies_local
ENGINE = Distributed('{cluster}', '{db}', 'anomalies_local', cityHash64(tenant_id));
