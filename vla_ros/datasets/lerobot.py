"""LeRobot v3.0 datasets without LeRobot: record demonstrations, read them back, check them.

The format is matched against LeRobot 0.4.4 (github.com/huggingface/lerobot, tag v0.4.4: `datasets/utils.py`,
`datasets/lerobot_dataset.py`, `datasets/compute_stats.py`, `datasets/video_utils.py`), the newest release on
PyPI, and against datasets that LeRobot 0.4.4 itself recorded. Its `codebase_version` is "v3.0", which LeRobot
0.5 and 0.6 still read (v0.6.1's `DatasetInfo` has the same info.json fields, file templates and defaults).

Layout of a dataset root (CCC = chunk index, FFF = file index; a chunk holds `chunks_size` = 1000 files):

    meta/info.json      codebase_version, robot_type, fps, features (dtype, shape, names; video features also
                        carry `info`: codec, pix_fmt, ...), total_episodes, total_frames, total_tasks,
                        chunks_size, data_files_size_in_mb, video_files_size_in_mb, splits {"train": "0:N"},
                        data_path and video_path (file name templates)
    meta/stats.json     per feature: min, max, mean, std, count, q01, q10, q50, q90, q99 over all episodes;
                        cameras per channel in [0, 1], shape (3, 1, 1)
    meta/tasks.parquet  columns task (the pandas index) and task_index
    meta/episodes/chunk-CCC/file-FFF.parquet
                        one row per episode: episode_index, tasks, length, data/chunk_index, data/file_index,
                        dataset_from_index, dataset_to_index (its global frame range), per camera
                        videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp (its span in the mp4),
                        stats/<feature>/<stat> (the episode's own stats), meta/episodes/chunk_index, file_index
    data/chunk-CCC/file-FFF.parquet
                        one row per frame: action and observation.state (fixed-size float32 lists), cameras as
                        PNG {bytes, path} structs when they are "image" features, timestamp (float32, seconds
                        since the episode start), frame_index, episode_index, index (global), task_index
    videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4

Choices of this writer, all within the format (readers, LeRobot's included, follow the episode rows):

- One data file, and one mp4 per camera, per episode. LeRobot appends episodes to a file until it reaches
  100 MB (data) or 200 MB (video), and starts a new file_index when a file is full or recording resumes.
  Appending to a file in place cannot be made crash-safe; writing new files can. LeRobot's dataset tools
  (`lerobot-edit-dataset`, aggregate) repack a dataset into fewer files where the file count matters.
- Camera frames are encoded while they arrive, by one ffmpeg process per camera fed from a thread, instead of
  being written as PNG files and encoded by save_episode(). Memory holds the state and action vectors of the
  episode in progress, plus the frames the encoder has not consumed yet (none while it keeps up: libsvtav1
  encodes about 200 frames/s at 640x480 and 1400 frames/s at 96x96 on 2 cores; two 640x480 cameras at 30 Hz
  take about 0.45 core), so episodes of any length can be recorded and save_episode() takes about 0.1 s.
  With video=False the PNG-encoded frames of the episode in progress stay in memory: meant for small
  (simulated) images and demonstrations of a few minutes.
- Camera stats use every frame, subsampled in space as LeRobot does above 300 px (LeRobot uses at most about
  100 to a few hundred frames per episode); their `count` is the number of frames. Quantiles are exact
  (numpy's linear interpolation; 256-level histograms for pixels) where LeRobot estimates them from
  5000-bin histograms; they are aggregated across episodes as LeRobot does (count-weighted means). Pixel std
  is exact; LeRobot 0.4.4 squares uint8 pixels, which wraps around and spoils its image std (0.6 fixed it).

Video follows LeRobot's defaults: AV1 by libsvtav1 (preset 12), yuv420p, GOP 2, CRF 30, encoded by the ffmpeg
binary of imageio-ffmpeg (or $IMAGEIO_FFMPEG_EXE); libx264 (preset veryfast) when that ffmpeg has no libsvtav1.
Frame k of an episode is shown at k / fps, so timestamps must be k / fps (LeRobot looks frames up by timestamp
with a 1e-4 s tolerance).

Crash safety: save_episode() writes the episode's videos and data file under new names, then the metadata;
every file goes to a temporary name, is flushed to disk and renamed over its target; meta/info.json, written
last, is the commit point. An interrupted recording loses only the episode in progress. Re-opening the root
with LeRobotDatasetWriter removes what an interrupted save left behind and appends after the saved episodes.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import io
import json
import logging
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.errors import MissingDependencyError, VlaRosError

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILES_SIZE_IN_MB = 100  # LeRobot's limits for packing episodes into one file; recorded in info.json
VIDEO_FILES_SIZE_IN_MB = 200

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"

STATE = "observation.state"
ACTION = "action"
IMAGES_PREFIX = "observation.images."
INDEX_FEATURES: dict[str, dict[str, Any]] = {  # LeRobot's DEFAULT_FEATURES, in its order
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's DEFAULT_QUANTILES
TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s when it looks frames up in a video

VIDEO_PIX_FMT = "yuv420p"
VIDEO_GOP = 2  # a key frame every 2 frames: random access for training costs at most one extra decoded frame
VIDEO_CRF = 30
_ENCODER_OPTIONS = {"libsvtav1": ["-preset", "12"], "libx264": ["-preset", "veryfast"]}
_CODEC_NAMES = {"libsvtav1": "av1", "libx264": "h264"}  # ffmpeg encoder -> codec name LeRobot records
_ENCODERS_FOR_CODEC = {"av1": "libsvtav1", "h264": "libx264"}

_TMP_DIR = ".vla_ros_tmp"  # in-progress episodes and the recorder lock; not part of the dataset
_STATS_MIN_SIDE = 300  # LeRobot subsamples images for stats when their larger side reaches 300 px ...
_STATS_TARGET_SIDE = 150  # ... to about 150 px


class DatasetError(VlaRosError):
    """A dataset cannot be written, read or used as it is. `problems` lists every problem found."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        self.problems = list(problems) or [message]
        super().__init__(message)


# --------------------------------------------------------------------------------------------------------------
# Optional dependencies and small file helpers


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "datasets", "Reading and writing LeRobot datasets") from exc
    return pa, pq


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MissingDependencyError("imageio-ffmpeg", "datasets", "Video in LeRobot datasets") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=4)
def _ffmpeg_encoders(exe: str) -> frozenset[str]:
    result = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    return frozenset(match.group(1) for match in re.finditer(r"^ V\S*\s+(\S+)", result.stdout, re.MULTILINE))


def available_video_encoders() -> list[str]:
    """The encoders this module can use that the ffmpeg binary has, preferred first."""
    encoders = _ffmpeg_encoders(_ffmpeg())
    return [name for name in _ENCODER_OPTIONS if name in encoders]


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


def _chunk_file_of(path: Path) -> tuple[int, int] | None:
    match = re.fullmatch(r"chunk-(\d+)/file-(\d+)\.\w+", f"{path.parent.name}/{path.name}")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _camera_key(camera: str) -> str:
    return camera if camera.startswith(IMAGES_PREFIX) else IMAGES_PREFIX + camera


# --------------------------------------------------------------------------------------------------------------
# Statistics (LeRobot's stats.json and the stats/ columns of the episode rows)


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
            feature, key = column[len("stats/"):].rsplit("/", 1)
            stats.setdefault(feature, {})[key] = np.asarray(value)
    return stats


# --------------------------------------------------------------------------------------------------------------
# Table layouts


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The `datasets` library's description of a column (kept in the parquet schema, as LeRobot's files do)."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    if list(ft["shape"]) == [1]:
        return {"dtype": ft["dtype"], "_type": "Value"}
    return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": int(ft["shape"][0]), "_type": "List"}


def _frames_table(features: dict[str, dict[str, Any]], columns: dict[str, Any]):
    """An episode's rows for data/*.parquet: the non-video features, in the features' order."""
    pa, _ = _pyarrow()
    arrays, fields, hf_features = [], [], {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        values = columns[key]
        if ft["dtype"] == "image":
            array = pa.array(
                [{"bytes": png, "path": f"frame-{i:06d}.png"} for i, png in enumerate(values)],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            )
        elif list(ft["shape"]) == [1]:  # LeRobot stores shape (1,) as a scalar column, even for a 1-joint state
            array = pa.array(np.asarray(values, dtype=ft["dtype"]).reshape(-1))
        else:
            width = int(ft["shape"][0])
            flat = pa.array(np.ascontiguousarray(values, dtype=ft["dtype"]).reshape(-1))
            array = pa.FixedSizeListArray.from_arrays(flat, type=pa.list_(pa.field("element", flat.type), width))
        arrays.append(array)
        fields.append(pa.field(key, array.type))
        hf_features[key] = _hf_feature(ft)
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def _tasks_table(tasks: Sequence[str]):
    """meta/tasks.parquet as pandas writes a frame indexed by task (what LeRobot reads with pd.read_parquet)."""
    pa, _ = _pyarrow()
    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_metadata).encode()})
    return pa.Table.from_arrays([pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.string())],
                                schema=schema)


def _read_tasks(root: Path) -> list[str]:
    """Task strings by task_index, whatever the index column is called (task, __index_level_0__)."""
    _, pq = _pyarrow()
    table = pq.read_table(root / TASKS_PATH)
    names = table.column_names
    index_columns = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns", [])
    candidates = [c for c in index_columns if isinstance(c, str)] + ["task", "__index_level_0__"]
    column = next((c for c in candidates if c in names and c != "task_index"), None)
    if column is None or "task_index" not in names:
        raise DatasetError(f"{root / TASKS_PATH}: expected columns task and task_index, found {names}")
    tasks: dict[int, str] = dict(zip(table.column("task_index").to_pylist(), table.column(column).to_pylist(),
                                     strict=True))
    return [tasks[i] for i in sorted(tasks)]


def _episode_files(root: Path) -> list[Path]:
    return sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))


def _read_episode_rows(root: Path, *, with_stats: bool) -> list[dict[str, Any]]:
    """All rows of meta/episodes, sorted by episode_index; `_file` says which file each row came from."""
    _, pq = _pyarrow()
    rows = []
    for path in _episode_files(root):
        names = pq.read_schema(path).names
        columns = names if with_stats else [n for n in names if not n.startswith("stats/")]
        for row in pq.read_table(path, columns=columns).to_pylist():
            row["_file"] = path
            rows.append(row)
    rows.sort(key=lambda row: row["episode_index"])
    return rows


def _episode_rows_table(rows: Sequence[dict[str, Any]]):
    pa, _ = _pyarrow()
    return pa.Table.from_pylist([{k: v for k, v in row.items() if k != "_file"} for row in rows])


# --------------------------------------------------------------------------------------------------------------
# Camera frames of the episode in progress


class _CameraSink:
    """Takes one camera's frames on a worker thread, so that add_frame() only queues them: pixel stats + storage."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.pixel_stats = _PixelStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"vla_ros-dataset-{key}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise DatasetError if storing an earlier frame failed (the episode cannot be saved then)."""
        if self._error is not None:
            raise DatasetError(f"{self.key}: storing frames failed: {self._error}")

    def put(self, image: np.ndarray) -> None:
        self._queue.put(image)

    def finish(self) -> None:
        """Wait until every queued frame is stored; raises DatasetError if storing failed."""
        self._queue.put(None)
        self._thread.join()
        self._close()
        if self._error is not None:
            raise DatasetError(f"{self.key}: storing frames failed: {self._error}")

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while (image := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain the queue; finish() reports the error
            try:
                self._store(image)
                self.pixel_stats.add(image)
            except Exception as exc:  # noqa: BLE001 - reported by put() and finish()
                self._error = exc

    def _store(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _VideoSink(_CameraSink):
    """Pipes raw RGB frames into an ffmpeg process that writes the episode's mp4 for one camera."""

    def __init__(self, key: str, path: Path, *, height: int, width: int, fps: int, encoder: str, crf: int) -> None:
        self.path = path
        command = [
            _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
            "-an", "-c:v", encoder, "-pix_fmt", VIDEO_PIX_FMT, "-g", str(VIDEO_GOP), "-crf", str(crf),
            *_ENCODER_OPTIONS[encoder], "-f", "mp4", str(path),
        ]
        # a file, not a pipe, for ffmpeg's messages: it must never block on its own stderr
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _close() or abort()
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "SVT_LOG": "1"},  # SVT-AV1 prints its banner unless told errors only
        )
        super().__init__(key)

    def _store(self, image: np.ndarray) -> None:
        self._process.stdin.write(memoryview(image).cast("B"))

    def _close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        returncode = self._process.wait()
        self._log.seek(0)
        log = self._log.read().decode(errors="replace").strip()
        self._log.close()
        if returncode != 0 and self._error is None:
            self._error = RuntimeError(f"ffmpeg exited with status {returncode}: {log[-800:]}")

    def abort(self) -> None:
        self._process.kill()
        super().abort()
        self._process.wait()
        self._log.close()
        self.path.unlink(missing_ok=True)


class _PngSink(_CameraSink):
    """Keeps the episode's frames as PNG bytes, for "image" features stored inside the data parquet."""

    def __init__(self, key: str) -> None:
        try:
            from PIL import Image
        except ImportError as exc:
            raise MissingDependencyError("pillow", "datasets", "Storing images in LeRobot datasets") from exc
        self._image_class = Image
        self.frames: list[bytes] = []
        super().__init__(key)

    def _store(self, image: np.ndarray) -> None:
        buffer = io.BytesIO()
        self._image_class.fromarray(image).save(buffer, format="PNG", compress_level=1)  # fast; lossless anyway
        self.frames.append(buffer.getvalue())


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


# --------------------------------------------------------------------------------------------------------------
# Writer


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
                    sinks[name] = _VideoSink(key, path, height=height, width=width, fps=self.fps,
                                             encoder=self._encoder, crf=self._crf)
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
                logger.warning("%s: closing with an unsaved episode of %d frames; it is discarded",
                               self.root, self.frames_in_episode)
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
                ft.get("info", {}).get("video.codec") for ft in info.get("features", {}).values()
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
            ft: dict[str, Any] = {"dtype": "video" if self.video else "image", "shape": [height, width, 3],
                                  "names": ["height", "width", "channels"]}
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
            raise DatasetError(f"{self.root}: codebase_version {info.get('codebase_version')!r}, "
                               f"this writer appends to {CODEBASE_VERSION} datasets only")
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
            raise DatasetError(f"{self.root}: meta/episodes does not hold episodes 0..{committed - 1} that "
                               f"info.json counts; the dataset is damaged (check it with validate_dataset)")
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
            raise DatasetError(f"{self.root}: the episode lengths do not add up to info.json's total_frames; "
                               f"the dataset is damaged (check it with validate_dataset)")

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
        repaired |= _remove_orphans(self.root / "data", last_data, {
            self.root / self._info["data_path"].format(chunk_index=r["data/chunk_index"],
                                                      file_index=r["data/file_index"]) for r in rows})
        self._next_data_file = _next_file(last_data, chunks_size) if last_data else (0, 0)
        self._next_video_file = {}
        for name in self.cameras:
            key = _camera_key(name)
            if not self.video:
                continue
            columns = (f"videos/{key}/chunk_index", f"videos/{key}/file_index")
            last_video = last(columns)
            referenced = {self.root / self._info["video_path"].format(video_key=key, chunk_index=r[columns[0]],
                                                                     file_index=r[columns[1]]) for r in rows}
            repaired |= _remove_orphans(self.root / "videos" / key, last_video, referenced)
            self._next_video_file[key] = _next_file(last_video, chunks_size) if last_video else (0, 0)

        episode_files = [_chunk_file_of(path) for path in _episode_files(self.root)]
        episode_files = [index for index in episode_files if index is not None]
        self._episodes_file = _next_file(max(episode_files), chunks_size) if episode_files else (0, 0)
        self._session_rows = []

        stats_path = self.root / STATS_PATH
        if repaired:
            logger.warning("%s: removed what an interrupted save left behind; %d saved episodes kept",
                           self.root, committed)
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
                episode_stats[key] = episode.sinks[key[len(IMAGES_PREFIX):]].pixel_stats.stats()
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
            _replace_durably(sink.path, self.root / info["video_path"].format(
                video_key=key, chunk_index=chunk, file_index=file))
            next_video_file[key] = _next_file((chunk, file), chunks_size)
            row.update({
                f"videos/{key}/chunk_index": chunk,
                f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": 0.0,
                f"videos/{key}/to_timestamp": length / self.fps,
            })
        _write_parquet(self.root / info["data_path"].format(chunk_index=data_chunk, file_index=data_file),
                       _frames_table(features, columns))
        for feature, stats in episode_stats.items():
            for key, value in stats.items():
                row[f"stats/{feature}/{key}"] = np.asarray(value).tolist()
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = self._episodes_file

        # 2. metadata, info.json last: until it is replaced, readers see the dataset without this episode
        if len(tasks) > len(self._tasks):
            _write_parquet(self.root / TASKS_PATH, _tasks_table(tasks))
        session_rows = [*self._session_rows, row]
        chunk, file = self._episodes_file
        _write_parquet(self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file),
                       _episode_rows_table(session_rows))
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
            raise DatasetError(f"camera name {name!r}: use a short name like 'front' (stored as "
                               f"'{IMAGES_PREFIX}front'); LeRobot forbids '/' in feature names")
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
        raise DatasetError(
            f"camera {name!r}: image is {image.dtype} {image.shape}, expected uint8 {(*size, 3)} (RGB)"
        )
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


def _load_stats(path: Path) -> dict[str, dict[str, np.ndarray]] | None:
    return _stats_from_json(json.loads(path.read_text())) if path.is_file() else None


# --------------------------------------------------------------------------------------------------------------
# Reading


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
            raise DatasetError(f"{self.root}: codebase_version {self.info.get('codebase_version')!r}; "
                               f"this reader reads LeRobot {CODEBASE_VERSION} datasets")
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
                    video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                    file_index=row[f"videos/{key}/file_index"])
                videos[key] = (path, float(row[f"videos/{key}/from_timestamp"]))
        return EpisodeInfo(
            index=int(row["episode_index"]),
            tasks=list(row.get("tasks") or []),
            length=int(row["length"]),
            from_index=int(row["dataset_from_index"]),
            data_file=self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                               file_index=row["data/file_index"]),
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
                raise DatasetError(f"{info.data_file}: {len(rows)} rows for episode {info.index}, "
                                   f"{EPISODES_DIR} says {info.length}")
            self._episode_cache = (info.index, {name: values[rows] for name, values in columns.items()})
        return self._episode_cache[1]

    def _frames(self, info: EpisodeInfo, key: str, start: int, count: int | None,
                size: tuple[int, int] | None) -> np.ndarray:
        if key not in self.features:
            raise DatasetError(f"no camera {key}; the dataset has {self.camera_keys}")
        count = info.length - start if count is None else count
        if self.features[key]["dtype"] == "image":
            return self._png_frames(info, key, start, count, size)
        path, from_timestamp = info.videos[key]
        height, width = self.features[key]["shape"][:2]
        return decode_video(path, start_s=from_timestamp + start / self.fps, count=count, fps=self.fps,
                            frame_size=(height, width), size=size)

    def _png_frames(self, info: EpisodeInfo, key: str, start: int, count: int,
                    size: tuple[int, int] | None) -> np.ndarray:
        from PIL import Image

        _, pq = _pyarrow()
        table = pq.read_table(info.data_file, columns=[key, "episode_index"])
        rows = np.flatnonzero(_column_to_numpy(table.column("episode_index")) == info.index)[start:start + count]
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


def decode_video(path: Path, *, start_s: float, count: int, fps: int, frame_size: tuple[int, int],
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """`count` frames of an mp4 from the frame shown at `start_s`, as (count, H, W, 3) uint8 RGB.

    frame_size: (height, width) of the video; size: (height, width) to resize to (ffmpeg's area scaler).
    """
    if not path.is_file():
        raise DatasetError(f"video file {path} is missing")
    height, width = size or frame_size
    if count <= 0:
        return np.empty((0, height, width, 3), dtype=np.uint8)
    command = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    if start_s > 0:  # half a frame early: the first frame kept is the one shown at start_s, whatever the rounding
        command += ["-ss", f"{max(0.0, start_s - 0.5 / fps):.6f}"]
    command += ["-i", str(path), "-map", "0:v:0", "-frames:v", str(count)]
    if size is not None:
        command += ["-vf", f"scale={width}:{height}:flags=area"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    buffer = memoryview(frames).cast("B")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        filled = 0
        while filled < len(buffer):  # read straight into the array: no second copy of a long episode
            read = process.stdout.readinto(buffer[filled:])
            if not read:
                break
            filled += read
        process.stdout.close()
        returncode = process.wait()
        log.seek(0)
        message = log.read().decode(errors="replace").strip()
    decoded = filled // (height * width * 3)
    if returncode != 0 or decoded < count:
        raise DatasetError(f"{path}: decoded {decoded} of {count} frames from {start_s:.3f} s"
                           + (f" (ffmpeg: {message[-500:]})" if message else ""))
    return frames


def count_video_frames(path: Path) -> int:
    """Frames in an mp4's first video stream (its packets, counted without decoding)."""
    result = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )
    counts = re.findall(r"frame=\s*(\d+)", result.stderr)
    if result.returncode != 0 or not counts:
        raise DatasetError(f"{path}: not a readable video ({result.stderr.strip()[-300:]})")
    return int(counts[-1])


# --------------------------------------------------------------------------------------------------------------
# Validation

REQUIRED_INFO_KEYS = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                      "chunks_size", "data_path")
REQUIRED_FEATURES = (STATE, ACTION, *INDEX_FEATURES)
REQUIRED_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                            "dataset_from_index", "dataset_to_index")


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
        return DatasetError(f"{root} is not a usable LeRobot {CODEBASE_VERSION} dataset:\n  - "
                            + "\n  - ".join(problems), problems)

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
        problems.append(f"{INFO_PATH}: codebase_version is {version!r}, expected {CODEBASE_VERSION!r}"
                        + (" (convert it with LeRobot's lerobot/datasets/v30/convert_dataset_v21_to_v30.py)"
                           if str(version).startswith("v2") else ""))
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
                problems.append(f"camera {_camera_key(camera)} is not in the dataset; it has "
                                f"{', '.join(cameras) if cameras else 'no cameras'}")

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
        lacking_columns += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp",
                                                          "to_timestamp") if any(f"videos/{key}/{c}" not in r
                                                                                 for r in rows)]
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
            problems.append(f"episode {index}: frames {row['dataset_from_index']}..{row['dataset_to_index']} do not "
                            f"follow the previous episode ({expected_from}) with its length {length}")
        expected_from = row["dataset_from_index"] + max(length, 0)
        if tasks is not None and any(task not in tasks for task in row["tasks"] or []):
            problems.append(f"episode {index}: task {row['tasks']} is not in {TASKS_PATH}")
    if sum(row["length"] for row in rows) != info["total_frames"]:
        problems.append(f"{INFO_PATH}: total_frames is {info['total_frames']}, the episodes have "
                        f"{sum(row['length'] for row in rows)} frames")

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
                problems.append(f"frame count mismatch: episode {row['episode_index']} has {found} rows in "
                                f"{relative}, {EPISODES_DIR} says {row['length']}")
    return problems


def _video_problems(root: Path, info: dict[str, Any], rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    problems = []
    fps = info["fps"]
    counted: dict[Path, int | None] = {}
    for key in keys:
        for row in rows:
            index = row["episode_index"]
            path = root / info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                    file_index=row[f"videos/{key}/file_index"])
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
                problems.append(f"frame count mismatch: episode {index} spans {last - first} frames of {relative} "
                                f"({key}), its length is {row['length']}")
            elif frames < last:
                problems.append(f"frame count mismatch: {relative} has {frames} frames, episode {index} ({key}) needs "
                                f"frames {first}..{last - 1}")
    return problems
