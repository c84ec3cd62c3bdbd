-- Person profiles (topic persons.profile), attribution credits (topic attribution.credits), cost
-- feeds, and what is computed over them: RFM per tenant, ROI per campaign and channel, the stage
-- conversion chain. Docs: docs/profiles-and-attribution.md.

-- The latest profile per person: every record is the whole profile with a growing version, so
-- ReplacingMergeTree(version) keeps the newest; read with FINAL (or the views below) to be exact
-- before merges. A person absorbed by an identity merge ends with status = 'merged'.
CREATE TABLE IF NOT EXISTS {db}.person_profiles
(
    tenant_id           LowCardinality(String),
    person_id           String,
    version             UInt64,
    status              LowCardinality(String),
    merged_into         String,
    lifecycle_stage     LowCardinality(String),
    lifecycle_stage_at  DateTime64(3, 'UTC'),
    first_seen          DateTime64(3, 'UTC'),
    last_seen           DateTime64(3, 'UTC'),
    events              UInt64,
    identifier_types    Array(LowCardinality(String)),
    channels            Array(LowCardinality(String)),
    funnel_stages       Map(LowCardinality(String), UInt64),
    max_funnel_stage    LowCardinality(String),
    campaigns           Array(String),
    campaigns_truncated UInt8,
    deals_won           UInt64,
    revenue_minor       Map(LowCardinality(String), Int64),
    revenue_total_minor Int64,
    tags                Array(String),
    tag_since           Array(DateTime64(3, 'UTC')),
    tag_expires_at      Array(Nullable(DateTime64(3, 'UTC'))),
    updated_at          DateTime64(3, 'UTC'),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, person_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per credit record. The sorting key ends in credit_id (a hash of tenant, deal, revision,
-- kind, model and touch), so a re-delivered record collapses and two distinct records never do;
-- every revision of a deal stays visible. sum(credit_minor) over all rows = the current
-- attribution (a revision retracts the previous one with negated rows).
CREATE TABLE IF NOT EXISTS {db}.attribution_credits
(
    tenant_id          LowCardinality(String),
    deal_id            String,
    revision           UInt32,
    credit_id          String,
    supersedes         Nullable(UInt32),
    kind               LowCardinality(String),
    reason             LowCardinality(String),
    model              LowCardinality(String),
    person_id          String,
    touch_index        Nullable(UInt32),
    touch_count        UInt32,
    touch_event_id     String,
    touch_at           Nullable(DateTime64(3, 'UTC')),
    channel            LowCardinality(String),
    campaign           String,
    credit_minor       Int64,
    deal_value_minor   Int64,
    currency           LowCardinality(String),
    currency_exponent  UInt8,
    deal_at            DateTime64(3, 'UTC'),
    lookback_ms        UInt64,
    attributed_at      DateTime64(3, 'UTC'),
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(deal_at)
ORDER BY (tenant_id, deal_id, revision, credit_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Costs from a cost feed file (streams/core/roi.py parse_cost_feed), summed per key before the
-- insert: loading a corrected feed for a day replaces that day's rows (the latest load wins).
CREATE TABLE IF NOT EXISTS {db}.campaign_costs
(
    tenant_id    LowCardinality(String),
    day          Date,
    channel      LowCardinality(String),
    campaign     String,
    currency     LowCardinality(String),
    cost_micros  Int64,
    source       String,
    loaded_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, channel, campaign, currency)
SETTINGS non_replicated_deduplication_window = 1000;

-- Profiles as they are now: the latest version of every person not merged away.
CREATE VIEW IF NOT EXISTS {db}.profiles_latest AS
SELECT * FROM {db}.person_profiles FINAL WHERE status = 'active';

-- RFM per tenant: 1-5 scores from the quintile boundaries of the tenant's profiles (recency =
-- last_seen, frequency = events, monetary = won revenue summed over currencies in minor units).
-- A score is 1 + how many boundaries the value exceeds (recency: later is better), so equal
-- values always get equal scores (many persons share 0 revenue). Refreshed every 10 minutes (a
-- scan over all profiles per query would be the alternative); SYSTEM REFRESH VIEW refreshes now.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.person_rfm
REFRESH EVERY 10 MINUTE
ENGINE = MergeTree ORDER BY (tenant_id, person_id)
AS
SELECT p.tenant_id AS tenant_id, p.person_id AS person_id,
       toUInt8(1 + arrayCount(b -> b < toUnixTimestamp64Milli(p.last_seen), q.r)) AS r_score,
       toUInt8(1 + arrayCount(b -> b < p.events, q.f)) AS f_score,
       toUInt8(1 + arrayCount(b -> b < p.revenue_total_minor, q.m)) AS m_score,
       concat(toString(r_score), toString(f_score), toString(m_score)) AS rfm,
       now64(3) AS computed_at
FROM {db}.profiles_latest AS p
INNER JOIN
(
    SELECT tenant_id,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(toUnixTimestamp64Milli(last_seen)) AS r,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(events) AS f,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(revenue_total_minor) AS m
    FROM {db}.profiles_latest
    GROUP BY tenant_id
) AS q ON p.tenant_id = q.tenant_id;

-- The profile with its RFM scores (0 until the first refresh after a person appears).
CREATE VIEW IF NOT EXISTS {db}.profiles_current AS
SELECT p.*, r.r_score AS r_score, r.f_score AS f_score, r.m_score AS m_score, r.rfm AS rfm
FROM {db}.profiles_latest AS p
LEFT JOIN {db}.person_rfm AS r ON p.tenant_id = r.tenant_id AND p.person_id = r.person_id;

-- Each deal's latest revision (its credits, no retractions): the attribution as it stands.
CREATE VIEW IF NOT EXISTS {db}.attribution_current AS
SELECT * FROM {db}.attribution_credits FINAL
WHERE kind = 'credit'
  AND (tenant_id, deal_id, revision) IN
      (SELECT tenant_id, deal_id, max(revision) FROM {db}.attribution_credits FINAL GROUP BY tenant_id, deal_id);

-- Attributed revenue per day of the deal, model, channel and campaign ('' = no touch).
CREATE VIEW IF NOT EXISTS {db}.attributed_revenue_daily AS
SELECT tenant_id, toDate(deal_at) AS day, model, channel, campaign, currency,
       any(currency_exponent) AS currency_exponent, sum(credit_minor) AS revenue_minor,
       uniqExact(deal_id) AS deals
FROM {db}.attribution_current
GROUP BY tenant_id, day, model, channel, campaign, currency;

-- What ad events say they cost: properties.cost = {"amount": 0.42, "currency": "EUR"} on
-- ad_impression / ad_click (the rules of streams/core/roi.py event_cost), per day.
CREATE VIEW IF NOT EXISTS {db}.ad_event_costs_daily AS
SELECT tenant_id, toDate(occurred_at) AS day, channel, campaign_name AS campaign,
       JSONExtractString(properties, 'cost', 'currency') AS currency,
       sum(toInt64(round(JSONExtractFloat(properties, 'cost', 'amount') * 1000000))) AS cost_micros
FROM {db}.touchpoints FINAL
WHERE type IN ('ad_impression', 'ad_click')
  AND match(JSONExtractString(properties, 'cost', 'currency'), '^[A-Z]{3}$')
  AND JSONExtractFloat(properties, 'cost', 'amount') >= 0
GROUP BY tenant_id, day, channel, campaign, currency;

-- All costs per day: the cost feed, and ad-event costs for the (tenant, day, campaign) the feed
-- does not cover (a campaign with both would otherwise be paid twice).
CREATE VIEW IF NOT EXISTS {db}.campaign_costs_daily AS
SELECT tenant_id, day, channel, campaign, currency, sum(cost_micros) AS cost_micros, 'feed' AS source
FROM {db}.campaign_costs FINAL
GROUP BY tenant_id, day, channel, campaign, currency
UNION ALL
SELECT tenant_id, day, channel, campaign, currency, cost_micros, 'events' AS source
FROM {db}.ad_event_costs_daily
WHERE (tenant_id, day, campaign) NOT IN (SELECT tenant_id, day, campaign FROM {db}.campaign_costs FINAL);

-- ROI per campaign and per channel, all time, for every model: attributed revenue against cost
-- (same currency). roas = revenue / cost, roi = (revenue - cost) / cost; NULL without cost. (Cost
-- rows carry exponent 0: max() takes the revenue's; a campaign without revenue has revenue 0
-- either way.) Revenue is by the touch's channel and campaign, cost by the ad event's or feed's.
-- One computation for both dimensions; the two views below name the column.
CREATE VIEW IF NOT EXISTS {db}.roi_by_dimension AS
SELECT tenant_id, model, dimension, value, currency,
       revenue_minor, currency_exponent, deals, cost_micros,
       revenue_minor / pow(10, currency_exponent) AS revenue,
       cost_micros / 1000000 AS cost,
       if(cost_micros > 0, revenue / cost, NULL) AS roas,
       if(cost_micros > 0, (revenue - cost) / cost, NULL) AS roi
FROM
(
    SELECT tenant_id, model, dim.1 AS dimension, dim.2 AS value, currency,
           sum(revenue_minor) AS revenue_minor, max(currency_exponent) AS currency_exponent,
           sum(deals) AS deals, sum(cost_micros) AS cost_micros
    FROM
    (
        SELECT tenant_id, model, toString(campaign) AS campaign, toString(channel) AS channel, currency,
               revenue_minor, currency_exponent, deals, toInt64(0) AS cost_micros
        FROM {db}.attributed_revenue_daily
        UNION ALL
        SELECT tenant_id, model, toString(campaign), toString(channel), currency, toInt64(0), toUInt8(0),
               toUInt64(0), cost_micros
        FROM {db}.campaign_costs_daily
        ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'] AS model
    )
    ARRAY JOIN [('campaign', campaign), ('channel', channel)] AS dim
    GROUP BY tenant_id, model, dimension, value, currency
);

CREATE VIEW IF NOT EXISTS {db}.roi_by_campaign AS
SELECT tenant_id, model, value AS campaign, currency, revenue_minor, currency_exponent, deals, cost_micros,
       revenue, cost, roas, roi
FROM {db}.roi_by_dimension WHERE dimension = 'campaign';

CREATE VIEW IF NOT EXISTS {db}.roi_by_channel AS
SELECT tenant_id, model, value AS channel, currency, revenue_minor, currency_exponent, deals, cost_micros,
       revenue, cost, roas, roi
FROM {db}.roi_by_dimension WHERE dimension = 'channel';

-- The stage conversion chain per campaign: of the persons a campaign touched (the campaigns on
-- their current profile), how many reached each funnel stage or a later one. Rates and their
-- product: streams/core/roi.py conversion_chain.
CREATE VIEW IF NOT EXISTS {db}.campaign_conversion_chain AS
SELECT tenant_id, campaign,
       countIf(s >= 1) AS impression, countIf(s >= 2) AS click, countIf(s >= 3) AS visit,
       countIf(s >= 4) AS interaction, countIf(s >= 5) AS lead, countIf(s >= 6) AS opportunity,
       countIf(s >= 7) AS deal
FROM
(
    SELECT tenant_id, arrayJoin(campaigns) AS campaign,
           indexOf(['impression', 'click', 'visit', 'interaction', 'lead', 'opportunity', 'deal'],
                   max_funnel_stage) AS s
    FROM {db}.profiles_latest
)
GROUP BY tenant_id, campaign;
