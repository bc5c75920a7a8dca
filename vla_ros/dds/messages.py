"""ROS 2 message classes for Cyclone DDS, built at run time from the .msg definitions.

`message_type("sensor_msgs/msg/JointState")` returns a cyclonedds-python `IdlStruct` whose samples are
byte-for-byte what rmw_cyclonedds_cpp puts on the wire for that ROS type, and which behaves like an rclpy message:
every field has a default (`JointState()`), keyword construction works, nested fields are attributes, and the
message's constants are class attributes. Classes are built once per type and cached.

Definitions come from rosbags: its Jazzy typestore for the standard messages (Humble's are identical, except
rmw_dds_common's Gid and the two types that contain it: ask for those with `distro="humble"`), and vla_ros's own
msg/*.msg files, parsed with `get_types_from_msg`. rosbags drops the default values a .msg may give its fields, so
every field starts at zero, empty or a default-constructed message.

Wire format: ROS type `pkg/msg/Name` is DDS type `pkg::msg::dds_::Name_`; its members are the .msg fields in order.
Structs are final and XCDR1 only (plain CDR, encapsulation `00 01 00 00`), the one representation rmw_cyclonedds
allows. The payload ends right after the last field, as rosbags' `serialize_cdr` ends it; rmw_cyclonedds pads what it
sends to a multiple of 4 bytes, which `deserialize` reads.

Field mapping (.msg -> cyclonedds annotation -> Python value):

- bool, int8..int64, uint8..uint64, float32/64 -> the cyclonedds.idl.types primitive -> bool / int / float
- char -> types.uint8 -> int (rosidl turns .msg `char` into IDL uint8; rclpy gives an int too)
- byte -> types.array[types.uint8, 1] -> `bytes` of length 1, like rclpy (default b"\\x00"); byte constants are
  bytes as well (`DiagnosticStatus.OK == b"\\x00"`), so `status.level = DiagnosticStatus.WARN` works as in rclpy
- uint8[], byte[], char[] -> sequence<uint8> -> `bytes`, (de)serialized in one copy: see _OctetSequence. rclpy
  gives array.array / a list of bytes here; assign any 1-D bytes-like object (`array.tobytes()`)
- uint8[N], byte[N], char[N] -> types.array[types.uint8, N] -> `bytes` of length N (cyclonedds' ByteArrayMachine)
- other T[N] -> types.array[T, N] -> list of N values
- other T[] / T[<=N] (uint8[<=N] included) -> types.sequence[T] / types.sequence[T, N] -> list
- a nested message -> its generated class

Constants are class attributes with the .msg value (`PolicyStatus.STATE_ACTIVE == "active"`), as in rclpy.
Field names that are Python keywords get a trailing underscore, as in rosbags.

`type_hash` gives the RIHS01 type hash ROS 2 Jazzy computes for a type (the one rmw_cyclonedds advertises in the
endpoints' USER_DATA): rosbags' `hash_rihs01` over the same definitions, with .msg `char` taken as uint8 as rosidl
does (rosbags hashes it as char, which gives rmw_dds_common/msg/Gid a hash Jazzy does not have). Humble has no type
hashes.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import new_class
from typing import Annotated, Any

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import annotations as idl_annotations
from cyclonedds.idl import types as idl_types
from cyclonedds.idl._builder import Builder
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

DISTROS = ("jazzy", "humble")

# The only message definitions that differ between Humble and Jazzy among those vla_ros uses:
# Gid is char[24] on Humble and char[16] on Jazzy.
DISTRO_SPECIFIC = frozenset({
    "rmw_dds_common/msg/Gid",
    "rmw_dds_common/msg/NodeEntitiesInfo",
    "rmw_dds_common/msg/ParticipantEntitiesInfo",
})

_STORES = {"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}

# Where vla_ros's msg/*.msg files are: a source checkout (or pip install -e), or an install's share/ folder.
MSG_DIRS = (
    Path(__file__).resolve().parents[2] / "msg",
    Path(sys.prefix) / "share" / "vla_ros" / "msg",
)

_PRIMITIVES: dict[str, Any] = {
    "bool": bool,
    "byte": idl_types.uint8,  # cyclonedds 0.10 has no types.byte; the wire bytes are the same
    "int8": idl_types.int8,
    "uint8": idl_types.uint8,
    "int16": idl_types.int16,
    "uint16": idl_types.uint16,
    "int32": idl_types.int32,
    "uint32": idl_types.uint32,
    "int64": idl_types.int64,
    "uint64": idl_types.uint64,
    "float32": idl_types.float32,
    "float64": idl_types.float64,
}
_ZEROS: dict[str, Callable[[], Any]] = {"bool": bool, "float32": float, "float64": float}  # else int
_OCTETS = ("byte", "uint8")  # element types whose unbounded sequences and fixed arrays are Python bytes


class _OctetSequence(idl_types.sequence):
    """sequence<uint8> whose Python value is `bytes`, (de)serialized in one copy.

    cyclonedds serializes a plain `types.sequence[types.uint8]` element by element (~25 ms for a 640x480 RGB image)
    and a `bytes` field in one copy (~0.1 ms) with the same wire bytes, but cannot describe `bytes` in the XTypes
    type information every Topic needs. This sequence describes itself as sequence<uint8> (it is one) and is
    registered with cyclonedds' machine builder (a private module, alike in cyclonedds 0.10 and 11) to get the
    `bytes` serializer. Identity equality keeps the registration from reaching anyone else's sequence[uint8].
    """

    __eq__ = object.__eq__
    __hash__ = object.__hash__


_OCTET_SEQUENCE = _OctetSequence(idl_types.uint8)
Builder.easy_types[_OCTET_SEQUENCE] = Builder.easy_types[bytes]

# Nested builds re-enter; one lock keeps concurrent first uses from building two classes for one type.
_lock = threading.RLock()
_classes: dict[tuple[str, str], type[IdlStruct]] = {}


def dds_type_name(name: str) -> str:
    """The DDS type name of ROS type `name`: "sensor_msgs/msg/JointState" -> "sensor_msgs::msg::dds_::JointState_"."""
    package, interface, short = _split(name)
    return f"{package}::{interface}::dds_::{short}_"


def message_type(name: str, distro: str = "jazzy") -> type[IdlStruct]:
    """The message class of ROS type `name` ("pkg/msg/Name"), as defined on `distro` ("jazzy" or "humble").

    Only the types in DISTRO_SPECIFIC differ between distros; for every other type both give the same class.
    """
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS 2 distro {distro!r}: use one of {', '.join(DISTROS)}")
    key = (name, distro if name in DISTRO_SPECIFIC else "jazzy")
    with _lock:
        if key not in _classes:
            _classes[key] = _build_class(*key)
        return _classes[key]


@functools.cache
def type_hash(name: str) -> str:
    """The RIHS01 hash ROS 2 Jazzy gives type `name`, e.g. "RIHS01_df668c74..." for std_msgs/msg/String."""
    _definition(name, "jazzy")  # a clear error for unknown types
    return _hash_typestore().hash_rihs01(name)


@functools.cache
def typestore(distro: str = "jazzy") -> Typestore:
    """rosbags' typestore of `distro` with vla_ros's messages added: the definitions the classes are built from."""
    store = get_typestore(_STORES[distro])
    msg_dir = next((d for d in MSG_DIRS if d.is_dir()), None)
    if msg_dir is not None:
        for path in sorted(msg_dir.glob("*.msg")):
            store.register(get_types_from_msg(path.read_text(encoding="utf-8"), f"vla_ros/msg/{path.stem}"))
    return store


def _split(name: str) -> tuple[str, str, str]:
    parts = name.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"ROS type names look like 'sensor_msgs/msg/JointState', not {name!r}")
    return parts[0], parts[1], parts[2]


def _definition(name: str, distro: str) -> tuple[list[tuple[str, str, Any]], list[tuple[str, Any]]]:
    """Constants and fields of `name`, with .msg `char` already turned into uint8."""
    _split(name)
    try:
        constants, fields = typestore(distro).fielddefs[name]
    except KeyError:
        hint = f" (vla_ros's .msg files are looked for in {', '.join(map(str, MSG_DIRS))})" \
            if name.startswith("vla_ros/") else ""
        raise KeyError(f"unknown ROS message type {name!r}{hint}") from None
    return (
        [(const, "uint8" if kind == "char" else kind, value) for const, kind, value in constants],
        [(field, _char_as_uint8(desc)) for field, desc in fields],
    )


def _char_as_uint8(desc: Any) -> Any:
    """A rosbags field description with .msg `char` replaced by uint8, the IDL type rosidl gives it."""
    kind, value = desc
    if kind == Nodetype.BASE:
        return (kind, ("uint8", 0)) if value[0] == "char" else desc
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        return kind, (_char_as_uint8(value[0]), value[1])
    return desc


@functools.cache
def _hash_typestore() -> Typestore:
    """Jazzy's definitions with `char` as uint8, for rosbags' RIHS01 hashing (which reads only `fielddefs`)."""
    store = Typestore()
    store.fielddefs.update(
        {name: _definition(name, "jazzy") for name in typestore("jazzy").fielddefs})
    return store


def _build_class(name: str, distro: str) -> type[IdlStruct]:
    constants, fields = _definition(name, distro)
    annotations: dict[str, Any] = {}
    defaults: dict[str, dataclasses.Field] = {}
    for field_name, desc in fields:
        attribute = f"{field_name}_" if keyword.iskeyword(field_name) else field_name
        annotations[attribute], defaults[attribute] = _field(desc, distro)

    def body(namespace: dict[str, Any]) -> None:
        namespace["__annotations__"].update(annotations)  # IdlMeta.__prepare__ made the dict
        namespace.update(defaults)
        namespace.update({const: bytes([value]) if kind == "byte" else value for const, kind, value in constants})
        namespace["__module__"] = __name__
        namespace["__doc__"] = f"ROS 2 message {name}."

    cls = new_class(_split(name)[2], (IdlStruct,), {"typename": dds_type_name(name)}, body)
    # final + XCDR1 only: rmw_cyclonedds misreads the XCDR2 that appendable/mutable types would default to.
    return dataclasses.dataclass(idl_annotations.cdrv0(idl_annotations.final(cls)))


def _field(desc: Any, distro: str) -> tuple[Any, dataclasses.Field]:
    """The cyclonedds annotation of a field and its dataclass default."""
    kind, value = desc
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        element, count = value
        octets = element[0] == Nodetype.BASE and element[1][0] in _OCTETS
        if octets and kind == Nodetype.ARRAY:
            return idl_types.array[idl_types.uint8, count], dataclasses.field(default=bytes(count))
        if octets and not count:
            return Annotated[bytes, _OCTET_SEQUENCE], dataclasses.field(default=b"")
        annotation, zero = _element(element, distro)
        if kind == Nodetype.ARRAY:
            return idl_types.array[annotation, count], dataclasses.field(
                default_factory=lambda: [zero() for _ in range(count)])
        sequence = idl_types.sequence[annotation, count] if count else idl_types.sequence[annotation]
        return sequence, dataclasses.field(default_factory=list)
    if kind == Nodetype.BASE and value[0] == "byte":
        # An array of one octet is the same single byte on the wire, and cyclonedds hands it over as bytes.
        return idl_types.array[idl_types.uint8, 1], dataclasses.field(default=b"\x00")
    annotation, zero = _element(desc, distro)
    if kind == Nodetype.NAME:
        return annotation, dataclasses.field(default_factory=zero)
    return annotation, dataclasses.field(default=zero())


def _element(desc: Any, distro: str) -> tuple[Any, Callable[[], Any]]:
    """The cyclonedds annotation of a single value of a field and a function making its zero value."""
    kind, value = desc
    if kind == Nodetype.NAME:
        cls = message_type(value, distro)
        return cls, cls
    base, bound = value
    if base == "string":
        return (idl_types.bounded_str[bound] if bound else str), str
    if base not in _PRIMITIVES:
        raise TypeError(f"ROS type {base!r} is not supported")
    return _PRIMITIVES[base], _ZEROS.get(base, int)
