"""Developer tools: the simulated feed, the benchmark, detector evaluation.

Nothing under ``streams.app``, ``streams.runtime`` or ``streams.core`` imports this package:
the worker's import path stays free of them (``touchstream run`` imports the simulator lazily
for its feed)."""
