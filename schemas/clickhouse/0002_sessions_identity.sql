-- Closed sessions (topic sessions.closed) and identity merges (topic identity.merges).
CREATE TABLE IF NOT EXISTS {db}.sessions
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, session_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.identity_merges
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
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY (tenant_id, from_person_id, into_person_id, status, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
