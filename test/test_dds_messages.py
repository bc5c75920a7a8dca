"""vla_ros.dds.messages: message classes built from .msg definitions, checked byte for byte against rosbags' CDR.

rosbags' `serialize_cdr` and cyclonedds-python both end the payload right after the last field (no padding to a
multiple of 4), so the bytes must be identical. rmw_cyclonedds_cpp does pad what it sends with up to 3 zero bytes
(serdata.cpp, `resize`): both sides must read payloads with that padding too.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="the pip-only ROS 2 mode needs the cyclonedds wheel (pip install cyclonedds)")
pytest.importorskip("rosbags", reason="message definitions come from rosbags (pip install rosbags)")

from rosbags.interfaces import Nodetype  # noqa: E402

from vla_ros.dds.messages import (  # noqa: E402
    DISTRO_SPECIFIC,
    dds_type_name,
    message_type,
    type_hash,
    typestore,
)

MESSAGES = [
    ("builtin_interfaces/msg/Time", "jazzy"),
    ("builtin_interfaces/msg/Duration", "jazzy"),
    ("std_msgs/msg/Header", "jazzy"),
    ("std_msgs/msg/String", "jazzy"),
    ("std_msgs/msg/Bool", "jazzy"),
    ("std_msgs/msg/Float64MultiArray", "jazzy"),
    ("sensor_msgs/msg/JointState", "jazzy"),
    ("sensor_msgs/msg/Image", "jazzy"),
    ("sensor_msgs/msg/CompressedImage", "jazzy"),
    ("sensor_msgs/msg/CameraInfo", "jazzy"),
    ("trajectory_msgs/msg/JointTrajectory", "jazzy"),
    ("trajectory_msgs/msg/JointTrajectoryPoint", "jazzy"),
    ("rosgraph_msgs/msg/Clock", "jazzy"),
    ("diagnostic_msgs/msg/DiagnosticArray", "jazzy"),
    ("diagnostic_msgs/msg/DiagnosticStatus", "jazzy"),
    ("diagnostic_msgs/msg/KeyValue", "jazzy"),
    ("vla_ros/msg/ActionChunk", "jazzy"),
    ("vla_ros/msg/PolicyStatus", "jazzy"),
    ("rmw_dds_common/msg/ParticipantEntitiesInfo", "jazzy"),
    ("rmw_dds_common/msg/ParticipantEntitiesInfo", "humble"),
]
IDS = [f"{name}[{distro}]" for name, distro in MESSAGES]

OCTETS = ("byte", "char", "uint8")
DTYPES = {"bool": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
          "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "float32": np.float32, "float64": np.float64}
# Values far from zero in every type, negative where signed; float32 ones exact in binary.
SCALARS = {"bool": True, "int8": -100, "int16": -30_000, "int32": -2_000_000_000, "int64": -9_000_000_000_000_000_000,
           "uint8": 200, "char": 65, "uint16": 60_000, "uint32": 4_000_000_000, "uint64": 2**64 - 2,
           "float32": -1.25, "float64": -1 / 3}


# ---------------------------------------------------------------------------------------------------------------------
# Samples, and the same message as a rosbags object


def fields(name: str, distro: str) -> list[tuple[str, tuple]]:
    return typestore(distro).fielddefs[name][1]


def sample(name: str, distro: str, seed: int = 0) -> object:
    """A message of type `name` with a non-trivial value in every field; `seed` varies the values."""
    cls = message_type(name, distro)
    return cls(**{field: sample_value(desc, distro, seed + i) for i, (field, desc) in enumerate(fields(name, distro))})


def sample_value(desc: tuple, distro: str, seed: int) -> object:
    kind, value = desc
    if kind == Nodetype.NAME:
        return sample(value, distro, seed)
    if kind == Nodetype.BASE:
        base, bound = value
        if base == "string":
            text = f"héllo wörld ✓ 日本 {seed}"  # multi-byte UTF-8; its length varies the padding that follows
            return text[:bound] if bound else text
        if base == "byte":
            return bytes([0xA0 + seed % 16])
        scalar = SCALARS[base]
        return scalar if isinstance(scalar, bool) else scalar - (seed % 7) * (0.25 if isinstance(scalar, float) else 1)
    element, count = value
    if element[0] == Nodetype.BASE and element[1][0] in OCTETS and (kind == Nodetype.ARRAY or not count):
        length = count or 7 + 2 * (seed % 3)  # odd lengths leave the next field unaligned
        return bytes((seed + 37 * i) % 256 for i in range(length))
    length = count if kind == Nodetype.ARRAY else min(count or 3, 3)
    return [sample_value(element, distro, seed + i) for i in range(length)]


def to_rosbags(msg: object, name: str, distro: str) -> object:
    """The rosbags object equal to our `msg`."""
    store = typestore(distro)
    return store.types[name](**{field: value_to_rosbags(getattr(msg, field), desc, distro)
                                for field, desc in fields(name, distro)})


def value_to_rosbags(value: object, desc: tuple, distro: str) -> object:
    kind, spec = desc
    if kind == Nodetype.NAME:
        return to_rosbags(value, spec, distro)
    if kind == Nodetype.BASE:
        # rosbags keeps a byte as a signed int (ROS 1's byte is int8); the octet on the wire is the same
        return int.from_bytes(value, "little", signed=True) if spec[0] == "byte" else value
    (element_kind, element), _ = spec
    if element_kind == Nodetype.NAME:
        return [to_rosbags(v, element, distro) for v in value]
    if element[0] == "string":
        return list(value)
    if element[0] in OCTETS:
        return np.frombuffer(bytes(value), dtype=np.uint8)
    return np.array(value, dtype=DTYPES[element[0]])


def from_rosbags(obj: object, name: str, distro: str) -> object:
    """Our message equal to the rosbags object `obj`."""
    return message_type(name, distro)(**{field: value_from_rosbags(getattr(obj, field), desc, distro)
                                         for field, desc in fields(name, distro)})


def value_from_rosbags(value: object, desc: tuple, distro: str) -> object:
    kind, spec = desc
    if kind == Nodetype.NAME:
        return from_rosbags(value, spec, distro)
    if kind == Nodetype.BASE:
        return bytes([value & 0xFF]) if spec[0] == "byte" else value
    (element_kind, element), count = spec
    if element_kind == Nodetype.NAME:
        return [from_rosbags(v, element, distro) for v in value]
    if element[0] in OCTETS and (kind == Nodetype.ARRAY or not count):
        return value.tobytes()
    return list(value) if element[0] == "string" else value.tolist()


def padded(raw: bytes) -> bytes:
    """`raw` padded with zeros to a multiple of 4 bytes, as rmw_cyclonedds_cpp sends it."""
    return raw + bytes(-len(raw) % 4)


# ---------------------------------------------------------------------------------------------------------------------
# Wire format


@pytest.mark.parametrize(("name", "distro"), MESSAGES, ids=IDS)
@pytest.mark.parametrize("filled", [True, False], ids=["sample", "default"])
def test_cdr_matches_rosbags(name, distro, filled):
    msg = sample(name, distro) if filled else message_type(name, distro)()
    ours = msg.serialize()
    assert ours[:4] == b"\x00\x01\x00\x00"  # plain CDR (XCDR1), little endian, no options
    theirs = bytes(typestore(distro).serialize_cdr(to_rosbags(msg, name, distro), name))
    assert ours.hex() == theirs.hex()


@pytest.mark.parametrize(("name", "distro"), MESSAGES, ids=IDS)
def test_round_trips(name, distro):
    msg = sample(name, distro, seed=3)
    cls, store = message_type(name, distro), typestore(distro)
    raw = msg.serialize()
    assert cls.deserialize(raw) == msg
    assert cls.deserialize(padded(raw)) == msg
    assert from_rosbags(store.deserialize_cdr(raw, name), name, distro) == msg
    rosbags_raw = bytes(store.serialize_cdr(to_rosbags(msg, name, distro), name))
    assert cls.deserialize(padded(rosbags_raw)) == msg
    assert from_rosbags(store.deserialize_cdr(padded(rosbags_raw), name), name, distro) == msg


def test_samples_fill_every_field():
    status = sample("diagnostic_msgs/msg/DiagnosticArray", "jazzy").status
    assert len(status) == 3 and len(status[0].values) == 3  # a sequence of structs holding a sequence of structs
    image = sample("sensor_msgs/msg/Image", "jazzy")
    assert isinstance(image.data, bytes) and len(image.data) % 4 and "日本" in image.header.frame_id
    info = sample("rmw_dds_common/msg/ParticipantEntitiesInfo", "humble")
    assert len(info.gid.data) == 24 and len(info.node_entities_info_seq[0].reader_gid_seq[2].data) == 24
    assert sample("std_msgs/msg/Header", "jazzy").stamp.sec < 0


# ---------------------------------------------------------------------------------------------------------------------
# Classes: names, defaults, construction, constants, Python types


def test_dds_type_names():
    assert dds_type_name("sensor_msgs/msg/JointState") == "sensor_msgs::msg::dds_::JointState_"
    assert message_type("vla_ros/msg/ActionChunk").__idl_typename__ == "vla_ros::msg::dds_::ActionChunk_"
    with pytest.raises(ValueError, match="look like"):
        dds_type_name("sensor_msgs/JointState")


def test_rclpy_like_construction():
    JointState = message_type("sensor_msgs/msg/JointState")  # noqa: N806 - a message class
    msg = JointState()
    assert msg.header.stamp.sec == 0 and msg.header.frame_id == "" and msg.name == [] and msg.position == []
    msg = JointState(name=["a"], position=[0.1])
    msg.header.stamp.sec = 3
    assert (msg.name, msg.position, msg.header.stamp.sec) == (["a"], [0.1], 3)
    assert JointState().header is not JointState().header  # defaults are not shared between messages
    assert [f for f in JointState.__dataclass_fields__] == ["header", "name", "position", "velocity", "effort"]
    info = message_type("sensor_msgs/msg/CameraInfo")()
    assert info.k == [0.0] * 9 and info.roi.do_rectify is False
    assert message_type("rmw_dds_common/msg/Gid")().data == bytes(16)


def test_classes_are_cached_and_shared_between_distros():
    assert message_type("sensor_msgs/msg/JointState") is message_type("sensor_msgs/msg/JointState")
    assert message_type("sensor_msgs/msg/Image", "humble") is message_type("sensor_msgs/msg/Image")
    humble = message_type("rmw_dds_common/msg/ParticipantEntitiesInfo", "humble")
    assert humble is not message_type("rmw_dds_common/msg/ParticipantEntitiesInfo")
    assert humble().gid.data == bytes(24)
    with pytest.raises(ValueError, match="distro"):
        message_type("std_msgs/msg/String", "iron")
    with pytest.raises(KeyError, match="unknown ROS message type"):
        message_type("std_msgs/msg/NoSuchThing")


@pytest.mark.parametrize(("name", "distro"), MESSAGES, ids=IDS)
def test_definitions_outside_rmw_dds_common_are_the_same_on_humble(name, distro):
    """Why message_type serves one class for both distros: the whole closure of definitions is equal."""
    if name in DISTRO_SPECIFIC:
        pytest.skip("Gid differs: char[24] on Humble, char[16] on Jazzy")
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        seen.add(current)
        definition = typestore("jazzy").fielddefs[current]
        assert typestore("humble").fielddefs[current] == definition
        for _, (kind, spec) in definition[1]:
            element_kind, element = (kind, spec) if kind in (Nodetype.BASE, Nodetype.NAME) else spec[0]
            if element_kind == Nodetype.NAME and element not in seen:
                pending.append(element)


def test_constants_like_rclpy():
    PolicyStatus = message_type("vla_ros/msg/PolicyStatus")  # noqa: N806 - a message class
    assert PolicyStatus.STATE_ACTIVE == "active" and PolicyStatus.STATE_HOLDING == "holding"
    assert "STATE_ACTIVE" not in PolicyStatus.__dataclass_fields__
    DiagnosticStatus = message_type("diagnostic_msgs/msg/DiagnosticStatus")  # noqa: N806 - a message class
    assert (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE) == \
        (b"\x00", b"\x01", b"\x02", b"\x03")
    status = DiagnosticStatus(level=DiagnosticStatus.ERROR)
    assert DiagnosticStatus().level == b"\x00"
    assert DiagnosticStatus.deserialize(status.serialize()).level == b"\x02"


def test_octet_fields_are_bytes():
    Image = message_type("sensor_msgs/msg/Image")  # noqa: N806 - a message class
    pixels = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8)
    raw = Image(height=480, width=640, encoding="rgb8", step=1920, data=pixels.tobytes()).serialize()
    assert Image.deserialize(raw).data == pixels.tobytes()
    assert Image().data == b""
    assert message_type("sensor_msgs/msg/CompressedImage")(data=b"\xff\xd8").serialize().endswith(b"\x02\0\0\0\xff\xd8")


# ---------------------------------------------------------------------------------------------------------------------
# Through Cyclone DDS itself

# One process, loopback only: no multicast discovery traffic leaves the test.
LOOPBACK_CONFIG = """<CycloneDDS><Domain id="any"><General>
<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces><AllowMulticast>false</AllowMulticast>
</General></Domain></CycloneDDS>"""


def test_topics_build_and_samples_travel():
    """A Topic needs the type's XTypes description, which cyclonedds cannot give for a plain `bytes` field."""
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    domain_id = 231
    domain = Domain(domain_id, LOOPBACK_CONFIG)  # noqa: F841 - the participant uses this config while it lives
    participant = DomainParticipant(domain_id)
    topics = {(name, distro): Topic(participant, f"rt/test_{index}", message_type(name, distro))
              for index, (name, distro) in enumerate(MESSAGES)}
    image = sample("sensor_msgs/msg/Image", "jazzy")
    topic = topics[("sensor_msgs/msg/Image", "jazzy")]
    reader, writer = DataReader(participant, topic), DataWriter(participant, topic)
    writer.write(image)
    deadline = time.monotonic() + 5
    received = []
    while not received and time.monotonic() < deadline:
        received = reader.take()
        time.sleep(0.01)
    assert received == [image]


# ---------------------------------------------------------------------------------------------------------------------
# Type hashes


# Copied from ROS 2 Jazzy's generated type descriptions (install/share/<package>/msg/<Type>.json of a Jazzy build).
JAZZY_HASHES = {
    "std_msgs/msg/String": "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
    "sensor_msgs/msg/JointState": "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
    "diagnostic_msgs/msg/DiagnosticStatus": "RIHS01_b0e3e692ea2d54a8af2f4ef1930e81556a2db55216b771f8a7d2724ed47bf0e4",
    # char[16] data: rosidl hashes .msg char as uint8, rosbags' hash_rihs01 as char (RIHS01_a8e2f2bd...)
    "rmw_dds_common/msg/Gid": "RIHS01_ab6f21cfbb0a6dbb837161e1110c2051a2850ed9f9c53944d7115d9bcebedf71",
    "rmw_dds_common/msg/ParticipantEntitiesInfo":
        "RIHS01_91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e",
    # vla_ros's own: generated from msg/*.msg with Jazzy's rosidl_adapter + rosidl_generator_type_description (the
    # colcon build's steps); they change when a field of those .msg files does.
    "vla_ros/msg/ActionChunk": "RIHS01_78a79d8a74b6f53a76837eb210ddd0ca8ee39dabfd9c3035840ddb361093327d",
    "vla_ros/msg/PolicyStatus": "RIHS01_f776d27fb67d899b7d19696a22f92223bfc3d819accc8d9737a8563ce49bd730",
}


@pytest.mark.parametrize("name", JAZZY_HASHES)
def test_type_hash_matches_jazzy(name):
    assert type_hash(name) == JAZZY_HASHES[name]
