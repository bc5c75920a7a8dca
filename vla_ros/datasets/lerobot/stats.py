"""Feature statistics as LeRobot computes them (min, max, mean, std, count, quantiles), per episode and aggregated."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's DEFAULT_QUANTILES


_STATS_MIN_SIDE = 300  # LeRobot subsamples images for stats when their larger side reaches 300 px ...


_STATS_TARGET_SIDE = 150  # ... to about 150 px


def _array_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one feature over an episode's frames: values (T,) or (T, D); per dimension, count = T."""
    frames = values.reshape(len(values), -1)
    wide = frames.astype(np.float64)
    stats = {
        "min": frames.min(axis=0),  # min and max keep the feature's dtype, as in LeRobot's files
        "max": frames.max(axis=0),
        "mean": wide.mean(axis=0),
        "std": wide.std(axis=0),
        "count": np.array([len(frames)]),
    }
    quantiles = np.quantile(wide, list(QUANTILES.values()), axis=0)
    stats.update(zip(QUANTILES, quantiles, strict=True))
    return stats


def _stats_stride(height: int, width: int) -> int:
    """LeRobot's spatial subsampling of images for stats (auto_downsample_height_width)."""
    if max(height, width) < _STATS_MIN_SIDE:
        return 1
    return max(1, (width if width > height else height) // _STATS_TARGET_SIDE)


class _PixelStats:
    """Per-channel histograms of an episode's frames; exact min, max, mean, std and quantiles in [0, 1]."""

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        step = _stats_stride(*image.shape[:2])
        pixels = image[::step, ::step].reshape(-1, 3).astype(np.intp)
        pixels += np.array([0, 256, 512])  # one bincount for all three channels
        self.histogram += np.bincount(pixels.ravel(), minlength=768).reshape(3, 256)
        self.frames += 1

    def stats(self) -> dict[str, np.ndarray]:
        levels = np.arange(256, dtype=np.float64)
        counts = self.histogram.sum(axis=1)
        mean = (self.histogram * levels).sum(axis=1) / counts
        variance = (self.histogram * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / counts
        present = self.histogram > 0
        cumulative = np.cumsum(self.histogram, axis=1)
        stats = {
            "min": present.argmax(axis=1).astype(np.float64),
            "max": 255.0 - present[:, ::-1].argmax(axis=1),
            "mean": mean,
            "std": np.sqrt(variance),
        }
        for key, q in QUANTILES.items():
            stats[key] = np.array([_histogram_quantile(cumulative[c], q) for c in range(3)])
        result = {key: (value / 255.0).reshape(3, 1, 1) for key, value in stats.items()}
        result["count"] = np.array([self.frames])
        return result


def _histogram_quantile(cumulative: np.ndarray, q: float) -> float:
    """np.quantile's linear interpolation, for the values a cumulative histogram of levels 0..255 describes."""
    total = int(cumulative[-1])
    position = q * (total - 1)
    below = math.floor(position)
    low = int(np.searchsorted(cumulative, below, side="right"))
    high = int(np.searchsorted(cumulative, min(below + 1, total - 1), side="right"))
    return low + (position - below) * (high - low)


def aggregate_stats(stats_list: Sequence[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode (or per-dataset) stats the way LeRobot's aggregate_stats does.

    Means and variances are combined exactly (count-weighted, with the spread of the means); min and max
    elementwise; quantiles as count-weighted means of the parts' quantiles (LeRobot's approximation).
    """
    combined: dict[str, dict[str, np.ndarray]] = {}
    features = list(dict.fromkeys(key for stats in stats_list for key in stats))
    for feature in features:
        parts = [stats[feature] for stats in stats_list if feature in stats]
        counts = np.array([int(np.asarray(part["count"]).reshape(-1)[0]) for part in parts], dtype=np.float64)
        total = counts.sum()

        def weighted(key: str, parts=parts, counts=counts, total=total) -> np.ndarray:
            values = np.stack([np.asarray(part[key], dtype=np.float64) for part in parts])
            weights = counts.reshape(-1, *([1] * (values.ndim - 1)))
            return (values * weights).sum(axis=0) / total

        mean = weighted("mean")
        spread = np.stack(
            [np.asarray(p["std"], dtype=np.float64) ** 2 + (np.asarray(p["mean"]) - mean) ** 2 for p in parts]
        )
        variance = (spread * counts.reshape(-1, *([1] * (spread.ndim - 1)))).sum(axis=0) / total
        result = {
            "min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
            "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": np.array([int(total)]),
        }
        for key in QUANTILES:
            if all(key in part for part in parts):
                result[key] = weighted(key)
        combined[feature] = result
    return combined


def _stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {feature: {key: np.asarray(value).tolist() for key, value in ft.items()} for feature, ft in stats.items()}


def _stats_from_json(data: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    return {feature: {key: np.asarray(value) for key, value in ft.items()} for feature, ft in data.items()}


def _stats_from_episode_row(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    stats: dict[str, dict[str, np.ndarray]] = {}
    for column, value in row.items():
        if column.startswith("stats/") and value is not None:
            feature, key = column[len("stats/") :].rsplit("/", 1)
            stats.setdefault(feature, {})[key] = np.asarray(value)
    return stats


def _load_stats(path: Path) -> dict[str, dict[str, np.ndarray]] | None:
    return _stats_from_json(json.loads(path.read_text())) if path.is_file() else None
