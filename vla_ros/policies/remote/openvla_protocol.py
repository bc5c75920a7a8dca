"""OpenVLA's and OpenVLA-OFT's HTTP policy protocol: the JSON-numpy codec, the messages, the robot's mapping.

What their `vla-scripts/deploy.py` servers speak (FastAPI, `json_numpy`):

    POST /act   OpenVLA:      {"image": (H, W, 3) uint8, "instruction": str, "unnorm_key": str (optional)}
                OpenVLA-OFT:  {"full_image": ..., "<name>wrist<name>": ... (every key containing "wrist"),
                               "state": (D,) float, "instruction": str}
    reply       OpenVLA: one action (7,) float: [dx, dy, dz, droll, dpitch, dyaw, gripper];
                OpenVLA-OFT: the chunk, a list of K actions (e.g. 8 x 7 end-effector deltas on LIBERO, 25 x 14
                absolute joints on ALOHA); both answer the JSON string "error" (HTTP 200) when they fail.
    arrays      {"__numpy__": base64 of the raw bytes, "dtype": "<f4", "shape": [...]} (json_numpy's format);
                a body {"encoded": "<json text>"} carries the request as a string, and is answered the same way.

Only plain number, bool and fixed-width string dtypes are decoded (no pickle, no object arrays).

How vla_ros reads a reply (the robot YAML's `policy_servers.openvla`): action i of a reply is reached one step
(`step_s`) after action i - 1, the first one step after the observation. `action_space: joints`: each action is
the robot's joints in policy units, as the adapter reads a policy's actions. `action_space: ee_delta`: each is a
tool move in the robot's base frame: translation (m), then roll, pitch, yaw (rad; R_new = Rz(yaw) Ry(pitch)
Rx(roll) R), times the YAML's scales, and the gripper's opening (1 open .. 0 closed, OpenVLA's convention;
`gripper_open: 0` flips it); the joint targets come from the robot's inverse kinematics (end_effector.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError, did_you_mean
from vla_ros.policies.remote.protocol import WIRE_KINDS

ACT_PATH = "/act"
ERROR_REPLY = "error"  # what OpenVLA's server answers on any failure
ACTION_SPACES = ("ee_delta", "joints")
REQUEST_STYLES = ("openvla", "oft")
EE_DELTA_WIDTH = 7


# ---------------------------------------------------------------------------------------------------------------------
# Codec


def dumps(message: Any) -> str:
    """JSON text of `message`, numpy arrays and scalars in json_numpy's format."""
    try:
        return json.dumps(message, default=_encode)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"cannot encode an OpenVLA message: {exc}") from exc


def loads(text: str | bytes, *, source: str = "peer") -> Any:
    """The message in JSON `text`, json_numpy arrays restored; PolicyError naming what is wrong."""
    try:
        return json.loads(text, object_hook=_decode)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise PolicyError(f"{source} sent a body that is not JSON ({type(exc).__name__}: {exc})") from None


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in WIRE_KINDS or obj.dtype.hasobject:
            raise TypeError(f"refusing to send an array of dtype {obj.dtype.str!r}")
        return {"__numpy__": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode("ascii"),
                "dtype": obj.dtype.str, "shape": list(np.shape(obj))}
    raise TypeError(f"{type(obj).__name__} cannot be sent as JSON")


def _decode(obj: dict) -> Any:
    if "__numpy__" not in obj:
        return obj
    try:
        dtype = np.dtype(obj.get("dtype"))
    except (TypeError, ValueError):
        raise PolicyError(f"unknown dtype {obj.get('dtype')!r}") from None
    if dtype.kind not in WIRE_KINDS or dtype.hasobject or dtype.itemsize == 0:
        raise PolicyError(f"refusing to receive an array of dtype {dtype.str!r}: only bool, integer, float and "
                          "fixed-width string arrays are accepted (object arrays would need pickle)")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise PolicyError(f"array shape must be a list of non-negative integers, got {shape!r}")
    try:
        data = base64.b64decode(obj["__numpy__"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise PolicyError("array data is not base64") from None
    count = math.prod(shape) if shape else 1
    if len(data) != count * dtype.itemsize:
        raise PolicyError(f"array of shape {tuple(shape)} and dtype {dtype.str} needs {count * dtype.itemsize} "
                          f"bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=dtype).copy()
    return array.reshape(shape) if shape else array[0]


# ---------------------------------------------------------------------------------------------------------------------
# The robot's mapping


@dataclass(frozen=True)
class OpenVlaMapping:
    """`policy_servers.openvla` of a robot YAML, checked."""

    camera: str  # the robot camera sent as the main image
    wrist_cameras: Mapping[str, str]  # OFT request key (containing "wrist") -> robot camera
    image_size: tuple[int, int]  # (H, W) images are resized to, with padding
    action_space: str  # one of ACTION_SPACES
    step_s: float  # time from one action of a reply to the next
    request: str = "openvla"  # one of REQUEST_STYLES
    unnorm_key: str | None = None  # OpenVLA: which dataset's statistics un-normalize the actions
    translation_scale: float = 1.0  # ee_delta: metres per unit of the first three numbers
    rotation_scale: float = 1.0  # ee_delta: radians per unit of the next three
    gripper_open: float = 1.0  # ee_delta: the gripper number meaning fully open (the other end, 1 - it, closed)
    end_effector: Mapping[str, Any] | None = None  # ee_delta: the kinematics (end_effector.py)


def mapping_from_config(embodiment: EmbodimentConfig) -> OpenVlaMapping:
    """The robot's OpenVLA mapping; ConfigError naming the YAML key that is missing or wrong."""
    source = embodiment.source
    section = embodiment.policy_servers.get("openvla")
    if not isinstance(section, Mapping):
        raise ConfigError(f"robot '{embodiment.robot}' has no OpenVLA mapping: add policy_servers.openvla with at "
                          "least action_space (ee_delta or joints) and, for ee_delta, end_effector (the kinematics "
                          "that turn end-effector moves into joint targets)", source=source,
                          key="policy_servers.openvla")
    fields = ("camera", "wrist_cameras", "image_size", "action_space", "step_s", "request", "unnorm_key",
              "translation_scale", "rotation_scale", "gripper_open", "end_effector")
    for key in section:
        if key not in fields:
            raise ConfigError("unknown key." + did_you_mean(str(key), fields), source=source,
                              key=f"policy_servers.openvla.{key}")

    def fail(key: str, message: str):
        raise ConfigError(message, source=source, key=f"policy_servers.openvla.{key}")

    cameras = [c.name for c in embodiment.cameras]
    camera = section.get("camera", cameras[0] if cameras else None)
    if camera not in cameras:
        fail("camera", f"'{camera}' is not a camera of robot '{embodiment.robot}'." + did_you_mean(str(camera),
                                                                                                     cameras))
    wrist = section.get("wrist_cameras", {})
    if not isinstance(wrist, Mapping) or not all(isinstance(k, str) and "wrist" in k and v in cameras
                                                 for k, v in wrist.items()):
        fail("wrist_cameras", f"must map request keys containing 'wrist' to cameras of {cameras}, got {wrist!r}")
    size = section.get("image_size", [224, 224])
    if not isinstance(size, list) or len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
        fail("image_size", f"must be [height, width] in pixels, got {size!r}")
    action_space = section.get("action_space")
    if action_space not in ACTION_SPACES:
        fail("action_space", f"must be one of {list(ACTION_SPACES)}, got {action_space!r}")
    request = section.get("request", "openvla")
    if request not in REQUEST_STYLES:
        fail("request", f"must be one of {list(REQUEST_STYLES)}, got {request!r}")
    numbers = {}
    for key, default in (("step_s", embodiment.control_period_s), ("translation_scale", 1.0),
                         ("rotation_scale", 1.0), ("gripper_open", 1.0)):
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(key, f"must be a number, got {value!r}")
        numbers[key] = float(value)
    if not numbers["step_s"] > 0:
        fail("step_s", f"must be > 0 s, got {numbers['step_s']}")
    if numbers["gripper_open"] not in (0.0, 1.0):
        fail("gripper_open", f"must be 1 (1 open, 0 closed: OpenVLA) or 0, got {numbers['gripper_open']}")
    end_effector = section.get("end_effector")
    if action_space == "ee_delta":
        if not isinstance(end_effector, Mapping):
            fail("end_effector", f"robot '{embodiment.robot}' has no end-effector kinematics, which end-effector "
                                 "actions (action_space: ee_delta) need to become joint targets: add end_effector "
                                 "(e.g. {solver: mujoco, site: tcp} for a simulated arm)")
        if len(embodiment.grippers) != 1:
            fail("action_space", f"ee_delta actions move one arm with one gripper; robot '{embodiment.robot}' has "
                                 f"{len(embodiment.grippers)} grippers")
    unnorm_key = section.get("unnorm_key")
    if unnorm_key is not None and not isinstance(unnorm_key, str):
        fail("unnorm_key", f"must be a string, got {unnorm_key!r}")
    return OpenVlaMapping(camera=camera, wrist_cameras=dict(wrist), image_size=(size[0], size[1]),
                          action_space=action_space, step_s=numbers["step_s"], request=request,
                          unnorm_key=unnorm_key, translation_scale=numbers["translation_scale"],
                          rotation_scale=numbers["rotation_scale"], gripper_open=numbers["gripper_open"],
                          end_effector=end_effector)


# ---------------------------------------------------------------------------------------------------------------------
# End-effector deltas


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), (3, 3)."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), \
        math.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_rpy(rotation: np.ndarray) -> np.ndarray:
    """Mirror of `rpy_matrix`: (roll, pitch, yaw) of a rotation matrix (pitch in [-pi/2, pi/2])."""
    pitch = math.asin(max(-1.0, min(1.0, -rotation[2, 0])))
    roll = math.atan2(rotation[2, 1], rotation[2, 2])
    yaw = math.atan2(rotation[1, 0], rotation[0, 0])
    return np.array([roll, pitch, yaw])


def apply_delta(position: np.ndarray, rotation: np.ndarray, delta: np.ndarray, mapping: OpenVlaMapping
                ) -> tuple[np.ndarray, np.ndarray]:
    """The pose after one end-effector move `delta` (first six numbers of an ee_delta action)."""
    translation = np.asarray(delta[:3], dtype=np.float64) * mapping.translation_scale
    roll, pitch, yaw = np.asarray(delta[3:6], dtype=np.float64) * mapping.rotation_scale
    return position + translation, rpy_matrix(roll, pitch, yaw) @ rotation


def pose_delta(position: np.ndarray, rotation: np.ndarray, new_position: np.ndarray, new_rotation: np.ndarray,
               mapping: OpenVlaMapping) -> np.ndarray:
    """Mirror of `apply_delta`: the six numbers that move (position, rotation) to (new_position, new_rotation)."""
    translation = (new_position - position) / mapping.translation_scale
    return np.concatenate([translation, matrix_rpy(new_rotation @ rotation.T) / mapping.rotation_scale])


class ActionConverter:
    """A reply's actions <-> a policy chunk in policy units, for one robot and its mapping.

    `features`: the policy's (server side) or the client's own (client side) features, for the adapter.
    """

    def __init__(self, embodiment: EmbodimentConfig, mapping: OpenVlaMapping, features):
        from vla_ros.core.adapter import EmbodimentAdapter

        self.mapping = mapping
        self.adapter = EmbodimentAdapter(embodiment, features)
        self.n_joints = len(embodiment.joints)
        self.kinematics = None
        if mapping.action_space == "ee_delta":
            from vla_ros.policies.remote.end_effector import EndEffectorKinematics

            self.kinematics = EndEffectorKinematics(embodiment, mapping.end_effector)

    @property
    def action_width(self) -> int:
        return EE_DELTA_WIDTH if self.kinematics is not None else self.n_joints

    def to_chunk(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """(K, width) reply actions -> (K + 1, action_dim) policy actions: step 0 holds `state` (n,) (joint units,
        the observation's), step i + 1 reaches reply action i."""
        targets = np.empty((len(actions) + 1, self.n_joints))
        targets[0] = state
        if self.kinematics is None:
            joints = self.adapter.actions_to_robot(_padded(actions, self.adapter.features.action_dim), state)
            targets[1:] = joints
        else:
            kinematics = self.kinematics
            position, rotation = kinematics.forward(state)
            for i, action in enumerate(actions):
                position, rotation = apply_delta(position, rotation, action, self.mapping)
                targets[i + 1] = kinematics.inverse(position, rotation, targets[i])
                opening = action[6] if self.mapping.gripper_open == 1.0 else 1.0 - action[6]
                targets[i + 1, kinematics.gripper_index] = kinematics.gripper_joint(opening)
        return self.adapter.robot_to_actions(targets, state)

    def from_chunk(self, chunk: np.ndarray, state: np.ndarray, steps: list[int]) -> np.ndarray:
        """Mirror of `to_chunk` for a server: the policy chunk's steps `steps` as (len(steps), width) actions."""
        targets = self.adapter.actions_to_robot(chunk, state)[steps]
        if self.kinematics is None:
            return self.adapter.robot_to_actions(targets, state)[:, :self.n_joints]
        kinematics = self.kinematics
        out = np.empty((len(steps), EE_DELTA_WIDTH), dtype=np.float32)
        position, rotation = kinematics.forward(state)
        for i, joints in enumerate(targets):
            new_position, new_rotation = kinematics.forward(joints)
            out[i, :6] = pose_delta(position, rotation, new_position, new_rotation, self.mapping)
            opening = kinematics.gripper_opening(joints[kinematics.gripper_index])
            out[i, 6] = opening if self.mapping.gripper_open == 1.0 else 1.0 - opening
            position, rotation = new_position, new_rotation
        return out


def _padded(actions: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(actions), width), dtype=np.float32)
    out[:, :actions.shape[1]] = actions
    return out
