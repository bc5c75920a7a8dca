"""What flows between robot and policy: LeRobot's feature names and the two observation types.

A `RobotObservation` is what the robot reports, in its own joint order and units. The adapter turns
it into a `PolicyObservation`, a flat dict keyed by LeRobot feature names
(`observation.state`, `observation.images.<key>`, `task`), which every policy backend accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vla_ros.core.errors import ConfigError

STATE = "observation.state"
IMAGES_PREFIX = "observation.images."
TASK = "task"
ACTION = "action"


def image_key(camera_key: str) -> str:
    """`observation.images.<camera_key>`: the feature carrying one camera, (H, W, 3) uint8 RGB."""
    return IMAGES_PREFIX + camera_key


def image_mask_key(camera_key: str) -> str:
    """Feature saying whether the camera's image is real (True) or a zero stand-in for a missing camera (False)."""
    return f"{IMAGES_PREFIX}{camera_key}.mask"


PolicyObservation = dict  # {STATE: (S,) float32, image_key(k): (H, W, 3) uint8, image_mask_key(k): bool, TASK: str}


@dataclass(frozen=True)
class PolicyFeatures:
    """The shapes a policy consumes and produces; the adapter pads and resizes to these."""

    state_dim: int  # width of observation.state (robots with fewer joints are zero-padded)
    action_dim: int  # width of one action (only the first n_joints dimensions are used)
    chunk_size: int  # H: actions per predicted chunk
    action_dt_s: float  # time between consecutive actions of a chunk
    camera_keys: tuple[str, ...]  # observation.images.<key> the policy reads
    image_size: tuple[int, int] | None = None  # (H, W) images are resized (with padding) to; None keeps them
    image_padding: str = "center"  # where resize-with-pad puts the black bars: "center" or "top_left"
    # True: the policy resizes camera frames itself, exactly as its reference implementation does, and the
    # adapter hands them over at their native size (image_size is still the size the model sees).
    resizes_images: bool = False

    def __post_init__(self) -> None:
        for name in ("state_dim", "action_dim", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"policy features: {name} must be >= 1, got {getattr(self, name)}")
        if not self.action_dt_s > 0:
            raise ConfigError(f"policy features: action_dt_s must be > 0 s, got {self.action_dt_s}")
        if self.image_padding not in ("center", "top_left"):
            raise ConfigError(f"policy features: image_padding must be 'center' or 'top_left', got "
                              f"'{self.image_padding}'")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ConfigError(f"policy features: image_size must be positive (H, W), got {self.image_size}")


@dataclass(frozen=True)
class RobotObservation:
    """One time-consistent snapshot of the robot, as it reported it.

    `joint_names`/`joint_positions` may be in any order and include joints the embodiment does not use
    (a mimic finger, say); the adapter picks the embodiment's joints by name.
    """

    stamp: float  # s, the time the snapshot was taken (sensor time, not arrival time)
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # (len(joint_names),) float64, joint units
    images: Mapping[str, np.ndarray] = field(default_factory=dict)  # robot camera name -> (H, W, 3) uint8 RGB
    instruction: str = ""
