-- Keys under which distinct records never collapse (issue 18; docs/data-integrity.md).
-- A ReplacingMergeTree keeps one row per sorting key: that collapses re-deliveries, and also
-- distinct records whose key named too little. Where the natural key does not cover a record's
-- identity (streams/clickhouse/rows.py TableSpec.identity), the sink now writes record_key, a
-- 64-bit hash of the identity, and the sorting key ends with it:
--   touchpoints      + occurred_at  (an event_id is unique within the dedup window only)
--   identity_merges  + at           (a reused event_id)
--   sla_events       + started_at   (wait ids restart for a conversation reopened after its retention)
--   response_times   + started_at   (the same)
-- ClickHouse accepts a new sorting-key column only in the ALTER that adds it, without a default:
-- rows written before carry record_key 0 and keep their old key among themselves. The anomaly
-- key (tenant_id, anomaly_id, status, detected_at) needed no change: the detector now stamps each
-- record with the end of the window that raised it, so a catch-up no longer repeats detected_at.
ALTER TABLE {db}.touchpoints ADD COLUMN IF NOT EXISTS record_key UInt64,
    MODIFY ORDER BY (tenant_id, toStartOfHour(occurred_at), event_id, record_key);

ALTER TABLE {db}.identity_merges ADD COLUMN IF NOT EXISTS record_key UInt64,
    MODIFY ORDER BY (tenant_id, from_person_id, into_person_id, status, event_id, record_key);

ALTER TABLE {db}.sla_events ADD COLUMN IF NOT EXISTS record_key UInt64,
    MODIFY ORDER BY (tenant_id, wait_id, event, record_key);

ALTER TABLE {db}.response_times ADD COLUMN IF NOT EXISTS record_key UInt64,
    MODIFY ORDER BY (tenant_id, wait_id, record_key);
