"""openpi's websocket policy protocol: the msgpack-numpy codec and the message conventions vla_ros uses on it.

The exchange (openpi's `WebsocketPolicyServer`, which the PyPI package `openpi-client` talks to):

    server -> client   metadata dict, once, right after the websocket handshake
    client -> server   observation dict            (binary frame)
    server -> client   action dict                 (binary frame), with `server_timing` {"infer_ms": ...}
    server -> client   on failure: the error as a text frame, then the connection is closed

Frames are msgpack. A numpy array travels as a map {b"__ndarray__": True, b"data": raw bytes, b"dtype": "<f4",
b"shape": [...]} and a numpy scalar as {b"__npgeneric__": True, b"data": value, b"dtype": "<f4"} (byte-string
keys, as openpi-client writes and reads them). Only plain numeric, bool and fixed-width string dtypes cross the
wire: object arrays would need pickle, which can run arbitrary code, so they are refused both ways.

vla_ros's conventions on top (a plain openpi server ignores what it does not know):
- observation: LeRobot feature names (`observation.state`, `observation.images.<key>` (H, W, 3) uint8,
  `observation.images.<key>.mask`, `task`); the task is also sent as openpi's `prompt`, and a server accepts either.
- reply: `actions` (chunk_size, action_dim) float32 in policy units, `server_timing` in milliseconds.
- metadata: the served policy's PolicyMetadata, its features included, tagged with `vla_ros_protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from vla_ros.core.errors import ConfigError, MissingDependencyError, ObservationError, PolicyError
from vla_ros.core.features import (
    STATE,
    TASK,
    PolicyFeatures,
    PolicyObservation,
    image_key,
    image_mask_key,
)
from vla_ros.policies.base import PolicyMetadata
from vla_ros.policies.remote import TOKEN_ENV  # noqa: F401 - re-exported for the server and client

try:
    import msgpack
except ImportError as exc:  # the package is imported only for ws:// specs and `vla-ros serve`
    raise MissingDependencyError("msgpack", "remote", "The remote policy protocol") from exc

PROTOCOL_VERSION = 1  # `vla_ros_protocol` in the metadata; bump on an incompatible change of these conventions
PROMPT = "prompt"  # openpi's name for the task
ACTIONS = "actions"
SERVER_TIMING = "server_timing"

# numpy kinds that are plain bytes on the wire: bool, signed/unsigned int, float, bytes, unicode.
# Object ('O') and void/structured ('V') need pickle or carry layouts we do not check; complex is refused as
# openpi refuses it, and datetimes have no use here.
WIRE_KINDS = "biufSU"
_ARRAY_TAG, _SCALAR_TAG = b"__ndarray__", b"__npgeneric__"


def pack(message: Any) -> bytes:
    """msgpack bytes of `message` (dicts, lists, str, numbers, numpy arrays and scalars)."""
    try:
        return msgpack.packb(message, default=_encode_numpy, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PolicyError(f"cannot encode a policy message: {exc}") from exc


def unpack(data: bytes, *, source: str = "peer") -> Any:
    """The message in msgpack `data`, numpy arrays restored (writable copies). Raises PolicyError on anything
    that is not a well-formed message of this protocol (a pickle, an unknown msgpack extension, a bad array)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PolicyError(f"{source} sent a {type(data).__name__} frame, expected binary msgpack")
    try:
        return msgpack.unpackb(data, object_hook=_decode_numpy, ext_hook=_refuse_extension, raw=False)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # A pickle starts with 0x80, an empty msgpack map followed by "extra data": it lands here, never unpickled.
        raise PolicyError(f"{source} sent a frame that is not a msgpack message ({type(exc).__name__}: {exc}); "
                          "pickled payloads are never accepted") from None


def _encode_numpy(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        _check_wire_dtype(obj.dtype, "send")
        if isinstance(obj, np.ndarray):
            return {_ARRAY_TAG: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
        return {_SCALAR_TAG: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"{type(obj).__name__} cannot be sent: use numbers, strings, lists, dicts and numpy arrays")


def _decode_numpy(obj: dict) -> Any:
    if obj.get(_ARRAY_TAG) is True or obj.get(_ARRAY_TAG.decode()) is True:
        dtype = _wire_dtype(_field(obj, "dtype"))
        shape = _field(obj, "shape")
        data = _field(obj, "data")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise PolicyError(f"array shape must be a list of non-negative integers, got {shape!r}")
        if not isinstance(data, bytes):
            raise PolicyError(f"array data must be binary, got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise PolicyError(f"array of shape {tuple(shape)} and dtype {dtype.str} needs {expected} bytes, "
                              f"got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if obj.get(_SCALAR_TAG) is True or obj.get(_SCALAR_TAG.decode()) is True:
        dtype = _wire_dtype(_field(obj, "dtype"))
        try:
            return dtype.type(_field(obj, "data"))
        except (TypeError, ValueError, OverflowError) as exc:
            raise PolicyError(f"bad numpy scalar of dtype {dtype.str}: {exc}") from None
    return obj


def _field(obj: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in obj:
            return obj[key]
    raise PolicyError(f"numpy value without its '{name}' field")


def _wire_dtype(text: Any) -> np.dtype:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        raise PolicyError(f"dtype must be a string such as '<f4', got {type(text).__name__}")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise PolicyError(f"unknown dtype {text!r}") from None
    _check_wire_dtype(dtype, "receive")
    return dtype


def _check_wire_dtype(dtype: np.dtype, direction: str) -> None:
    if dtype.kind not in WIRE_KINDS or dtype.hasobject or dtype.itemsize == 0:
        raise PolicyError(f"refusing to {direction} an array of dtype {dtype.str!r} (kind '{dtype.kind}'): only "
                          "bool, integer, float and fixed-width string arrays cross the wire (object arrays would "
                          "need pickle)")


def _refuse_extension(code: int, data: bytes) -> Any:
    raise PolicyError(f"msgpack extension type {code} ({len(data)} bytes) is not part of this protocol")


# ---------------------------------------------------------------------------------------------------------------------
# Metadata


def metadata_to_wire(metadata: PolicyMetadata, *, robot: str | None = None, max_message_bytes: int | None = None
                     ) -> dict:
    """The metadata dict a server sends on connect."""
    f = metadata.features
    return {
        "vla_ros_protocol": PROTOCOL_VERSION,
        "name": metadata.name,
        "description": metadata.description,
        "learned": metadata.learned,
        "features": {
            "state_dim": f.state_dim,
            "action_dim": f.action_dim,
            "chunk_size": f.chunk_size,
            "action_dt_s": f.action_dt_s,
            "camera_keys": list(f.camera_keys),
            "image_size": None if f.image_size is None else list(f.image_size),
        },
        "normalization": dict(metadata.normalization),
        "device": metadata.device,
        "dtype": metadata.dtype,
        "load_time_s": metadata.load_time_s,
        "supports_prefix": False,  # a ChunkPrefix does not travel over this protocol yet
        "robot": robot,  # the embodiment the server built the policy for (its units and rates)
        "max_message_bytes": max_message_bytes,
    }


def features_from_wire(metadata: Any, *, source: str) -> PolicyFeatures | None:
    """The PolicyFeatures in a server's metadata; None when it has none (a plain openpi server)."""
    if not isinstance(metadata, Mapping):
        raise PolicyError(f"{source} sent metadata of type {type(metadata).__name__}, expected a map")
    features = metadata.get("features")
    if features is None:
        return None
    try:
        image_size = features.get("image_size")
        return PolicyFeatures(
            state_dim=_int(features["state_dim"]),
            action_dim=_int(features["action_dim"]),
            chunk_size=_int(features["chunk_size"]),
            action_dt_s=float(features["action_dt_s"]),
            camera_keys=tuple(str(k) for k in features.get("camera_keys", ())),
            image_size=None if image_size is None else (_int(image_size[0]), _int(image_size[1])),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise PolicyError(f"{source} sent unusable policy features {features!r}: {type(exc).__name__} {exc}") from None
    except ConfigError as exc:  # PolicyFeatures' own range checks
        raise PolicyError(f"{source} sent invalid policy features: {exc}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------------------
# Observations and replies


def observation_to_wire(observation: PolicyObservation) -> dict:
    """What a client sends: the policy observation as is, with the task also under openpi's `prompt`."""
    message = dict(observation)
    if TASK in message:
        message[PROMPT] = message[TASK]
    return message


def observation_from_wire(message: Any, features: PolicyFeatures) -> PolicyObservation:
    """A server's policy input from a client's message, checked against the served policy's features.

    Raises ObservationError saying what was expected; keys the policy does not read are ignored.
    """
    if not isinstance(message, Mapping):
        raise ObservationError(f"an observation must be a map, got {type(message).__name__}")
    task = message.get(TASK, message.get(PROMPT, ""))
    if not isinstance(task, str):
        raise ObservationError(f"'{TASK}' (or '{PROMPT}') must be a string, got {type(task).__name__}")
    state = message.get(STATE)
    if not isinstance(state, np.ndarray) or state.shape != (features.state_dim,) or state.dtype.kind not in "iuf":
        got = f"{state.dtype} array of shape {state.shape}" if isinstance(state, np.ndarray) else repr(type(state))
        raise ObservationError(f"'{STATE}' must be a ({features.state_dim},) float array in policy units (zero-"
                               f"padded), got {got}")
    observation: PolicyObservation = {STATE: state.astype(np.float32, copy=False), TASK: task}
    for key in features.camera_keys:
        name = image_key(key)
        image = message.get(name)
        if image is None:
            raise ObservationError(f"'{name}' is missing (this policy reads {', '.join(features.camera_keys)}); "
                                   f"send a camera the robot lacks as zeros with '{image_mask_key(key)}' False")
        expected = (*features.image_size, 3) if features.image_size is not None else None
        if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
                or expected is not None and image.shape != expected):
            got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else repr(type(image))
            want = f"{expected}" if expected is not None else "(H, W, 3)"
            raise ObservationError(f"'{name}' must be a {want} uint8 RGB image (resized with padding on the client), "
                                   f"got {got}")
        observation[name] = image
        mask = message.get(image_mask_key(key), True)
        if not isinstance(mask, (bool, np.bool_)):
            raise ObservationError(f"'{image_mask_key(key)}' must be a bool, got {type(mask).__name__}")
        observation[image_mask_key(key)] = bool(mask)
    return observation


def reply_to_wire(actions: np.ndarray, server_timing: Mapping[str, float]) -> dict:
    return {ACTIONS: np.asarray(actions, dtype=np.float32), SERVER_TIMING: dict(server_timing)}


def actions_from_wire(message: Any, *, source: str) -> np.ndarray:
    """The (H, A) float32 actions of a reply; shapes are checked by the caller against its features."""
    if not isinstance(message, Mapping) or ACTIONS not in message:
        keys = sorted(map(str, message)) if isinstance(message, Mapping) else type(message).__name__
        raise PolicyError(f"{source} replied without '{ACTIONS}' (got {keys})")
    actions = message[ACTIONS]
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.dtype.kind not in "iuf":
        got = f"{actions.dtype} {actions.shape}" if isinstance(actions, np.ndarray) else type(actions).__name__
        raise PolicyError(f"{source} replied with '{ACTIONS}' that are not an (H, action_dim) number array: {got}")
    return actions.astype(np.float32, copy=False)


def import_websockets():
    """The `websockets` package (>= 13: its asyncio server and sync client), or a MissingDependencyError."""
    try:
        import websockets.asyncio.server  # noqa: F401 - the new implementations, not the legacy ones
        import websockets.sync.client  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("websockets>=13", "remote", "The remote policy server and client") from exc
    import websockets

    return websockets
