"""Checking a LeRobot v3.0 dataset against the format, the robot's joints and cameras, and its own files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.datasets.lerobot.layout import (
    ACTION,
    CODEBASE_VERSION,
    EPISODES_DIR,
    INDEX_FEATURES,
    INFO_PATH,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    DatasetError,
    _camera_key,
    _episode_files,
    _pyarrow,
    _read_episode_rows,
    _read_tasks,
)
from vla_ros.datasets.lerobot.stats import _load_stats
from vla_ros.datasets.lerobot.video import count_video_frames

REQUIRED_INFO_KEYS = (
    "codebase_version",
    "fps",
    "features",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_path",
)


REQUIRED_FEATURES = (STATE, ACTION, *INDEX_FEATURES)


REQUIRED_EPISODE_COLUMNS = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
)


def validate_dataset(
    root: Path | str,
    *,
    joint_names: Sequence[str] | None = None,
    camera_keys: Iterable[str] | None = None,
    check_videos: bool = True,
) -> None:
    """Check that `root` is a complete LeRobot v3.0 dataset a robot with these joints and cameras can use.

    joint_names: the robot's joints, which observation.state and action must name in the same order.
    camera_keys: cameras the policy needs ("front" or "observation.images.front").
    check_videos: also count every video's frames (one short ffmpeg run per video file).
    Raises DatasetError listing every problem found (`.problems`), each naming the file, feature or episode.
    """
    root = Path(root)
    problems: list[str] = []

    def fail() -> DatasetError:
        return DatasetError(
            f"{root} is not a usable LeRobot {CODEBASE_VERSION} dataset:\n  - " + "\n  - ".join(problems), problems
        )

    if not root.is_dir():
        problems.append(f"{root} does not exist or is not a folder")
        raise fail()
    info_path = root / INFO_PATH
    if not info_path.is_file():
        problems.append(f"{INFO_PATH} is missing")
        raise fail()
    try:
        info = json.loads(info_path.read_text())
    except ValueError as exc:
        problems.append(f"{INFO_PATH} is not valid JSON ({exc})")
        raise fail() from exc
    version = info.get("codebase_version")
    if version is not None and version != CODEBASE_VERSION:
        problems.append(
            f"{INFO_PATH}: codebase_version is {version!r}, expected {CODEBASE_VERSION!r}"
            + (
                " (convert it with LeRobot's lerobot/datasets/v30/convert_dataset_v21_to_v30.py)"
                if str(version).startswith("v2")
                else ""
            )
        )
        raise fail()
    missing_keys = [key for key in REQUIRED_INFO_KEYS if key not in info]
    if missing_keys:
        problems.append(f"{INFO_PATH} lacks the keys {', '.join(missing_keys)}")
    features: dict[str, dict[str, Any]] = info.get("features") or {}
    missing_features = [key for key in REQUIRED_FEATURES if key not in features]
    if missing_features:
        problems.append(f"{INFO_PATH}: features lack {', '.join(missing_features)}")
    for key, ft in features.items():
        lacking = [attribute for attribute in ("dtype", "shape") if attribute not in ft]
        if lacking:
            problems.append(f"{INFO_PATH}: feature {key} has no {' or '.join(lacking)}")
    video_keys = [key for key, ft in features.items() if ft.get("dtype") == "video"]
    if video_keys and not info.get("video_path"):
        problems.append(f"{INFO_PATH}: video features {video_keys} but no video_path")

    if joint_names is not None:
        for key in (STATE, ACTION):
            if key in features:
                problems += _name_problems(key, features[key].get("names"), list(joint_names))
    if camera_keys is not None:
        cameras = [key for key, ft in features.items() if ft.get("dtype") in ("video", "image")]
        for camera in camera_keys:
            if _camera_key(camera) not in cameras:
                problems.append(
                    f"camera {_camera_key(camera)} is not in the dataset; it has "
                    f"{', '.join(cameras) if cameras else 'no cameras'}"
                )

    for path in (TASKS_PATH, STATS_PATH):
        if not (root / path).is_file():
            problems.append(f"{path} is missing")
    if not _episode_files(root):
        problems.append(f"{EPISODES_DIR}/chunk-*/file-*.parquet is missing (no episode metadata)")
    if problems and (missing_keys or missing_features or not _episode_files(root)):
        raise fail()  # what follows needs these

    tasks = stats = None
    try:
        tasks = _read_tasks(root) if (root / TASKS_PATH).is_file() else None
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is reported the same way
        problems.append(f"{TASKS_PATH} cannot be read ({exc})")
    try:
        stats = _load_stats(root / STATS_PATH)
    except ValueError as exc:
        problems.append(f"{STATS_PATH} is not valid JSON ({exc})")
    if stats is not None:
        for key in (STATE, ACTION, *[k for k, ft in features.items() if ft.get("dtype") in ("video", "image")]):
            if key in features and key not in stats:
                problems.append(f"{STATS_PATH} has no stats for {key} (policies normalise with them)")

    try:
        rows = _read_episode_rows(root, with_stats=False)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{EPISODES_DIR} cannot be read ({exc})")
        raise fail() from exc
    total = int(info["total_episodes"])
    if total == 0:
        problems.append("the dataset has no episodes")
    lacking_columns = sorted({c for row in rows for c in REQUIRED_EPISODE_COLUMNS if c not in row})
    for key in video_keys:
        lacking_columns += [
            f"videos/{key}/{c}"
            for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
            if any(f"videos/{key}/{c}" not in r for r in rows)
        ]
    if lacking_columns:
        problems.append(f"{EPISODES_DIR}: columns missing: {', '.join(lacking_columns)}")
        raise fail()
    if len(rows) < total:
        problems.append(f"{INFO_PATH} counts {total} episodes, {EPISODES_DIR} has {len(rows)}")
    rows = rows[:total]

    expected_from = 0
    for position, row in enumerate(rows):
        index, length = row["episode_index"], row["length"]
        if index != position:
            problems.append(f"{EPISODES_DIR}: episode_index {index} where {position} was expected")
        if length <= 0:
            problems.append(f"episode {index} is empty (length {length})")
        if row["dataset_from_index"] != expected_from or row["dataset_to_index"] - row["dataset_from_index"] != length:
            problems.append(
                f"episode {index}: frames {row['dataset_from_index']}..{row['dataset_to_index']} do not "
                f"follow the previous episode ({expected_from}) with its length {length}"
            )
        expected_from = row["dataset_from_index"] + max(length, 0)
        if tasks is not None and any(task not in tasks for task in row["tasks"] or []):
            problems.append(f"episode {index}: task {row['tasks']} is not in {TASKS_PATH}")
    if sum(row["length"] for row in rows) != info["total_frames"]:
        problems.append(
            f"{INFO_PATH}: total_frames is {info['total_frames']}, the episodes have "
            f"{sum(row['length'] for row in rows)} frames"
        )

    problems += _data_problems(root, info, rows)
    if check_videos and info.get("video_path"):
        problems += _video_problems(root, info, rows, video_keys)
    if problems:
        raise fail()


def _name_problems(key: str, names: list[str] | None, joints: list[str]) -> list[str]:
    if names is None:
        return [f"{key} has no names, so it cannot be matched to the robot's joints {joints}"]
    names = list(names)
    if names == joints:
        return []
    missing = [joint for joint in joints if joint not in names]
    extra = [name for name in names if name not in joints]
    if not missing and not extra:
        return [f"{key} names the robot's joints in another order: dataset {names}, robot {joints}"]
    parts = []
    if missing:
        parts.append(f"robot joints missing from the dataset: {missing}")
    if extra:
        parts.append(f"dataset names the robot does not have: {extra}")
    return [f"{key} names do not match the robot's joints ({'; '.join(parts)})"]


def _data_problems(root: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    _, pq = _pyarrow()
    problems = []
    by_file: dict[Path, list[dict[str, Any]]] = {}
    for row in rows:
        path = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        by_file.setdefault(path, []).append(row)
    for path, file_rows in by_file.items():
        relative = path.relative_to(root)
        episodes = ", ".join(str(row["episode_index"]) for row in file_rows)
        if not path.is_file():
            problems.append(f"data file {relative} (episode {episodes}) is missing")
            continue
        try:
            episode_column = pq.read_table(path, columns=["episode_index"]).column("episode_index").to_numpy()
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
            problems.append(f"data file {relative} cannot be read ({exc})")
            continue
        counts = dict(zip(*np.unique(episode_column, return_counts=True), strict=True))
        for row in file_rows:
            found = int(counts.get(row["episode_index"], 0))
            if found != row["length"]:
                problems.append(
                    f"frame count mismatch: episode {row['episode_index']} has {found} rows in "
                    f"{relative}, {EPISODES_DIR} says {row['length']}"
                )
    return problems


def _video_problems(root: Path, info: dict[str, Any], rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    problems = []
    fps = info["fps"]
    counted: dict[Path, int | None] = {}
    for key in keys:
        for row in rows:
            index = row["episode_index"]
            path = root / info["video_path"].format(
                video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
            )
            relative = path.relative_to(root)
            if not path.is_file():
                problems.append(f"video file {relative} (episode {index}, {key}) is missing")
                continue
            if path not in counted:
                try:
                    counted[path] = count_video_frames(path)
                except DatasetError as exc:
                    problems.append(str(exc))
                    counted[path] = None
            frames = counted[path]
            if frames is None:
                continue
            first = round(row[f"videos/{key}/from_timestamp"] * fps)
            last = round(row[f"videos/{key}/to_timestamp"] * fps)
            if last - first != row["length"]:
                problems.append(
                    f"frame count mismatch: episode {index} spans {last - first} frames of {relative} "
                    f"({key}), its length is {row['length']}"
                )
            elif frames < last:
                problems.append(
                    f"frame count mismatch: {relative} has {frames} frames, episode {index} ({key}) needs "
                    f"frames {first}..{last - 1}"
                )
    return problems
