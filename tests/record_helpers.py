"""Comparing metric records across the paths that write them (a probe job, a study cell, a
pretraining job that probes its run)."""


def without_timings(obj):
    """A record (or list, or any JSON value) less its "seconds": the probe's wall time, the only
    field two runs of the same probe may differ in."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj
