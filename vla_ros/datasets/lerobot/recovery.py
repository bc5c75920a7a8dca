"""Re-opening a dataset whose last save was interrupted: info.json, written last, says which episodes were
committed; what was written after them is removed, and the next episode's files are found."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.datasets.lerobot.durable import _write_json, _write_parquet
from vla_ros.datasets.lerobot.layout import (
    CHUNKS_SIZE,
    STATS_PATH,
    TASKS_PATH,
    DatasetError,
    _chunk_file_of,
    _episode_files,
    _episode_rows_table,
    _next_file,
    _read_episode_rows,
    _read_tasks,
    _tasks_table,
)
from vla_ros.datasets.lerobot.stats import _load_stats, _stats_from_episode_row, _stats_to_json, aggregate_stats

logger = logging.getLogger(__name__)


@dataclass
class _AppendPoint:
    """What the next saved episode builds on: the dataset's tasks and stats, and the next free files."""

    tasks: list[str]
    stats: dict[str, dict[str, np.ndarray]] | None
    next_data_file: tuple[int, int]
    next_video_file: dict[str, tuple[int, int]]
    episodes_file: tuple[int, int]


def _recover_interrupted_save(root: Path, info: dict[str, Any], video_keys: list[str]) -> _AppendPoint:
    """Undo what an interrupted save left behind: info.json's totals say which episodes were committed.

    video_keys: the camera features stored as video (their mp4 files are checked for orphans)."""
    committed = int(info["total_episodes"])
    rows = _read_episode_rows(root, with_stats=True)
    if len(rows) < committed or [row["episode_index"] for row in rows[:committed]] != list(range(committed)):
        raise DatasetError(
            f"{root}: meta/episodes does not hold episodes 0..{committed - 1} that "
            f"info.json counts; the dataset is damaged (check it with validate_dataset)"
        )
    repaired = False
    for path in sorted({row["_file"] for row in rows[committed:]}):
        kept = [row for row in rows[:committed] if row["_file"] == path]
        if kept:
            _write_parquet(path, _episode_rows_table(kept))
        else:
            path.unlink()
        repaired = True
    rows = rows[:committed]
    if sum(row["length"] for row in rows) != info["total_frames"]:
        raise DatasetError(
            f"{root}: the episode lengths do not add up to info.json's total_frames; "
            f"the dataset is damaged (check it with validate_dataset)"
        )

    tasks = _read_tasks(root) if (root / TASKS_PATH).is_file() else []
    if len(tasks) > info["total_tasks"]:
        tasks = tasks[: info["total_tasks"]]
        _write_parquet(root / TASKS_PATH, _tasks_table(tasks))
        repaired = True

    def last(columns: tuple[str, str]) -> tuple[int, int] | None:
        indices = [(row[columns[0]], row[columns[1]]) for row in rows if row.get(columns[0]) is not None]
        return max(indices) if indices else None

    chunks_size = int(info.get("chunks_size", CHUNKS_SIZE))
    last_data = last(("data/chunk_index", "data/file_index"))
    referenced = {
        root / info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
        for r in rows
    }
    repaired |= _remove_orphans(root / "data", last_data, referenced)
    next_data_file = _next_file(last_data, chunks_size) if last_data else (0, 0)
    next_video_file = {}
    for key in video_keys:
        columns = (f"videos/{key}/chunk_index", f"videos/{key}/file_index")
        last_video = last(columns)
        referenced = {
            root / info["video_path"].format(video_key=key, chunk_index=r[columns[0]], file_index=r[columns[1]])
            for r in rows
        }
        repaired |= _remove_orphans(root / "videos" / key, last_video, referenced)
        next_video_file[key] = _next_file(last_video, chunks_size) if last_video else (0, 0)

    episode_files = [_chunk_file_of(path) for path in _episode_files(root)]
    episode_files = [index for index in episode_files if index is not None]
    episodes_file = _next_file(max(episode_files), chunks_size) if episode_files else (0, 0)

    stats_path = root / STATS_PATH
    if repaired:
        logger.warning("%s: removed what an interrupted save left behind; %d saved episodes kept", root, committed)
        episode_stats = [_stats_from_episode_row(row) for row in rows]
        if rows and all(episode_stats):
            stats = aggregate_stats(episode_stats)
            _write_json(stats_path, _stats_to_json(stats))
        elif not rows:
            stats_path.unlink(missing_ok=True)
            stats = None
        else:
            stats = _load_stats(stats_path)
    else:
        stats = _load_stats(stats_path)
    return _AppendPoint(
        tasks=tasks,
        stats=stats,
        next_data_file=next_data_file,
        next_video_file=next_video_file,
        episodes_file=episodes_file,
    )


def _remove_orphans(folder: Path, last_referenced: tuple[int, int] | None, referenced: set[Path]) -> bool:
    """Delete files an interrupted save wrote after the last committed one; True if any."""
    removed = False
    for path in sorted(folder.glob("chunk-*/file-*.*")):
        index = _chunk_file_of(path)
        if index is not None and path not in referenced and (last_referenced is None or index > last_referenced):
            path.unlink()
            removed = True
    return removed
