"""The thin Faust shell: topics, agents that route, state persistence, the ClickHouse sink.

Where a touchpoint goes (each arrow is a Kafka topic):
``touchpoints.raw`` → :mod:`streams.app.validate` → ``touchpoints.valid`` (keyed by tenant)
→ :mod:`streams.app.process` (the core :class:`streams.core.pipeline.Pipeline`) →
``touchpoints.enriched`` (keyed by person), ``identity.merges``, ``sessions.closed``,
``sla.events``, ``sla.response_times``, ``funnel.live``, ``funnel.anomalies`` →
:mod:`streams.app.sink` → ClickHouse tables.
"""
