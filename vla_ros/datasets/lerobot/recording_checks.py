"""Checks of what a recorder is given: names, camera sizes, frames, and the features of a dataset it appends to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_ros.datasets.lerobot.layout import IMAGES_PREFIX, DatasetError


def _check_names(label: str, names: Sequence[str]) -> list[str]:
    names = list(names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{label} must be a non-empty list of non-empty strings, got {names!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{label} has duplicates: {duplicates}")
    return names


def _check_cameras(cameras: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    checked = {}
    for name, size in cameras.items():
        if not name or "/" in name or name.startswith(IMAGES_PREFIX):
            raise DatasetError(
                f"camera name {name!r}: use a short name like 'front' (stored as "
                f"'{IMAGES_PREFIX}front'); LeRobot forbids '/' in feature names"
            )
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise DatasetError(f"camera {name!r}: size must be (height, width) in pixels, got {size!r}")
        checked[name] = (int(size[0]), int(size[1]))
    return checked


def _check_vector(label: str, values: np.ndarray, size: int) -> np.ndarray:
    row = np.asarray(values, dtype=np.float32)
    if row.shape != (size,):
        raise DatasetError(f"{label} has shape {row.shape}, the dataset's {label} has {size} values")
    if not np.all(np.isfinite(row)):
        raise DatasetError(f"{label} has non-finite values: {row.tolist()}")
    return row


def _check_image(name: str, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (*size, 3):
        raise DatasetError(f"camera {name!r}: image is {image.dtype} {image.shape}, expected uint8 {(*size, 3)} (RGB)")
    return np.array(image, order="C", copy=True)  # the caller may reuse its buffer while the sink still queues it


def _feature_differences(existing: dict[str, dict], expected: dict[str, dict]) -> list[str]:
    problems = []
    for key in expected.keys() - existing.keys():
        problems.append(f"the dataset has no feature {key}")
    for key in existing.keys() - expected.keys():
        problems.append(f"the dataset has a feature {key} this recorder does not write")
    for key in expected.keys() & existing.keys():
        for attribute in ("dtype", "shape", "names"):
            have, want = existing[key].get(attribute), expected[key].get(attribute)
            if attribute == "shape":
                have, want = list(have or []), list(want)
            if have != want:
                problems.append(f"{key} {attribute}: dataset {have}, recorder {want}")
    return sorted(problems)
