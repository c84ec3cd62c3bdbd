"""NAB (Numenta Anomaly Benchmark) scoring, written from NAB's published rules.

Why in the project: the funnel alarms are only trusted if they are right on real traffic, and NAB
is the field's yardstick for streaming anomaly detectors (a published scoreboard on labelled real
series). :mod:`.scoring` holds the rules (windows, probationary period, scaled sigmoid, cost
profiles, threshold optimisation, normalisation against the null and perfect detectors);
:mod:`.corpus` reads NAB's files. ``tests/unit/devtools/test_nab_scoring.py`` checks that the rules
reproduce NAB's published per-file scores of several detectors from their per-row outputs.
"""
