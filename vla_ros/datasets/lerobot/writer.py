"""Recording a LeRobot v3.0 dataset: episodes written crash-safely, cameras encoded while they arrive."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    _chunk_file_of,
    _episode_files,
    _episode_rows_table,
    _frames_table,
    _pyarrow,
    _read_episode_rows,
    _read_tasks,
    _tasks_table,
)
from vla_ros.datasets.lerobot.stats import (
    _array_stats,
    _load_stats,
    _stats_from_episode_row,
    _stats_to_json,
    aggregate_stats,
)
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


_TMP_DIR = ".vla_ros_tmp"  # in-progress episodes and the recorder lock; not part of the dataset


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system can open directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_durably(source: Path, target: Path) -> None:
    """Move a finished file into place so that a crash leaves either the old target or the complete new one."""
    with open(source, "rb+") as handle:
        os.fsync(handle.fileno())
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    _fsync_dir(target.parent)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")  # hidden: LeRobot's *.parquet globs never see it
    write(temporary)
    _replace_durably(temporary, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False)))


def _write_parquet(path: Path, table) -> None:
    _, pq = _pyarrow()
    _write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))


def _next_file(chunk_file: tuple[int, int], chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) index after `chunk_file`, as LeRobot counts them."""
    chunk, file = chunk_file
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


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


def _lock_root(root: Path):
    """An exclusive lock on the dataset root: two recorders appending to one dataset would corrupt it."""
    tmp = root / _TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    handle = open(tmp / "lock", "a+")  # noqa: SIM115 - held for the writer's lifetime
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise DatasetError(f"{root}: another recorder is writing to this dataset (its lock is held)") from exc
    return handle


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
            self._clear_tmp()
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
        self._recover()

    def _recover(self) -> None:
        """Undo what an interrupted save left behind: info.json's totals say which episodes were committed."""
        committed = int(self._info["total_episodes"])
        rows = _read_episode_rows(self.root, with_stats=True)
        if len(rows) < committed or [row["episode_index"] for row in rows[:committed]] != list(range(committed)):
            raise DatasetError(
                f"{self.root}: meta/episodes does not hold episodes 0..{committed - 1} that "
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
        if sum(row["length"] for row in rows) != self._info["total_frames"]:
            raise DatasetError(
                f"{self.root}: the episode lengths do not add up to info.json's total_frames; "
                f"the dataset is damaged (check it with validate_dataset)"
            )

        self._tasks = _read_tasks(self.root) if (self.root / TASKS_PATH).is_file() else []
        if len(self._tasks) > self._info["total_tasks"]:
            self._tasks = self._tasks[: self._info["total_tasks"]]
            _write_parquet(self.root / TASKS_PATH, _tasks_table(self._tasks))
            repaired = True

        def last(columns: tuple[str, str]) -> tuple[int, int] | None:
            indices = [(row[columns[0]], row[columns[1]]) for row in rows if row.get(columns[0]) is not None]
            return max(indices) if indices else None

        chunks_size = int(self._info.get("chunks_size", CHUNKS_SIZE))
        last_data = last(("data/chunk_index", "data/file_index"))
        repaired |= _remove_orphans(
            self.root / "data",
            last_data,
            {
                self.root
                / self._info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                for r in rows
            },
        )
        self._next_data_file = _next_file(last_data, chunks_size) if last_data else (0, 0)
        self._next_video_file = {}
        for name in self.cameras:
            key = _camera_key(name)
            if not self.video:
                continue
            columns = (f"videos/{key}/chunk_index", f"videos/{key}/file_index")
            last_video = last(columns)
            referenced = {
                self.root
                / self._info["video_path"].format(video_key=key, chunk_index=r[columns[0]], file_index=r[columns[1]])
                for r in rows
            }
            repaired |= _remove_orphans(self.root / "videos" / key, last_video, referenced)
            self._next_video_file[key] = _next_file(last_video, chunks_size) if last_video else (0, 0)

        episode_files = [_chunk_file_of(path) for path in _episode_files(self.root)]
        episode_files = [index for index in episode_files if index is not None]
        self._episodes_file = _next_file(max(episode_files), chunks_size) if episode_files else (0, 0)
        self._session_rows = []

        stats_path = self.root / STATS_PATH
        if repaired:
            logger.warning(
                "%s: removed what an interrupted save left behind; %d saved episodes kept", self.root, committed
            )
            episode_stats = [_stats_from_episode_row(row) for row in rows]
            if rows and all(episode_stats):
                self._stats = aggregate_stats(episode_stats)
                _write_json(stats_path, _stats_to_json(self._stats))
            elif not rows:
                stats_path.unlink(missing_ok=True)
                self._stats = None
            else:
                self._stats = _load_stats(stats_path)
        else:
            self._stats = _load_stats(stats_path)

    def _clear_tmp(self) -> None:
        for path in (self.root / _TMP_DIR).iterdir():
            if path.name != "lock":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for folder in ("meta", "data", "videos"):  # half-written files of an interrupted _write_atomically
            for path in (self.root / folder).rglob(".*.tmp"):
                path.unlink()

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


def _remove_orphans(folder: Path, last_referenced: tuple[int, int] | None, referenced: set[Path]) -> bool:
    """Delete files an interrupted save wrote after the last committed one; True if any."""
    removed = False
    for path in sorted(folder.glob("chunk-*/file-*.*")):
        index = _chunk_file_of(path)
        if index is not None and path not in referenced and (last_referenced is None or index > last_referenced):
            path.unlink()
            removed = True
    return removed
