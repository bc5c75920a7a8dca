"""Summaries of timing samples, one format for every figure vla_ros prints."""

from __future__ import annotations

import numpy as np


def summarize_ms(values_ms) -> dict:
    """{mean, p50, p99, max, count} of samples in milliseconds; zeros when there are none."""
    if len(values_ms) == 0:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    array = np.asarray(values_ms, dtype=np.float64)
    return {"mean": round(float(array.mean()), 4), "p50": round(float(np.percentile(array, 50)), 4),
            "p99": round(float(np.percentile(array, 99)), 4), "max": round(float(array.max()), 4),
            "count": int(array.size)}
