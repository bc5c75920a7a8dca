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

from vla_ros.datasets.lerobot.layout import (
    ACTION,
    CHUNK_FILE_PATTERN,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILES_SIZE_IN_MB,
    DATA_PATH,
    EPISODES_DIR,
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
)
from vla_ros.datasets.lerobot.reader import Episode, EpisodeInfo, LeRobotDatasetReader, read_dataset
from vla_ros.datasets.lerobot.stats import QUANTILES, aggregate_stats
from vla_ros.datasets.lerobot.validate import (
    REQUIRED_EPISODE_COLUMNS,
    REQUIRED_FEATURES,
    REQUIRED_INFO_KEYS,
    validate_dataset,
)
from vla_ros.datasets.lerobot.video import (
    VIDEO_CRF,
    VIDEO_GOP,
    VIDEO_PIX_FMT,
    available_video_encoders,
    count_video_frames,
    decode_video,
)
from vla_ros.datasets.lerobot.writer import LeRobotDatasetWriter

__all__ = [
    "ACTION",
    "CHUNKS_SIZE",
    "CHUNK_FILE_PATTERN",
    "CODEBASE_VERSION",
    "DATA_FILES_SIZE_IN_MB",
    "DATA_PATH",
    "DatasetError",
    "EPISODES_DIR",
    "EPISODES_PATH",
    "Episode",
    "EpisodeInfo",
    "IMAGES_PREFIX",
    "INDEX_FEATURES",
    "INFO_PATH",
    "LeRobotDatasetReader",
    "LeRobotDatasetWriter",
    "QUANTILES",
    "REQUIRED_EPISODE_COLUMNS",
    "REQUIRED_FEATURES",
    "REQUIRED_INFO_KEYS",
    "STATE",
    "STATS_PATH",
    "TASKS_PATH",
    "TIMESTAMP_TOLERANCE_S",
    "VIDEO_CRF",
    "VIDEO_FILES_SIZE_IN_MB",
    "VIDEO_GOP",
    "VIDEO_PATH",
    "VIDEO_PIX_FMT",
    "aggregate_stats",
    "available_video_encoders",
    "count_video_frames",
    "decode_video",
    "read_dataset",
    "validate_dataset",
]
