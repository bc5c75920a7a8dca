"""Demonstration recording from a robot's topics, without ROS: time-consistent frames at the control rate.

The recorder node (and the bag converter) hand `EpisodeRecorder` what arrives: joint states and camera images
(into the same `ObservationAssembler` the policy node uses, so a recorded frame is exactly what the policy would
have seen) and the action source: the commands sent to the arm's controllers (a policy or a teleoperation stack
commanding the robot) or a leader arm's joint states. Every control tick while recording, `tick(now)` writes one
frame: the observation at that instant and the latest action. Ticks without a usable observation (a stale camera)
or before every joint has an action are skipped and counted, never filled in.

The tick usually runs on a timer thread while start/stop come from a service or the command line: one lock
makes a frame and a save exclusive, so a tick that began before `stop()` ends before the episode is saved,
never half in it.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, ObservationError
from vla_ros.core.observation import AssemblerConfig, Drop, ObservationAssembler


class EpisodeWriter(Protocol):
    """What the recorder needs of a dataset writer (vla_ros.datasets.lerobot.LeRobotDatasetWriter)."""

    def start_episode(self, task: str) -> None: ...
    def add_frame(self, state: np.ndarray, action: np.ndarray, images: dict[str, np.ndarray]) -> None: ...
    def save_episode(self) -> int: ...
    def discard_episode(self) -> None: ...


@dataclass
class RecorderStatus:
    recording: bool
    task: str
    frames: int  # frames of the episode in progress
    episodes_saved: int
    skipped: dict[str, int]  # ticks without a frame, by reason


class EpisodeRecorder:
    """Episodes of `embodiment` into `writer`; images resized to `image_sizes` {camera: (height, width)}."""

    def __init__(self, embodiment: EmbodimentConfig, writer: EpisodeWriter, *,
                 image_sizes: dict[str, tuple[int, int]]):
        missing = [c.name for c in embodiment.cameras if c.name not in image_sizes]
        if missing:
            raise ConfigError(f"no recording size for cameras {missing}")
        self.embodiment, self.writer, self.image_sizes = embodiment, writer, image_sizes
        self.assembler = ObservationAssembler(AssemblerConfig.from_embodiment(embodiment))
        self._index = {name: i for i, name in enumerate(embodiment.joint_names)}
        self._action = np.full(len(embodiment.joint_names), np.nan)
        self._task = ""
        self._recording = False
        self._frames = 0
        self.episodes_saved = 0
        self.skipped: Counter[str] = Counter()
        self._episode_lock = threading.Lock()  # frames against start/stop/discard (see the module docstring)

    # -- inputs ------------------------------------------------------------------------------------------------------

    def add_joint_state(self, topic: str, stamp: float, names, positions) -> Drop | None:
        return self.assembler.add_joint_state(topic, stamp, names, positions)

    def add_image(self, camera: str, stamp: float, image: np.ndarray) -> Drop | None:
        return self.assembler.add_image(camera, stamp, image)

    def add_action(self, names, positions, *, source: str) -> None:
        """Commanded (or leader) positions of some joints, in embodiment joint names and units."""
        positions = np.asarray(positions, dtype=np.float64)
        if len(names) != len(positions):
            raise ObservationError(f"{source}: {len(names)} joint names but {len(positions)} positions")
        unknown = [name for name in names if name not in self._index]
        if unknown:
            raise ObservationError(f"{source}: unknown joints {unknown}; {self.embodiment.robot} has "
                                   f"{list(self.embodiment.joint_names)}")
        if not np.isfinite(positions).all():
            raise ObservationError(f"{source}: positions must be finite, got {positions.tolist()}")
        for name, value in zip(names, positions, strict=True):
            self._action[self._index[name]] = value

    # -- episodes ----------------------------------------------------------------------------------------------------

    def start(self, task: str) -> None:
        with self._episode_lock:
            if self._recording:
                raise ConfigError("already recording an episode: stop or discard it first")
            if not task.strip():
                raise ConfigError("an episode needs a task (the instruction it demonstrates)")
            self.writer.start_episode(task)
            self._task, self._recording, self._frames = task, True, 0

    def stop(self) -> int | None:
        """Save the episode in progress; returns its index (None if it had no frame: nothing is saved)."""
        with self._episode_lock:
            if not self._recording:
                raise ConfigError("not recording: start an episode first")
            self._recording = False
            if self._frames == 0:
                self.writer.discard_episode()
                return None
            index = self.writer.save_episode()
            self.episodes_saved += 1
            return index

    def discard(self) -> None:
        with self._episode_lock:
            if not self._recording:
                raise ConfigError("not recording: nothing to discard")
            self._recording = False
            self.writer.discard_episode()

    def tick(self, now: float) -> bool:
        """Record one frame at `now` if recording and everything is there; True if a frame was written."""
        with self._episode_lock:
            if not self._recording:
                return False
            observation, missing = self._frame_inputs(now)
            if missing:
                self.skipped[missing] += 1
                return False
            images = {name: self._sized(name, image) for name, image in observation.images.items()}
            self.writer.add_frame(observation.joint_positions.astype(np.float32), self._action.astype(np.float32),
                                  images)
            self._frames += 1
            return True

    def missing_inputs(self, now: float) -> str:
        """What a frame at `now` would lack, in words ("" when one can be recorded)."""
        return self._frame_inputs(now)[1]

    def _frame_inputs(self, now: float):
        """(the observation at `now`, "") or (None, what is missing)."""
        observation = self.assembler.assemble(now, self._task or "recording")
        if observation is None:
            return None, f"observation: {self.assembler.last_hold_reason}"
        if np.isnan(self._action).any():
            missing = [n for n, a in zip(self.embodiment.joint_names, self._action, strict=True) if np.isnan(a)]
            return None, f"no action yet for {missing}"
        return observation, ""

    def status(self) -> RecorderStatus:
        return RecorderStatus(recording=self._recording, task=self._task, frames=self._frames,
                              episodes_saved=self.episodes_saved, skipped=dict(self.skipped))

    def _sized(self, camera: str, image: np.ndarray) -> np.ndarray:
        height, width = self.image_sizes[camera]
        if image.shape[:2] == (height, width):
            return image
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
