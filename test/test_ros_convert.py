"""Message conversions, on stand-in message classes everywhere and on the real generated ones where ROS 2 is sourced."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from ros_graph import require

from vla_ros.core.errors import ObservationError
from vla_ros.core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint, build_trajectory
from vla_ros.ros.convert import (
    camera_info_to_msg,
    compressed_image_to_msg,
    duration_from_seconds,
    image_from_compressed_msg,
    image_from_msg,
    image_to_msg,
    joint_state_from_msg,
    joint_state_to_msg,
    seconds_to_stamp,
    stamp_to_seconds,
    trajectory_from_msg,
    trajectory_to_msg,
)

# --- stand-ins with the fields of the ROS 2 messages --------------------------------------------------------------


@dataclass
class Time:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Duration:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Image:
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""


@dataclass
class CompressedImage:
    header: Header = field(default_factory=Header)
    format: str = ""
    data: bytes = b""


@dataclass
class CameraInfo:
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    distortion_model: str = ""
    d: list = field(default_factory=list)
    k: list = field(default_factory=lambda: [0.0] * 9)
    r: list = field(default_factory=lambda: [0.0] * 9)
    p: list = field(default_factory=lambda: [0.0] * 12)


@dataclass
class JointState:
    header: Header = field(default_factory=Header)
    name: list = field(default_factory=list)
    position: list = field(default_factory=list)
    velocity: list = field(default_factory=list)
    effort: list = field(default_factory=list)


@dataclass
class JointTrajectoryPoint:
    positions: list = field(default_factory=list)
    velocities: list = field(default_factory=list)
    accelerations: list = field(default_factory=list)
    effort: list = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
class JointTrajectoryMsg:
    header: Header = field(default_factory=Header)
    joint_names: list = field(default_factory=list)
    points: list = field(default_factory=list)


STAND_INS = SimpleNamespace(Time=Time, Duration=Duration, Image=Image, CompressedImage=CompressedImage,
                            CameraInfo=CameraInfo, JointState=JointState, JointTrajectory=JointTrajectoryMsg,
                            JointTrajectoryPoint=JointTrajectoryPoint)


def ros_messages() -> SimpleNamespace:
    require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Humble or Jazzy setup")
    builtin = require("builtin_interfaces.msg", "needs ROS 2 builtin_interfaces")
    sensor = require("sensor_msgs.msg", "needs ROS 2 sensor_msgs")
    trajectory = require("trajectory_msgs.msg", "needs ROS 2 trajectory_msgs")
    return SimpleNamespace(Time=builtin.Time, Duration=builtin.Duration, Image=sensor.Image,
                           CompressedImage=sensor.CompressedImage, CameraInfo=sensor.CameraInfo,
                           JointState=sensor.JointState, JointTrajectory=trajectory.JointTrajectory,
                           JointTrajectoryPoint=trajectory.JointTrajectoryPoint)


@pytest.fixture(params=["stand-ins", pytest.param("ros", marks=pytest.mark.ros)])
def m(request) -> SimpleNamespace:
    """The message classes: stand-ins, or the generated ROS 2 ones (skipped without ROS)."""
    return STAND_INS if request.param == "stand-ins" else ros_messages()


def stamp(m, seconds: float):
    return seconds_to_stamp(seconds, m.Time)


# --- time ---------------------------------------------------------------------------------------------------------


def test_stamps_split_into_seconds_and_nanoseconds_and_back(m):
    t = seconds_to_stamp(12.25, m.Time)
    assert (t.sec, t.nanosec) == (12, 250_000_000)
    assert stamp_to_seconds(t) == 12.25
    # Rounding to the nanosecond carries into the seconds instead of giving nanosec = 1e9.
    t = seconds_to_stamp(2.9999999999, m.Time)
    assert (t.sec, t.nanosec) == (3, 0)


def test_stamps_cannot_be_negative_or_not_finite(m):
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError):
            seconds_to_stamp(bad, m.Time)


def test_negative_durations_keep_nanoseconds_positive(m):
    d = duration_from_seconds(-0.25, m.Duration)
    assert (d.sec, d.nanosec) == (-1, 750_000_000)
    assert stamp_to_seconds(d) == -0.25
    with pytest.raises(ValueError):
        duration_from_seconds(math.nan, m.Duration)


# --- images -------------------------------------------------------------------------------------------------------


def gradient(height: int = 6, width: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 30, y * 40, x + y], axis=-1).astype(np.uint8)


def test_images_go_out_as_rgb8_and_come_back_unchanged(m):
    rgb = gradient()
    msg = image_to_msg(rgb, m.Image, stamp=stamp(m, 1.5), frame_id="front")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 8, 24, "rgb8")
    assert (msg.header.frame_id, stamp_to_seconds(msg.header.stamp)) == ("front", 1.5)
    np.testing.assert_array_equal(image_from_msg(msg, source="camera 'front'"), rgb)


def test_a_strided_view_is_sent_in_row_order():
    rgb = gradient(6, 16)[:, ::2]  # not C-contiguous
    msg = image_to_msg(rgb, Image, stamp=Time(), frame_id="front")
    assert isinstance(msg.data, bytes)  # one buffer, not a Python list: the generated classes copy it fast
    np.testing.assert_array_equal(image_from_msg(msg, source="front"), rgb)


def test_only_rgb_images_can_be_sent(m):
    with pytest.raises(ObservationError, match=r"front: expected an \(H, W, 3\) uint8 RGB image, got \(3, 6, 8\)"):
        image_to_msg(gradient().transpose(2, 0, 1), m.Image, stamp=stamp(m, 0.0), frame_id="front")


def test_bgr8_with_row_padding_decodes_to_rgb(m):
    rgb = gradient(2, 3)
    msg = m.Image()
    msg.height, msg.width, msg.encoding, msg.step = 2, 3, "bgr8", 12  # 9 bytes of pixels + 3 of padding per row
    msg.data = np.concatenate([rgb[:, :, ::-1].reshape(2, 9), np.zeros((2, 3), np.uint8)], axis=1).tobytes()
    np.testing.assert_array_equal(image_from_msg(msg, source="wrist"), rgb)


def test_bad_images_raise_errors_naming_the_camera(m):
    msg = image_to_msg(gradient(), m.Image, stamp=stamp(m, 0.0), frame_id="front")
    msg.height = 7
    with pytest.raises(ObservationError, match=r"camera 'wrist': data has 144 bytes, expected step\*height"):
        image_from_msg(msg, source="camera 'wrist'")
    msg.height, msg.encoding = 6, "yuv422"
    with pytest.raises(ObservationError, match="camera 'wrist': unsupported encoding 'yuv422'"):
        image_from_msg(msg, source="camera 'wrist'")


def test_compressed_images_round_trip_through_jpeg(m):
    rgb = np.repeat(np.repeat(gradient(6, 8), 8, axis=0), 8, axis=1)  # smooth, so JPEG keeps it close
    msg = compressed_image_to_msg(rgb, m.CompressedImage, stamp=stamp(m, 2.0), frame_id="front")
    assert "jpeg" in msg.format and stamp_to_seconds(msg.header.stamp) == 2.0
    decoded = image_from_compressed_msg(msg, source="front")
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 4


def test_undecodable_compressed_images_name_the_camera(m):
    msg = m.CompressedImage()
    msg.format, msg.data = "jpeg", b"not a jpeg"
    with pytest.raises(ObservationError, match="camera 'front'"):
        image_from_compressed_msg(msg, source="camera 'front'")


def test_camera_info_of_a_pinhole_camera(m):
    msg = camera_info_to_msg(m.CameraInfo, stamp=stamp(m, 1.0), frame_id="front", width=160, height=120,
                             fx=100.0, fy=100.0, cx=79.5, cy=59.5)
    assert (msg.width, msg.height, msg.header.frame_id) == (160, 120, "front")
    assert list(msg.k) == [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
    assert list(msg.p)[:4] == [100.0, 0.0, 79.5, 0.0] and list(msg.d) == [0.0] * 5


# --- joint states -------------------------------------------------------------------------------------------------


def test_joint_states_round_trip(m):
    msg = joint_state_to_msg(m.JointState, stamp=stamp(m, 3.5), names=("a", "b"), positions=np.array([0.1, -0.2]),
                             velocities=np.array([1.0, 2.0]))
    assert list(msg.velocity) == [1.0, 2.0] and list(msg.effort) == []
    stamp_s, names, positions = joint_state_from_msg(msg)
    assert (stamp_s, names) == (3.5, ("a", "b"))
    assert positions.dtype == np.float64 and positions.tolist() == [0.1, -0.2]


def test_joint_states_with_a_position_per_name_only(m):
    msg = joint_state_to_msg(m.JointState, stamp=stamp(m, 0.0), names=("a", "b"), positions=np.array([0.1, 0.2]))
    msg.name = ["a", "b", "c"]
    with pytest.raises(ObservationError, match=r"/joint_states: 3 joint names but 2 positions"):
        joint_state_from_msg(msg, source="/joint_states")
    msg.name = ["a", "a"]
    with pytest.raises(ObservationError, match=r"joint names repeat: \['a'\]"):
        joint_state_from_msg(msg)


# --- trajectories -------------------------------------------------------------------------------------------------


def test_trajectories_round_trip_with_durations_and_velocities(m):
    positions = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]])
    traj = build_trajectory(("a", "b"), positions, 0.1, velocities=np.ones_like(positions), stamp=4.25)
    msg = trajectory_to_msg(traj, m.JointTrajectory, m.JointTrajectoryPoint, m.Duration)
    assert list(msg.joint_names) == ["a", "b"]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (4, 250_000_000)
    assert [(p.time_from_start.sec, p.time_from_start.nanosec) for p in msg.points] == [
        (0, 100_000_000), (0, 200_000_000), (0, 300_000_000)]
    back = trajectory_from_msg(msg)
    assert (back.joint_names, back.stamp) == (("a", "b"), 4.25)
    for ours, theirs in zip(traj.points, back.points, strict=True):
        np.testing.assert_array_equal(ours.positions, theirs.positions)
        np.testing.assert_array_equal(ours.velocities, theirs.velocities)
        assert theirs.time_from_start == pytest.approx(ours.time_from_start, abs=1e-9)


def test_one_controllers_share_of_a_trajectory_under_its_own_names(m):
    traj = build_trajectory(("left_a", "left_b", "right_a"), np.array([[1.0, 2.0, 3.0]]), 0.5)
    msg = trajectory_to_msg(traj, m.JointTrajectory, m.JointTrajectoryPoint,  # Duration taken from the point class
                            joint_names=["b", "a"], joint_indices=[1, 0])
    assert list(msg.joint_names) == ["b", "a"] and list(msg.points[0].positions) == [2.0, 1.0]
    assert list(msg.points[0].velocities) == [] and stamp_to_seconds(msg.points[0].time_from_start) == 0.5
    assert stamp_to_seconds(msg.header.stamp) == 0.0  # start at the controller's next update
    with pytest.raises(TrajectoryError, match="1 joint names"):
        trajectory_to_msg(traj, m.JointTrajectory, m.JointTrajectoryPoint, joint_names=["a"], joint_indices=[0, 1])


def message(m, names, points):
    """A JointTrajectory message; `points`: [(time_from_start s, positions, velocities or [])]."""
    msg = m.JointTrajectory()
    msg.joint_names = list(names)
    msg.points = []
    for t, positions, velocities in points:
        point = m.JointTrajectoryPoint()
        point.positions, point.velocities = list(positions), list(velocities)
        point.time_from_start = duration_from_seconds(t, m.Duration)
        msg.points.append(point)
    return msg


def test_points_without_velocities_come_back_without(m):
    traj = trajectory_from_msg(message(m, ["a"], [(0.1, [1.0], []), (0.2, [2.0], [0.0])]))
    assert traj.points[0].velocities is None and traj.points[1].velocities.tolist() == [0.0]
    assert isinstance(traj, JointTrajectory) and isinstance(traj.points[0], TrajectoryPoint)


@pytest.mark.parametrize(("points", "names", "error"), [
    ([], ["a"], "no points"),
    ([(0.1, [1.0], [])], [], "no joint names"),
    ([(0.0, [1.0], [])], ["a"], "time_from_start must increase strictly from > 0"),
    ([(0.2, [1.0], []), (0.1, [2.0], [])], ["a"], "time_from_start must increase"),
    ([(0.1, [1.0], [])], ["a", "b"], r"point 0 has \(1,\) positions, expected \(2,\)"),
    ([(0.1, [1.0, 2.0], [1.0])], ["a", "b"], r"point 0 has \(1,\) velocities"),
    ([(0.1, [math.nan], [])], ["a"], "NaN or inf"),
    ([(0.1, [1.0], [])], ["a", "a"], "joint names repeat"),
])
def test_trajectories_a_controller_would_reject_are_refused(m, points, names, error):
    with pytest.raises(TrajectoryError, match=error):
        trajectory_from_msg(message(m, names, points))
