"""The functional core: deterministic, no I/O, time passed in explicitly.

Everything here runs the same offline (a file replayed in event time) and live (inside
Faust agents). State lives in :class:`streams.core.state.Store` objects whose values are
JSON-able, so the shell can persist them through a Faust table changelog without
per-component codecs.
"""
