"""Reading a LeRobot v3.0 dataset back: episodes, frames, decoded camera video."""

from __future__ import annotations

import bisect
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.datasets.lerobot.layout import (
    ACTION,
    CODEBASE_VERSION,
    EPISODES_DIR,
    INFO_PATH,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    DatasetError,
    _camera_key,
    _pyarrow,
    _read_episode_rows,
    _read_tasks,
)
from vla_ros.datasets.lerobot.stats import _load_stats
from vla_ros.datasets.lerobot.video import decode_video


@dataclass(frozen=True)
class EpisodeInfo:
    """Where an episode is: its rows of the data file and its span of each camera's video."""

    index: int
    tasks: list[str]
    length: int
    from_index: int  # global index of its first frame (dataset_from_index)
    data_file: Path
    videos: dict[str, tuple[Path, float]]  # camera key -> (mp4, timestamp of the episode's first frame in it)

    @property
    def task(self) -> str:
        return self.tasks[0] if self.tasks else ""


@dataclass
class Episode:
    """An episode's per-frame values (everything but images)."""

    index: int
    task: str
    state: np.ndarray  # (T, state_dim) float32
    action: np.ndarray  # (T, action_dim) float32
    timestamp: np.ndarray  # (T,) float32, seconds since the episode start
    frame_index: np.ndarray  # (T,) int64
    task_index: np.ndarray  # (T,) int64

    def __len__(self) -> int:
        return len(self.state)


class LeRobotDatasetReader:
    """A LeRobot v3.0 dataset on disk: metadata, per-episode arrays and decoded camera frames.

    dataset[i] is frame i (global index) as a dict, like LeRobotDataset's items but with numpy arrays and
    (H, W, 3) uint8 images; episode_frames() decodes a whole episode's video at once, for training.
    """

    # dataset[i] decodes blocks of frames: 4 after a jump, doubling up to 64 while reading on sequentially, so that
    # neither random nor sequential access pays much for ffmpeg's start (about 20 ms)
    _FIRST_BLOCK, _MAX_BLOCK = 4, 64

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise DatasetError(f"{self.root}: {INFO_PATH} is missing: not a LeRobot dataset")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        if self.info.get("codebase_version") != CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root}: codebase_version {self.info.get('codebase_version')!r}; "
                f"this reader reads LeRobot {CODEBASE_VERSION} datasets"
            )
        self.fps: int = int(self.info["fps"])
        self.robot_type: str | None = self.info.get("robot_type")
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        tasks = _read_tasks(self.root) if (self.root / TASKS_PATH).is_file() else []
        self.tasks: list[str] = tasks[: self.info.get("total_tasks", len(tasks))]  # info.json commits them too
        self.stats = _load_stats(self.root / STATS_PATH)
        committed = int(self.info["total_episodes"])
        rows = _read_episode_rows(self.root, with_stats=False)[:committed]
        self.episodes: list[EpisodeInfo] = [self._episode_info(row) for row in rows]
        self._starts = [episode.from_index for episode in self.episodes]
        self._data_cache: tuple[Path, dict[str, np.ndarray]] | None = None
        self._episode_cache: tuple[int, dict[str, np.ndarray]] | None = None
        self._blocks: dict[str, tuple[int, int, np.ndarray]] = {}  # camera -> (episode, first frame, frames)

    @property
    def camera_keys(self) -> list[str]:
        return [key for key, ft in self.features.items() if ft["dtype"] in ("video", "image")]

    @property
    def state_names(self) -> list[str] | None:
        return self.features.get(STATE, {}).get("names")

    @property
    def action_names(self) -> list[str] | None:
        return self.features.get(ACTION, {}).get("names")

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(episode.length for episode in self.episodes)

    def __len__(self) -> int:
        return self.num_frames

    def episode(self, episode_index: int) -> Episode:
        info = self.episodes[episode_index]
        data = self._episode_columns(info)
        return Episode(
            index=info.index,
            task=info.task,
            state=data[STATE],
            action=data[ACTION],
            timestamp=data["timestamp"],
            frame_index=data["frame_index"],
            task_index=data["task_index"],
        )

    def episode_frames(self, episode_index: int, camera: str, *, size: tuple[int, int] | None = None) -> np.ndarray:
        """All frames of one camera in an episode, (T, H, W, 3) uint8; `size` = (height, width) resizes them
        (plain resize, area-averaged when shrinking)."""
        return self._frames(self.episodes[episode_index], _camera_key(camera), 0, None, size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range: the dataset has {self.num_frames} frames")
        episode_index = bisect.bisect_right(self._starts, index) - 1
        info = self.episodes[episode_index]
        offset = index - info.from_index
        data = self._episode_columns(info)
        item: dict[str, Any] = {key: data[key][offset] for key in data}
        item["task"] = self.tasks[int(item["task_index"])] if self.tasks else info.task
        for key in self.camera_keys:
            block = self._blocks.get(key)
            if block is None or block[0] != episode_index or not block[1] <= offset < block[1] + len(block[2]):
                sequential = block is not None and block[0] == episode_index and offset == block[1] + len(block[2])
                size = min(2 * len(block[2]), self._MAX_BLOCK) if sequential else self._FIRST_BLOCK
                count = min(size, info.length - offset)
                block = (episode_index, offset, self._frames(info, key, offset, count, None))
                self._blocks[key] = block
            item[key] = block[2][offset - block[1]]
        return item

    # -- internals --------------------------------------------------------------------------------------------

    def _episode_info(self, row: dict[str, Any]) -> EpisodeInfo:
        videos = {}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                path = self.root / self.info["video_path"].format(
                    video_key=key,
                    chunk_index=row[f"videos/{key}/chunk_index"],
                    file_index=row[f"videos/{key}/file_index"],
                )
                videos[key] = (path, float(row[f"videos/{key}/from_timestamp"]))
        return EpisodeInfo(
            index=int(row["episode_index"]),
            tasks=list(row.get("tasks") or []),
            length=int(row["length"]),
            from_index=int(row["dataset_from_index"]),
            data_file=self.root
            / self.info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]),
            videos=videos,
        )

    def _data_file_columns(self, path: Path) -> dict[str, np.ndarray]:
        if self._data_cache is None or self._data_cache[0] != path:
            _, pq = _pyarrow()
            names = [key for key, ft in self.features.items() if ft["dtype"] not in ("video", "image")]
            table = pq.read_table(path, columns=names)
            columns = {name: _column_to_numpy(table.column(name)) for name in names}
            for name in (STATE, ACTION):  # (T, D) even where D = 1 made LeRobot store a scalar column
                if name in columns:
                    columns[name] = columns[name].reshape(len(columns[name]), -1)
            self._data_cache = (path, columns)
        return self._data_cache[1]

    def _episode_columns(self, info: EpisodeInfo) -> dict[str, np.ndarray]:
        if self._episode_cache is None or self._episode_cache[0] != info.index:
            columns = self._data_file_columns(info.data_file)
            rows = np.flatnonzero(columns["episode_index"] == info.index)
            if len(rows) != info.length:
                raise DatasetError(
                    f"{info.data_file}: {len(rows)} rows for episode {info.index}, {EPISODES_DIR} says {info.length}"
                )
            self._episode_cache = (info.index, {name: values[rows] for name, values in columns.items()})
        return self._episode_cache[1]

    def _frames(
        self, info: EpisodeInfo, key: str, start: int, count: int | None, size: tuple[int, int] | None
    ) -> np.ndarray:
        if key not in self.features:
            raise DatasetError(f"no camera {key}; the dataset has {self.camera_keys}")
        count = info.length - start if count is None else count
        if self.features[key]["dtype"] == "image":
            return self._png_frames(info, key, start, count, size)
        path, from_timestamp = info.videos[key]
        height, width = self.features[key]["shape"][:2]
        return decode_video(
            path,
            start_s=from_timestamp + start / self.fps,
            count=count,
            fps=self.fps,
            frame_size=(height, width),
            size=size,
        )

    def _png_frames(
        self, info: EpisodeInfo, key: str, start: int, count: int, size: tuple[int, int] | None
    ) -> np.ndarray:
        from PIL import Image

        _, pq = _pyarrow()
        table = pq.read_table(info.data_file, columns=[key, "episode_index"])
        rows = np.flatnonzero(_column_to_numpy(table.column("episode_index")) == info.index)[start : start + count]
        cells = table.column(key).take(rows).to_pylist()
        frames = []
        for cell in cells:
            image = Image.open(io.BytesIO(cell["bytes"])).convert("RGB")
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BOX)
            frames.append(np.asarray(image))
        return np.stack(frames)


def read_dataset(root: Path | str) -> LeRobotDatasetReader:
    """Open a LeRobot v3.0 dataset for reading (see validate_dataset for a thorough check)."""
    return LeRobotDatasetReader(root)


def _column_to_numpy(column) -> np.ndarray:
    """A parquet column as numpy: scalars (T,), fixed or variable-length lists of equal length (T, D)."""
    import pyarrow.types as types

    column = column.combine_chunks()
    if types.is_fixed_size_list(column.type) or types.is_list(column.type) or types.is_large_list(column.type):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)
