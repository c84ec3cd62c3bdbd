"""ClickHouse access: one client per process, versioned migrations, batched idempotent sinks."""
