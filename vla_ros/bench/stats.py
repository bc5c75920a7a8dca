"""Summaries of timing samples, one format for every figure vla_ros prints, and how a bench reports them (and
reads its comma-separated options)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def report_json(results: dict, path: Path | None) -> None:
    """Print a bench's results as JSON, and write the same text to `path` when one is given."""
    text = json.dumps(results, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(f"json: {path}", file=sys.stderr)


def save_figure(fig, path: Path, *, dpi: int) -> Path:
    """Lay out a bench's matplotlib figure, write it to `path` (making its folder) and free it; returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def summarize_ms(values_ms) -> dict:
    """{mean, p50, p99, max, count} of samples in milliseconds; zeros when there are none."""
    if len(values_ms) == 0:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    array = np.asarray(values_ms, dtype=np.float64)
    return {"mean": round(float(array.mean()), 4), "p50": round(float(np.percentile(array, 50)), 4),
            "p99": round(float(np.percentile(array, 99)), 4), "max": round(float(array.max()), 4),
            "count": int(array.size)}


def progress_bar(total: int, *, disabled: bool):
    """A tqdm bar of episodes on stderr (stdout carries the results)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", disable=disabled, file=sys.stderr)


