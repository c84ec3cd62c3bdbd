-- One row per closed funnel window × dimension × stage (final values, emitted once per window;
-- ReplacingMergeTree so a re-delivered window replaces rather than adds).
CREATE TABLE IF NOT EXISTS {db}.funnel_minute
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, channel, campaign, stage)
SETTINGS non_replicated_deduplication_window = 1000;

-- Rollups read the minute table with FINAL, so they stay exact even before merges collapse a
-- re-delivered window (a materialized view would have summed the duplicate).
CREATE VIEW IF NOT EXISTS {db}.funnel_hourly AS
SELECT tenant_id, toStartOfHour(window_start) AS hour, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, hour, channel, campaign, stage;

CREATE VIEW IF NOT EXISTS {db}.funnel_daily AS
SELECT tenant_id, toDate(window_start) AS day, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, day, channel, campaign, stage;

CREATE TABLE IF NOT EXISTS {db}.anomalies
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, anomaly_id, status, detected_at)
SETTINGS non_replicated_deduplication_window = 1000;
