"""Per-stage conversion and volume anomaly detection over closed funnel windows.

Modules, one concern each: ``config`` (every default and its reason), ``seasonality``
(hour-of-day/week factors), ``baseline`` (level, trend, overdispersion, serial correlation),
``evidence`` (likelihood ratios and the graded per-window score), ``incidents`` (CUSUM and the
open/resolve state machine, one series one window), ``attribution`` (the culprit dimension, holds),
``impact`` (lost conversions), ``detector`` (the facade over a tenant's funnel rows) and ``series``
(one stand-alone series through the same model, for evaluation on labelled real data).
"""

from streams.core.anomaly.config import DetectorConfig
from streams.core.anomaly.detector import AnomalyDetector, anomaly_id
from streams.core.anomaly.series import SeriesDetector

__all__ = ["AnomalyDetector", "DetectorConfig", "SeriesDetector", "anomaly_id"]
