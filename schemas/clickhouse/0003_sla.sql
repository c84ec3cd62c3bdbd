-- SLA events (warning|breach|resolved, one per wait and event) and every reply's response time.
CREATE TABLE IF NOT EXISTS {db}.sla_events
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, wait_id, event)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.response_times
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, wait_id)
SETTINGS non_replicated_deduplication_window = 1000;
