-- Cohort conversion, the definition the anomaly detector uses (streams/core/funnel.py): of a
-- window's persons at stage k, how many reached stage k+1 (anywhere in the tenant) by the end of
-- the next window. conversion k→k+1 = converted / persons of stage k, a proportion (persons at k+1
-- over persons at k is not: organic visits never clicked). NULL for the last stage, and for rows
-- written before this migration (not measured then).
ALTER TABLE {db}.funnel_minute ADD COLUMN IF NOT EXISTS converted Nullable(UInt64) AFTER persons;

CREATE OR REPLACE VIEW {db}.funnel_hourly AS
SELECT tenant_id, toStartOfHour(window_start) AS hour, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes, sum(converted) AS converted_person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, hour, channel, campaign, stage;

CREATE OR REPLACE VIEW {db}.funnel_daily AS
SELECT tenant_id, toDate(window_start) AS day, channel, campaign, stage,
       sum(events) AS events, sum(persons) AS person_minutes, sum(converted) AS converted_person_minutes
FROM {db}.funnel_minute FINAL
GROUP BY tenant_id, day, channel, campaign, stage;
