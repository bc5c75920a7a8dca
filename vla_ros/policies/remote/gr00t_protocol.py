"""Isaac-GR00T's policy-server protocol (ZMQ request/reply, msgpack): the codec, and the robot <-> modality layout.

What Isaac-GR00T's `PolicyServer` (gr00t/policy/server_client.py, N1.6; gr00t/eval/service.py, N1.5) speaks:

    request   {"endpoint": "ping" | "get_modality_config" | "get_action" | "reset", "data": {...},
               "api_token": "..." (only when the server has one)}
    reply     the endpoint's result, or {"error": "<message>"}
    arrays    {"__ndarray_class__": True, "as_npy": <bytes of np.save(..., allow_pickle=False)>}
    configs   {"__ModalityConfig_class__": True, "as_json": {...}}  (N1.6: a map; N1.5: a JSON string)

N1.6's `get_action` takes {"observation": {"video": {key: (B, T, H, W, 3) uint8}, "state": {key: (B, T, D)
float32}, "language": {key: [[text]] (B, T)}}, "options": None} and answers [actions {key: (B, H, D) float32},
info {}]. N1.5's takes the flat observation {"video.<key>": (T, H, W, 3), "state.<key>": (T, D),
"<language key>": [text]} and answers {"action.<key>": (H, D)} (numpy-squeezed: a one-wide part comes back (H,)).
`get_modality_config` answers {"video" | "state" | "action" | "language": config}, each config with
`delta_indices` (the time axis: history for observations, horizon for actions) and `modality_keys`.

Safety: Isaac-GR00T's first release (N1) pickled its messages with torch.save/torch.load; that format is not
spoken here. Arrays are read from the .npy header and raw bytes only (no pickle, object dtypes refused), and
msgpack extension types are refused.
"""

from __future__ import annotations

import ast
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, MissingDependencyError, ObservationError, PolicyError, did_you_mean
from vla_ros.policies.remote.protocol import WIRE_KINDS

try:
    import msgpack
except ImportError as exc:
    raise MissingDependencyError("msgpack", "remote", "The GR00T policy protocol") from exc

ENDPOINTS = ("ping", "get_modality_config", "get_action", "reset")
# N1.6's nested observations; N1.6 behind its --use-sim-policy-wrapper (flat keys, batch axis); N1.5's flat ones.
DIALECTS = ("n1.6", "n1.6_flat", "n1.5")
MODALITIES = ("video", "state", "action", "language")
DEFAULT_LANGUAGE_KEY = "annotation.human.task_description"  # GR00T's LeRobot-style datasets (so100, G1)
DEFAULT_PORT = 5555  # Isaac-GR00T's run_gr00t_server.py
_ARRAY_TAG, _CONFIG_TAG = "__ndarray_class__", "__ModalityConfig_class__"
_NPY_MAGIC = b"\x93NUMPY"


# ---------------------------------------------------------------------------------------------------------------------
# Codec


@dataclass(frozen=True)
class ModalityConfig:
    """One modality's config: the time axis (`delta_indices`, in steps) and its keys; other fields pass through."""

    delta_indices: tuple[int, ...]
    modality_keys: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # N1.6's action_configs and the like
    json_string: bool = False  # it came as N1.5's JSON string

    def to_wire(self) -> dict:
        return {_CONFIG_TAG: True, "as_json": {"delta_indices": list(self.delta_indices),
                                               "modality_keys": list(self.modality_keys), **self.extra}}


def pack(message: Any) -> bytes:
    """msgpack bytes of `message` (dicts, lists, str, numbers, numpy arrays, ModalityConfig)."""
    try:
        return msgpack.packb(message, default=_encode, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PolicyError(f"cannot encode a GR00T message: {exc}") from exc


def unpack(data: bytes, *, source: str = "peer") -> Any:
    """The message in `data`, arrays and modality configs restored. PolicyError on anything malformed."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, ext_hook=_refuse_extension, raw=False,
                               strict_map_key=False)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PolicyError(f"{source} sent a frame that is not a GR00T msgpack message ({type(exc).__name__}: "
                          f"{exc}); pickled payloads (Isaac-GR00T N1's torch.save format) are never accepted") from None


def _encode(obj: Any) -> Any:
    if isinstance(obj, ModalityConfig):
        return obj.to_wire()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in WIRE_KINDS or obj.dtype.hasobject:
            raise TypeError(f"refusing to send an array of dtype {obj.dtype.str!r}: object arrays would need pickle")
        buffer = io.BytesIO()
        np.save(buffer, obj, allow_pickle=False)
        return {_ARRAY_TAG: True, "as_npy": buffer.getvalue()}
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} cannot be sent over the GR00T protocol")


def _decode(obj: dict) -> Any:
    if obj.get(_ARRAY_TAG):
        return read_npy(obj.get("as_npy"))
    if obj.get(_CONFIG_TAG):
        return _modality_config(obj.get("as_json"))
    return obj


def read_npy(data: Any) -> np.ndarray:
    """The array in .npy bytes, read from its header and raw data: never unpickles, refuses object dtypes."""
    if not isinstance(data, bytes) or not data.startswith(_NPY_MAGIC) or len(data) < 10:
        raise PolicyError("array payload is not .npy bytes")
    major = data[6]
    if major == 1:
        header_length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        header_length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise PolicyError(f".npy format version {major} is not supported")
    try:
        header = ast.literal_eval(data[start:start + header_length].decode("latin1" if major < 3 else "utf8"))
        dtype = np.dtype(header["descr"])
        shape = tuple(header["shape"])
        fortran = header["fortran_order"]
    except (ValueError, SyntaxError, TypeError, KeyError, UnicodeDecodeError, MemoryError, RecursionError):
        raise PolicyError("array payload has an unreadable .npy header") from None
    if dtype.kind not in WIRE_KINDS or dtype.hasobject or dtype.itemsize == 0:
        raise PolicyError(f"refusing to receive an array of dtype {dtype.str!r}: only bool, integer, float and "
                          "fixed-width string arrays cross the wire (object arrays would need pickle)")
    if not all(isinstance(n, int) and n >= 0 for n in shape) or not isinstance(fortran, bool):
        raise PolicyError(f"array payload has a bad shape {shape!r}")
    body = data[start + header_length:]
    expected = math.prod(shape) * dtype.itemsize
    if len(body) != expected:
        raise PolicyError(f"array of shape {shape} and dtype {dtype.str} needs {expected} bytes, got {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _modality_config(as_json: Any) -> ModalityConfig:
    json_string = isinstance(as_json, str)
    if json_string:
        try:
            as_json = json.loads(as_json)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"modality config is not JSON: {exc}") from None
    if not isinstance(as_json, Mapping):
        raise PolicyError(f"modality config must be a map, got {type(as_json).__name__}")
    indices, keys = as_json.get("delta_indices"), as_json.get("modality_keys")
    if (not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
            or not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys)):
        raise PolicyError(f"modality config needs delta_indices (integers) and modality_keys (strings), got "
                          f"{dict(as_json)!r}")
    extra = {k: v for k, v in as_json.items() if k not in ("delta_indices", "modality_keys")}
    return ModalityConfig(tuple(indices), tuple(keys), extra, json_string)


def _refuse_extension(code: int, data: bytes) -> Any:
    raise PolicyError(f"msgpack extension type {code} ({len(data)} bytes) is not part of the GR00T protocol")


def modality_configs_from_wire(message: Any, *, source: str) -> dict[str, ModalityConfig]:
    """The {modality: ModalityConfig} a get_modality_config reply holds; PolicyError naming what is wrong."""
    if not isinstance(message, Mapping) or not all(isinstance(message.get(m), ModalityConfig) for m in MODALITIES):
        got = sorted(map(str, message)) if isinstance(message, Mapping) else type(message).__name__
        raise PolicyError(f"{source} answered get_modality_config without a config for each of {list(MODALITIES)} "
                          f"(got {got}): is it a GR00T policy server?")
    return {m: message[m] for m in MODALITIES}


# ---------------------------------------------------------------------------------------------------------------------
# The robot's layout: which camera feeds which video key, which joints make which state and action part


@dataclass(frozen=True)
class Gr00tLayout:
    """How one robot's cameras and joints map to a GR00T embodiment's modality keys (short keys, no prefix)."""

    video: Mapping[str, str]  # video key -> robot camera name
    state: Mapping[str, tuple[str, ...]]  # state key -> joints, in the part's order
    action: Mapping[str, tuple[str, ...]]  # action key -> joints
    language: str
    action_dt_s: float  # time between actions of the horizon
    image_size: tuple[int, int] | None = None  # (H, W) images are resized (with padding) to; None: as the camera
    dialect: str | None = None  # one of DIALECTS; None: told by the server's modality config

    def joint_indices(self, embodiment: EmbodimentConfig, part: Mapping[str, tuple[str, ...]]
                      ) -> dict[str, np.ndarray]:
        names = embodiment.joint_names
        return {key: np.array([names.index(j) for j in joints], dtype=np.int64) for key, joints in part.items()}


def layout_from_config(embodiment: EmbodimentConfig, server: Mapping[str, ModalityConfig] | None = None
                       ) -> Gr00tLayout:
    """The robot's GR00T layout: `policy_servers.gr00t` of its YAML, each part left out there defaulting to the
    server's keys (`server`: short keys) matched to the robot's cameras and joints; ConfigError naming the YAML key
    to add where no default fits."""
    source = embodiment.source
    section = embodiment.policy_servers.get("gr00t") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("must be a mapping", source=source, key="policy_servers.gr00t")
    known = ("video", "state", "action", "language", "action_dt_s", "image_size", "dialect")
    for key in section:
        if key not in known:
            raise ConfigError("unknown key." + did_you_mean(str(key), known), source=source,
                              key=f"policy_servers.gr00t.{key}")
    cameras = [c.name for c in embodiment.cameras]
    joints = embodiment.joint_names

    def keys_of(modality: str) -> tuple[str, ...]:
        return server[modality].modality_keys if server is not None else ()

    if "video" in section:
        video = _string_map(section["video"], source, "policy_servers.gr00t.video")
        for key, camera in video.items():
            if camera not in cameras:
                raise ConfigError(f"'{camera}' (for video key '{key}') is not a camera of robot "
                                  f"'{embodiment.robot}'." + did_you_mean(camera, cameras), source=source,
                                  key="policy_servers.gr00t.video")
    else:
        video = _default_video(keys_of("video") or tuple(c.policy_key for c in embodiment.cameras), embodiment)
    state = (_joint_groups(section["state"], joints, source, "policy_servers.gr00t.state") if "state" in section
             else _default_groups(keys_of("state"), embodiment, "state"))
    action = (_joint_groups(section["action"], joints, source, "policy_servers.gr00t.action") if "action" in section
              else state if server is None or set(keys_of("action")) == set(state)
              else _default_groups(keys_of("action"), embodiment, "action"))
    covered = {j for group in action.values() for j in group}
    missing = [j for j in joints if j not in covered]
    if missing:
        raise ConfigError(f"joints {missing} are in no GR00T action part ({dict(action)}): every joint needs a "
                          "target", source=source, key="policy_servers.gr00t.action")
    language = section.get("language") or (keys_of("language")[0] if server is not None else DEFAULT_LANGUAGE_KEY)
    action_dt_s = section.get("action_dt_s", embodiment.control_period_s)
    if isinstance(action_dt_s, bool) or not isinstance(action_dt_s, (int, float)) or not action_dt_s > 0:
        raise ConfigError(f"must be a time > 0 s, got {action_dt_s!r}", source=source,
                          key="policy_servers.gr00t.action_dt_s")
    image_size = section.get("image_size")
    if image_size is not None and (not isinstance(image_size, list) or len(image_size) != 2
                                   or not all(isinstance(n, int) and n > 0 for n in image_size)):
        raise ConfigError(f"must be [height, width] in pixels, got {image_size!r}", source=source,
                          key="policy_servers.gr00t.image_size")
    dialect = section.get("dialect")
    if dialect is not None and dialect not in DIALECTS:
        raise ConfigError(f"unknown dialect {dialect!r}." + did_you_mean(str(dialect), DIALECTS), source=source,
                          key="policy_servers.gr00t.dialect")
    return Gr00tLayout(video=video, state=state, action=action, language=str(language),
                       action_dt_s=float(action_dt_s), image_size=None if image_size is None else tuple(image_size),
                       dialect=dialect)


def _string_map(value: Any, source: str, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"must map GR00T keys to names, got {value!r}", source=source, key=key)
    return dict(value)


def _joint_groups(value: Any, joints: tuple[str, ...], source: str, key: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"must map GR00T keys to lists of joints, got {value!r}", source=source, key=key)
    groups: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for part, names in value.items():
        if (not isinstance(part, str) or not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)):
            raise ConfigError(f"'{part}' must list joints, got {names!r}", source=source, key=key)
        for name in names:
            if name not in joints:
                raise ConfigError(f"'{name}' (in '{part}') is not a joint of this robot." + did_you_mean(name, joints),
                                  source=source, key=key)
            if name in seen:
                raise ConfigError(f"joint '{name}' is in more than one part", source=source, key=key)
            seen.add(name)
        groups[part] = tuple(names)
    return groups


def _default_video(keys: Sequence[str], embodiment: EmbodimentConfig) -> dict[str, str]:
    """Video keys matched to cameras by name or policy key, else in order when the counts agree."""
    by_key = {c.policy_key: c.name for c in embodiment.cameras} | {c.name: c.name for c in embodiment.cameras}
    if all(k in by_key for k in keys):
        return {k: by_key[k] for k in keys}
    if len(keys) == len(embodiment.cameras):
        return {k: c.name for k, c in zip(keys, embodiment.cameras, strict=True)}
    raise ConfigError(f"the server reads video keys {list(keys)}, which do not match robot '{embodiment.robot}''s "
                      f"cameras {[c.name for c in embodiment.cameras]}: map them under policy_servers.gr00t.video "
                      "(video key: camera name)", source=embodiment.source, key="policy_servers.gr00t.video")


def _default_groups(keys: Sequence[str], embodiment: EmbodimentConfig, modality: str) -> dict[str, tuple[str, ...]]:
    """Joint parts from the keys alone: one key takes every joint; an arm key and a gripper key split them."""
    arm = tuple(j for j, is_arm in zip(embodiment.joint_names, embodiment.arm_mask, strict=True) if is_arm)
    grippers = embodiment.gripper_joints
    if not keys:  # our own server, without a YAML mapping: GR00T's so100 naming
        return {"single_arm": arm, "gripper": grippers} if grippers else {"single_arm": arm}
    if len(keys) == 1:
        return {keys[0]: embodiment.joint_names}
    gripper_keys = [k for k in keys if "gripper" in k or "hand" in k]
    if len(keys) == 2 and len(gripper_keys) == 1 and grippers:
        arm_key = next(k for k in keys if k != gripper_keys[0])
        return {arm_key: arm, gripper_keys[0]: grippers}
    raise ConfigError(f"cannot tell which of robot '{embodiment.robot}''s joints make the server's {modality} parts "
                      f"{list(keys)}: list them under policy_servers.gr00t.{modality} (part: [joint, ...])",
                      source=embodiment.source, key=f"policy_servers.gr00t.{modality}")


def check_layout_against_server(layout: Gr00tLayout, configs: Mapping[str, ModalityConfig], *, source: str) -> None:
    """ConfigError naming the keys where the robot's layout and the server's modality config disagree."""
    for modality, ours in (("video", layout.video), ("state", layout.state), ("action", layout.action)):
        theirs = set(configs[modality].modality_keys)
        if set(ours) != theirs:
            raise ConfigError(f"{source} reads {modality} keys {sorted(theirs)}, the robot's layout gives "
                              f"{sorted(ours)}: fix policy_servers.gr00t.{modality}", key=f"policy_servers.gr00t."
                              f"{modality}")
    languages = configs["language"].modality_keys
    if layout.language not in languages:
        raise ConfigError(f"{source} reads language key {list(languages)}, not '{layout.language}': fix "
                          "policy_servers.gr00t.language", key="policy_servers.gr00t.language")
    for modality in ("video", "state"):
        indices = configs[modality].delta_indices
        if tuple(indices) != (0,):
            raise ConfigError(f"{source} wants a {modality} history at steps {list(indices)}; this client sends the "
                              "current observation only (delta_indices [0]): serve an embodiment without history",
                              key=f"policy_servers.gr00t.{modality}")


def strip_prefix(key: str, modality: str) -> str:
    return key[len(modality) + 1:] if key.startswith(f"{modality}.") else key


def check_observation_part(value: Any, *, name: str, kind: str) -> np.ndarray:
    """An observation array with its time axis, as GR00T sends it; ObservationError naming the key otherwise."""
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"'{name}' must be a numpy array, got {type(value).__name__}")
    if kind == "video" and (value.dtype != np.uint8 or value.ndim not in (4, 5) or value.shape[-1] != 3
                            or min(value.shape[-3:-1]) == 0):
        raise ObservationError(f"'{name}' must be (B, T, H, W, 3) or (T, H, W, 3) uint8, got {value.dtype} "
                               f"{value.shape}")
    if kind == "state" and (value.dtype.kind not in "iuf" or value.ndim not in (2, 3)):
        raise ObservationError(f"'{name}' must be (B, T, D) or (T, D) numbers, got {value.dtype} {value.shape}")
    return value
