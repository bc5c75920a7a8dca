"""Recording a LeRobot v3.0 dataset: episodes written crash-safely, cameras encoded while they arrive."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.datasets.lerobot.durable import (
    _TMP_DIR,
    _clear_tmp,
    _lock_root,
    _replace_durably,
    _write_json,
    _write_parquet,
)
from vla_ros.datasets.lerobot.layout import (
    ACTION,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILES_SIZE_IN_MB,
    DATA_PATH,
    EPISODES_PATH,
    IMAGES_PREFIX,
    INDEX_FEATURES,
    INFO_PATH,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    TIMESTAMP_TOLERANCE_S,
    VIDEO_FILES_SIZE_IN_MB,
    VIDEO_PATH,
    DatasetError,
    _camera_key,
    _episode_rows_table,
    _frames_table,
    _next_file,
    _pyarrow,
    _tasks_table,
)
from vla_ros.datasets.lerobot.recording_checks import (
    _check_cameras,
    _check_image,
    _check_names,
    _check_vector,
    _feature_differences,
)
from vla_ros.datasets.lerobot.recovery import _recover_interrupted_save
from vla_ros.datasets.lerobot.stats import _array_stats, _stats_to_json, aggregate_stats
from vla_ros.datasets.lerobot.video import (
    _CODEC_NAMES,
    _ENCODER_OPTIONS,
    _ENCODERS_FOR_CODEC,
    VIDEO_CRF,
    VIDEO_PIX_FMT,
    _CameraSink,
    _ffmpeg,
    _PngSink,
    _VideoSink,
    available_video_encoders,
)

logger = logging.getLogger(__name__)


@dataclass
class _EpisodeInProgress:
    task: str
    sinks: dict[str, _CameraSink]
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)


@dataclass
class _Resources:
    """What a writer holds outside Python: released by close(), or when the writer is garbage-collected."""

    episode: _EpisodeInProgress | None = None
    lock: Any = None

    def release(self) -> None:
        if self.episode is not None:
            for sink in self.episode.sinks.values():
                sink.abort()
            self.episode = None
        if self.lock is not None:
            self.lock.close()  # also releases the flock
            self.lock = None



class LeRobotDatasetWriter:
    """Records episodes into a LeRobot v3.0 dataset at `root`; re-opening an existing root appends to it.

    Per episode: start_episode(task), add_frame(...) per control step, then save_episode() (or
    discard_episode()). After every save_episode() the folder is a complete dataset of the saved episodes.

    Not thread-safe: call it from one thread (camera frames are handed to encoder threads internally).

    cameras: camera name (e.g. "front", stored as feature "observation.images.front") -> (height, width).
    video: store cameras as mp4 ("video" features, LeRobot's default) or as PNG inside the data parquet
    ("image" features). codec: "libsvtav1" or "libx264"; None picks libsvtav1 when ffmpeg has it.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        fps: int,
        robot_type: str,
        state_names: Sequence[str],
        action_names: Sequence[str],
        cameras: dict[str, tuple[int, int]],
        video: bool = True,
        codec: str | None = None,
        crf: int = VIDEO_CRF,
    ) -> None:
        _pyarrow()  # fail now, not at the first save, when pyarrow is missing
        self.root = Path(root)
        if not isinstance(fps, int | np.integer) or fps <= 0:
            raise DatasetError(f"fps must be a positive integer (LeRobot stores it as one), got {fps!r}")
        self.fps = int(fps)
        self.robot_type = robot_type
        self.state_names = _check_names("state_names", state_names)
        self.action_names = _check_names("action_names", action_names)
        self.cameras = _check_cameras(cameras)
        self.video = video
        self._crf = crf
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, _Resources.release, self._resources)

        existing = (self.root / INFO_PATH).is_file()
        if not existing and self.root.is_dir() and any(p.name != _TMP_DIR for p in self.root.iterdir()):
            raise DatasetError(f"{self.root} is not empty and has no {INFO_PATH}: not a LeRobot dataset to append to")
        self._encoder = self._pick_encoder(codec, existing) if video and self.cameras else None
        self._resources.lock = _lock_root(self.root)
        try:
            if existing:
                self._open_existing()
            else:
                self._create()
            _clear_tmp(self.root)
        except BaseException:
            self._finalizer()
            raise

    # -- public API -------------------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Saved episodes."""
        return int(self._info["total_episodes"])

    @property
    def num_frames(self) -> int:
        """Frames of the saved episodes."""
        return int(self._info["total_frames"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._info["features"])

    @property
    def episode_in_progress(self) -> bool:
        return self._resources.episode is not None

    @property
    def frames_in_episode(self) -> int:
        episode = self._resources.episode
        return len(episode.states) if episode is not None else 0

    def start_episode(self, task: str) -> None:
        """Begin buffering a new episode; `task` is its language instruction."""
        self._check_open()
        if self._resources.episode is not None:
            raise DatasetError("an episode is already being recorded: call save_episode() or discard_episode() first")
        if not isinstance(task, str) or not task.strip():
            raise DatasetError(f"the task must be a non-empty string, got {task!r}")
        sinks: dict[str, _CameraSink] = {}
        try:
            for name, (height, width) in self.cameras.items():
                key = _camera_key(name)
                if self.video:
                    path = self.root / _TMP_DIR / f"episode-{self.num_episodes:06d}-{key}.mp4"
                    sinks[name] = _VideoSink(
                        key, path, height=height, width=width, fps=self.fps, encoder=self._encoder, crf=self._crf
                    )
                else:
                    sinks[name] = _PngSink(key)
        except BaseException:
            for sink in sinks.values():
                sink.abort()
            raise
        self._resources.episode = _EpisodeInProgress(task=task, sinks=sinks)

    def add_frame(
        self,
        state: np.ndarray,
        action: np.ndarray,
        images: dict[str, np.ndarray],
        timestamp: float | None = None,
    ) -> None:
        """Append one frame: joint state and action (in the order of state_names / action_names), one (H, W, 3)
        uint8 RGB image per camera, and the time since the episode start (default frame_index / fps)."""
        episode = self._resources.episode
        if episode is None:
            raise DatasetError("add_frame() before start_episode()")
        frame_index = len(episode.states)
        state_row = _check_vector("state", state, len(self.state_names))
        action_row = _check_vector("action", action, len(self.action_names))
        if set(images) != set(self.cameras):
            raise DatasetError(
                f"frame {frame_index}: images for cameras {sorted(images)}, the dataset has {sorted(self.cameras)}"
            )
        checked = {name: _check_image(name, images[name], self.cameras[name]) for name in self.cameras}
        expected_time = frame_index / self.fps
        if timestamp is None:
            timestamp = expected_time
        else:
            timestamp = float(timestamp)
            if episode.timestamps and timestamp <= episode.timestamps[-1]:
                raise DatasetError(
                    f"frame {frame_index}: timestamp {timestamp:.6f} s is not after the previous frame's "
                    f"({episode.timestamps[-1]:.6f} s)"
                )
            if self.video and self.cameras and abs(timestamp - expected_time) > TIMESTAMP_TOLERANCE_S:
                raise DatasetError(
                    f"frame {frame_index}: timestamp {timestamp:.6f} s, but video frame {frame_index} is shown at "
                    f"{expected_time:.6f} s (frame_index / fps); LeRobot finds video frames by timestamp within "
                    f"{TIMESTAMP_TOLERANCE_S} s. Record at a fixed {self.fps} Hz and pass timestamp=None."
                )
        for sink in episode.sinks.values():
            sink.check()
        for name, image in checked.items():
            episode.sinks[name].put(image)
        episode.states.append(state_row)
        episode.actions.append(action_row)
        episode.timestamps.append(timestamp)

    def save_episode(self) -> int:
        """Write the episode in progress and update the metadata; returns its episode_index."""
        episode = self._resources.episode
        if episode is None:
            raise DatasetError("save_episode() without an episode: call start_episode() first")
        length = len(episode.states)
        if length == 0:
            raise DatasetError("the episode has no frames: add frames, or call discard_episode()")
        try:
            for sink in episode.sinks.values():
                sink.finish()
        except DatasetError as exc:
            self.discard_episode()
            raise DatasetError(f"episode not saved: {exc}") from exc
        self._resources.episode = None
        return self._write_episode(episode, length)

    def discard_episode(self) -> None:
        """Drop the episode in progress (no-op without one)."""
        episode, self._resources.episode = self._resources.episode, None
        if episode is not None:
            for sink in episode.sinks.values():
                sink.abort()

    def close(self) -> None:
        """Discard an unsaved episode (saved ones are complete on disk already) and release the dataset."""
        if self._finalizer.alive:
            if self._resources.episode is not None:
                logger.warning(
                    "%s: closing with an unsaved episode of %d frames; it is discarded",
                    self.root,
                    self.frames_in_episode,
                )
            self._finalizer()
            shutil.rmtree(self.root / _TMP_DIR, ignore_errors=True)

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- creating and re-opening ------------------------------------------------------------------------------

    def _pick_encoder(self, codec: str | None, existing: bool) -> str:
        available = available_video_encoders()
        if existing:  # keep the dataset's codec: info.json records one per camera feature
            info = json.loads((self.root / INFO_PATH).read_text())
            recorded = {
                ft.get("info", {}).get("video.codec")
                for ft in info.get("features", {}).values()
                if ft.get("dtype") == "video"
            } - {None}
            if len(recorded) == 1:
                wanted = _ENCODERS_FOR_CODEC.get(next(iter(recorded)))
                if wanted is None or (codec is not None and codec != wanted):
                    raise DatasetError(f"{self.root}: its videos are {recorded.pop()}; cannot append with {codec}")
                codec = wanted
        if codec is not None:
            if codec not in _ENCODER_OPTIONS:
                raise DatasetError(f"unsupported video codec {codec!r}; use one of {sorted(_ENCODER_OPTIONS)}")
            if codec not in available:
                raise DatasetError(f"the ffmpeg binary ({_ffmpeg()}) has no {codec} encoder")
        elif not available:
            raise DatasetError(f"the ffmpeg binary ({_ffmpeg()}) has neither libsvtav1 nor libx264")
        encoder = codec or available[0]
        if encoder == "libx264":
            odd = [name for name, (h, w) in self.cameras.items() if h % 2 or w % 2]
            if odd:
                raise DatasetError(f"cameras {odd}: libx264 needs even image sizes for yuv420p video")
        return encoder

    def _expected_features(self) -> dict[str, dict[str, Any]]:
        features: dict[str, dict[str, Any]] = {
            ACTION: {"dtype": "float32", "shape": [len(self.action_names)], "names": list(self.action_names)},
            STATE: {"dtype": "float32", "shape": [len(self.state_names)], "names": list(self.state_names)},
        }
        for name, (height, width) in self.cameras.items():
            ft: dict[str, Any] = {
                "dtype": "video" if self.video else "image",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
            }
            if self.video:
                ft["info"] = {
                    "video.height": height,
                    "video.width": width,
                    "video.codec": _CODEC_NAMES[self._encoder],
                    "video.pix_fmt": VIDEO_PIX_FMT,
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                }
            features[_camera_key(name)] = ft
        features.update(copy.deepcopy(INDEX_FEATURES))
        return features

    def _create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._info: dict[str, Any] = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": self.fps,
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video and self.cameras else None,
            "features": self._expected_features(),
        }
        _write_json(self.root / INFO_PATH, self._info)
        self._tasks: list[str] = []
        self._stats: dict[str, dict[str, np.ndarray]] | None = None
        self._session_rows: list[dict[str, Any]] = []
        self._episodes_file = (0, 0)
        self._next_data_file = (0, 0)
        self._next_video_file = {_camera_key(name): (0, 0) for name in self.cameras}

    def _open_existing(self) -> None:
        info = json.loads((self.root / INFO_PATH).read_text())
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root}: codebase_version {info.get('codebase_version')!r}, "
                f"this writer appends to {CODEBASE_VERSION} datasets only"
            )
        problems = []
        if info.get("fps") != self.fps:
            problems.append(f"fps: dataset {info.get('fps')}, recorder {self.fps}")
        if info.get("robot_type") != self.robot_type:
            problems.append(f"robot_type: dataset {info.get('robot_type')!r}, recorder {self.robot_type!r}")
        problems += _feature_differences(info.get("features", {}), self._expected_features())
        if problems:
            raise DatasetError(
                f"{self.root}: cannot append, the dataset was recorded differently: " + "; ".join(problems), problems
            )
        self._info = info
        video_keys = [_camera_key(name) for name in self.cameras] if self.video else []
        point = _recover_interrupted_save(self.root, info, video_keys)
        self._tasks, self._stats = point.tasks, point.stats
        self._next_data_file, self._next_video_file = point.next_data_file, point.next_video_file
        self._episodes_file = point.episodes_file
        self._session_rows = []

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise DatasetError(f"{self.root}: the writer is closed")

    # -- saving -----------------------------------------------------------------------------------------------

    def _write_episode(self, episode: _EpisodeInProgress, length: int) -> int:
        info = copy.deepcopy(self._info)
        features = info["features"]
        episode_index = int(info["total_episodes"])
        first_frame = int(info["total_frames"])
        tasks = list(self._tasks)
        if episode.task not in tasks:
            tasks.append(episode.task)
        task_index = tasks.index(episode.task)

        columns: dict[str, Any] = {
            ACTION: np.stack(episode.actions),
            STATE: np.stack(episode.states),
            "timestamp": np.asarray(episode.timestamps, dtype=np.float32),
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, episode_index, dtype=np.int64),
            "index": np.arange(first_frame, first_frame + length, dtype=np.int64),
            "task_index": np.full(length, task_index, dtype=np.int64),
        }
        episode_stats: dict[str, dict[str, np.ndarray]] = {}
        for key in features:  # LeRobot's order: the features'
            if key.startswith(IMAGES_PREFIX):
                episode_stats[key] = episode.sinks[key[len(IMAGES_PREFIX) :]].pixel_stats.stats()
            else:
                episode_stats[key] = _array_stats(columns[key])
        for name, sink in episode.sinks.items():
            if isinstance(sink, _PngSink):
                columns[_camera_key(name)] = sink.frames

        chunks_size = int(info.get("chunks_size", CHUNKS_SIZE))
        data_chunk, data_file = self._next_data_file
        row: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": [episode.task],
            "length": length,
            "data/chunk_index": data_chunk,
            "data/file_index": data_file,
            "dataset_from_index": first_frame,
            "dataset_to_index": first_frame + length,
        }
        # 1. videos and data under new names: before the metadata commits, nothing refers to them
        next_video_file = dict(self._next_video_file)
        for name, sink in episode.sinks.items():
            if not isinstance(sink, _VideoSink):
                continue
            key = _camera_key(name)
            chunk, file = next_video_file[key]
            _replace_durably(
                sink.path, self.root / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
            )
            next_video_file[key] = _next_file((chunk, file), chunks_size)
            row.update(
                {
                    f"videos/{key}/chunk_index": chunk,
                    f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": 0.0,
                    f"videos/{key}/to_timestamp": length / self.fps,
                }
            )
        _write_parquet(
            self.root / info["data_path"].format(chunk_index=data_chunk, file_index=data_file),
            _frames_table(features, columns),
        )
        for feature, stats in episode_stats.items():
            for key, value in stats.items():
                row[f"stats/{feature}/{key}"] = np.asarray(value).tolist()
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = self._episodes_file

        # 2. metadata, info.json last: until it is replaced, readers see the dataset without this episode
        if len(tasks) > len(self._tasks):
            _write_parquet(self.root / TASKS_PATH, _tasks_table(tasks))
        session_rows = [*self._session_rows, row]
        chunk, file = self._episodes_file
        _write_parquet(
            self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file), _episode_rows_table(session_rows)
        )
        stats = aggregate_stats([self._stats, episode_stats]) if self._stats else episode_stats
        _write_json(self.root / STATS_PATH, _stats_to_json(stats))
        info["total_episodes"] = episode_index + 1
        info["total_frames"] = first_frame + length
        info["total_tasks"] = len(tasks)
        info["splits"] = {"train": f"0:{episode_index + 1}"}
        _write_json(self.root / INFO_PATH, info)

        self._info, self._tasks, self._stats, self._session_rows = info, tasks, stats, session_rows
        self._next_data_file = _next_file((data_chunk, data_file), chunks_size)
        self._next_video_file = next_video_file
        return episode_index
