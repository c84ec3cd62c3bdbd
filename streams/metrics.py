"""Prometheus metrics, defined once; the shell increments them, the web server exposes them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("touchstream_events_in_total", "Messages consumed, by topic", ["topic"])
EVENTS_OUT = Counter("touchstream_events_out_total", "Messages produced, by topic", ["topic"])
DLQ = Counter("touchstream_dlq_total", "Messages dead-lettered, by reason", ["reason"])
DUPLICATES = Counter("touchstream_duplicates_total", "Events dropped as duplicate event_id within the window")
LATE = Counter("touchstream_late_events_total", "Events later than the allowed lateness, by consumer", ["kind"])
STATE_WRITES = Counter("touchstream_state_changelog_writes_total", "Keys written to the state changelog")
STATE_RESTORED = Counter("touchstream_state_restored_records_total", "Changelog records read by bulk restores")
TASKS_ACTIVATED = Counter(
    "touchstream_tasks_activated_total",
    "Stream tasks that went live after an assignment: reused (parked with its state, changelog untouched) "
    "or restored (state read from the changelog)", ["how"],
)
STATE_RESTORE_SECONDS = Histogram(
    "touchstream_state_restore_seconds", "Duration of a bulk restore of newly assigned state partitions",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PROCESS_LATENCY = Histogram(
    "touchstream_event_latency_seconds",
    "occurred_at → enriched produced (event time lag, includes producer-side delay)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
APPEND_LATENCY = Histogram(
    "touchstream_append_to_processed_seconds",
    "Kafka append timestamp of touchpoints.raw → validated (pipeline-internal latency)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPEN_SESSIONS = Gauge("touchstream_open_sessions", "Sessions open in this worker")
OPEN_WAITS = Gauge("touchstream_sla_open_waits", "Customer messages waiting for a reply")
OLDEST_WAIT = Gauge("touchstream_sla_oldest_wait_age_seconds", "Age of the oldest open wait")
SLA_EVENTS = Counter(
    "touchstream_sla_events_total", "SLA warnings, breaches, resolutions", ["event", "channel", "team"]
)
RESPONSE_TIME = Histogram(
    "touchstream_response_time_seconds",
    "Reply response time (business seconds), by channel and team",
    ["channel", "team"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400),
)
OPEN_ANOMALIES = Gauge("touchstream_open_anomalies", "Open funnel anomaly incidents")
SINK_ROWS = Counter("touchstream_sink_rows_total", "Rows inserted into ClickHouse, by table", ["table"])
SINK_BATCH = Histogram(
    "touchstream_sink_batch_rows", "Rows per ClickHouse insert", ["table"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
SINK_ERRORS = Counter("touchstream_sink_errors_total", "Failed ClickHouse inserts (retried), by table", ["table"])
SINK_RETRIES = Counter("touchstream_sink_retries_total", "ClickHouse insert retries, by table", ["table"])
PAGES = Counter("touchstream_pages_total", "SLA pages delivered to notifiers, by outcome", ["outcome"])
PRODUCE_RETRIES = Counter("touchstream_produce_retries_total", "Output batches re-sent after a Kafka produce error")
# Committed-offset lag of every consumer group the worker runs (validate, process, each sink table,
# pages), per topic and partition it owns; read by deploy/prometheus/alerts.yml and the ops dashboard.
CONSUMER_LAG = Gauge(
    "touchstream_consumer_lag_messages", "Consumer group lag (end offset - committed offset)",
    ["group", "topic", "partition"],
)
BROKER_REACHABLE = Gauge(
    "touchstream_broker_reachable", "1 while the worker's last cluster metadata request succeeded, else 0"
)
COMMIT_FAILURES = Counter(
    "touchstream_commit_failures_total",
    "Offset commits refused because the group had moved on (a stateless stage's batch is read again; "
    "the stateful stage's position is in its changelog)",
    ["stage"],
)
LOOP_LAG = Histogram(
    "touchstream_event_loop_lag_seconds",
    "How late a 50 ms sleep on the worker's event loop wakes up: any stall (a long batch, a clock "
    "tick, a GIL-holding insert, a GC pause) delays every event behind it by this much",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SECONDS = Histogram(
    "touchstream_batch_seconds", "Time to handle one batch, by stage (held under the stage's lock)", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
CLOCK_TICK_SECONDS = Histogram(
    "touchstream_clock_tick_seconds",
    "Time of one clock tick of the process stage (full: watermarks, idle tenants, sessions to close; "
    "timers: due SLA deadlines only); the batch loop waits meanwhile", ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_FULL_SECONDS = Histogram(
    "touchstream_gc_full_collection_seconds", "Pause of the worker's periodic (10 min) full garbage collection",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
GC_SECONDS = Counter(
    "touchstream_gc_seconds", "Time the worker spent in Python's cyclic garbage collector, by generation",
    ["generation"],
)
