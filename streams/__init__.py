"""touchstream: real-time touchpoint stream processing (identity, sessions, SLAs, funnel anomalies)."""

__version__ = "0.1.0"
