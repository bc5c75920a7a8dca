"""Explicit, reproducible changes to the simulated scene, for measuring how far a policy generalizes.

A `SceneVariation` names every change it makes in scene units (metres, degrees, light factors), so a benchmark
table can say exactly what each column perturbed. `SimWorld(..., variation=...)` applies it: distractor objects
are added to the MjSpec before compiling; lights and the front camera are changed in the compiled model's fields.
Without a variation (None) the world is built exactly as before, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.sim.palette import CUBE_COLORS

if TYPE_CHECKING:  # MuJoCo loads when a world is built, not when the CLI reads this module's dataclasses
    import mujoco

DISTRACTOR_SHAPES = ("cube", "cylinder", "sphere")
KEY_LIGHT, FILL_LIGHT = "key", "fill"  # scene.xml's lights
VARIED_CAMERA = "front"  # the scene camera; the wrist camera moves with the arm and stays as built


@dataclass(frozen=True)
class Distractor:
    """A non-target object placed on the table with the cubes: `shape` of DISTRACTOR_SHAPES, painted `color` (a
    name of palette.CUBE_COLORS), as wide as the arm's cube times `size_factor`. The world places it at random with
    the cubes on every reset, at least the workspace's spacing from each of them."""

    shape: str
    color: str
    size_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in DISTRACTOR_SHAPES:
            raise ConfigError(f"no distractor shape '{self.shape}'.{did_you_mean(self.shape, DISTRACTOR_SHAPES)}",
                              key="shape")
        if self.color not in CUBE_COLORS:
            raise ConfigError(f"no colour '{self.color}'.{did_you_mean(self.color, CUBE_COLORS)}", key="color")
        if not 0.2 <= self.size_factor <= 2.0:
            raise ConfigError(f"size_factor must be 0.2 to 2, got {self.size_factor}", key="size_factor")

    def describe(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneVariation:
    """What differs from the scene as built. Every field's default leaves its part of the scene unchanged.

    - `distractors`: extra objects on the table, placed with the cubes.
    - `key_light_scale`: factor on the key light's diffuse and specular colour (0.5: half as bright).
    - `key_light_position_m` / `key_light_direction`: where the key light is and where it points (world frame);
      None keeps scene.xml's.
    - `light_tint`: RGB factors on every light's colour (key, fill and the headlight), e.g. a warm lamp.
    - `camera_shift_m`: offset of the front camera's position, world frame (m).
    - `camera_pan_deg`: turn of the front camera about the world's vertical axis (positive: to its left).
    - `camera_tilt_deg`: turn about the camera's own horizontal axis (positive: looking further down).
    """

    distractors: tuple[Distractor, ...] = ()
    key_light_scale: float = 1.0
    key_light_position_m: tuple[float, float, float] | None = None
    key_light_direction: tuple[float, float, float] | None = None
    light_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    camera_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_pan_deg: float = 0.0
    camera_tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.key_light_scale <= 3.0:
            raise ConfigError(f"key_light_scale must be 0 to 3, got {self.key_light_scale}", key="key_light_scale")
        if any(not 0.0 <= t <= 2.0 for t in self.light_tint):
            raise ConfigError(f"light_tint factors must be 0 to 2, got {self.light_tint}", key="light_tint")
        if math.hypot(*self.camera_shift_m) > 0.2 or max(abs(self.camera_pan_deg), abs(self.camera_tilt_deg)) > 30:
            raise ConfigError("a camera variation is a few centimetres and degrees (at most 0.2 m and 30 deg), got "
                              f"{self.camera_shift_m} m, pan {self.camera_pan_deg}, tilt {self.camera_tilt_deg}")

    @property
    def camera_shift_cm(self) -> float:
        """How far the front camera moved (cm)."""
        return 100 * math.hypot(*self.camera_shift_m)

    def describe(self) -> str:
        """What this variation changes, in words and numbers, for reports."""
        parts = []
        if self.distractors:
            parts.append("distractors on the table: " + ", ".join(d.describe() for d in self.distractors))
        if self.key_light_scale != 1.0:
            parts.append(f"key light x{self.key_light_scale:g}")
        if self.key_light_position_m is not None:
            parts.append(f"key light moved to {_vector(self.key_light_position_m)} m")
        if self.key_light_direction is not None:
            parts.append(f"pointing {_vector(self.key_light_direction)}")
        if self.light_tint != (1.0, 1.0, 1.0):
            parts.append(f"all lights tinted RGB x{_vector(self.light_tint)}")
        if any(self.camera_shift_m):
            parts.append(f"front camera moved {_vector(self.camera_shift_m)} m ({self.camera_shift_cm:.1f} cm)")
        if self.camera_pan_deg:
            parts.append(f"panned {self.camera_pan_deg:g} deg")
        if self.camera_tilt_deg:
            parts.append(f"tilted {self.camera_tilt_deg:g} deg down")
        return "; ".join(parts) or "no change"


def _vector(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def distractor_name(index: int) -> str:
    """Body, joint and geom name of the `index`-th distractor."""
    return f"distractor_{index}"


def add_distractors(spec: mujoco.MjSpec, distractors: tuple[Distractor, ...], *, cube_size_m: float,
                    park_at: tuple[float, float]) -> dict[str, float]:
    """Add each distractor as a free body of the environment (collision class of the cubes); name -> the height
    (m) of its centre when it rests on the table. `park_at` (x, y): where they stand before a layout places them."""
    import mujoco

    cube_class = spec.find_default("cube")
    rest_heights = {}
    for index, distractor in enumerate(distractors):
        name = distractor_name(index)
        half = distractor.size_factor * cube_size_m / 2
        if distractor.shape == "cube":
            geom_type, size = mujoco.mjtGeom.mjGEOM_BOX, [half, half, half]
        elif distractor.shape == "cylinder":  # as tall as it is wide: it stands on the table like a cube
            geom_type, size = mujoco.mjtGeom.mjGEOM_CYLINDER, [half, half, 0.0]
        else:
            geom_type, size = mujoco.mjtGeom.mjGEOM_SPHERE, [half, 0.0, 0.0]
        body = spec.worldbody.add_body(name=name, pos=[park_at[0], park_at[1] + 2 * half * index, half])
        body.add_freejoint(name=name)
        body.add_geom(default=cube_class, name=name, type=geom_type, size=size,
                      rgba=[*CUBE_COLORS[distractor.color], 1.0])
        rest_heights[name] = half
    return rest_heights


def apply_to_model(model: mujoco.MjModel, variation: SceneVariation) -> None:
    """Change the compiled model's lights and front camera as `variation` says (distractors are in the spec)."""
    key, fill = model.light(KEY_LIGHT).id, model.light(FILL_LIGHT).id
    model.light_diffuse[key] *= variation.key_light_scale
    model.light_specular[key] *= variation.key_light_scale
    if variation.key_light_position_m is not None:
        model.light_pos[key] = variation.key_light_position_m
    if variation.key_light_direction is not None:
        direction = np.asarray(variation.key_light_direction, dtype=np.float64)
        model.light_dir[key] = direction / np.linalg.norm(direction)
    tint = np.asarray(variation.light_tint, dtype=np.float32)
    for light in (key, fill):
        model.light_diffuse[light] *= tint
        model.light_specular[light] *= tint
    model.vis.headlight.diffuse[:] = np.asarray(model.vis.headlight.diffuse) * tint
    model.vis.headlight.ambient[:] = np.asarray(model.vis.headlight.ambient) * tint

    camera = model.camera(VARIED_CAMERA).id
    if model.cam_bodyid[camera] != 0:
        raise ConfigError(f"the '{VARIED_CAMERA}' camera must be fixed in the world to be moved")
    model.cam_pos[camera] += np.asarray(variation.camera_shift_m)
    model.cam_quat[camera] = _turned(model.cam_quat[camera], variation.camera_pan_deg, variation.camera_tilt_deg)


def _turned(quat: np.ndarray, pan_deg: float, tilt_deg: float) -> np.ndarray:
    """A camera orientation panned about the world's vertical and tilted about the camera's own x axis.

    A MuJoCo camera looks along its -z axis, with +x to the right of the image; turning about +x by a negative
    angle lowers the view, so a positive tilt (looking further down) turns by -tilt.
    """
    import mujoco

    pan, tilt = np.zeros(4), np.zeros(4)
    mujoco.mju_axisAngle2Quat(pan, np.array([0.0, 0.0, 1.0]), math.radians(pan_deg))
    mujoco.mju_axisAngle2Quat(tilt, np.array([1.0, 0.0, 0.0]), -math.radians(tilt_deg))
    panned, result = np.zeros(4), np.zeros(4)
    mujoco.mju_mulQuat(panned, pan, np.asarray(quat, dtype=np.float64))  # world-frame turn: on the left
    mujoco.mju_mulQuat(result, panned, tilt)  # camera-frame turn: on the right
    return result
