"""Robot demonstration datasets: LeRobot v3.0 recording, reading and validation (needs the 'datasets' extra)."""

from vla_ros.datasets.lerobot import (
    CODEBASE_VERSION,
    DatasetError,
    Episode,
    EpisodeInfo,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    read_dataset,
    validate_dataset,
)

__all__ = [
    "CODEBASE_VERSION",
    "DatasetError",
    "Episode",
    "EpisodeInfo",
    "LeRobotDatasetReader",
    "LeRobotDatasetWriter",
    "read_dataset",
    "validate_dataset",
]
