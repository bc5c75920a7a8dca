"""Bags -> LeRobot episodes through the live recorder's path: rosbag2 in sqlite3 and mcap, written with rosbags."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")
pytest.importorskip("pyarrow", reason="needs pyarrow (pip install -e '.[datasets]')")
pytest.importorskip("imageio_ffmpeg", reason="needs imageio-ffmpeg (pip install -e '.[datasets]')")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from vla_ros.cli.main import main  # noqa: E402
from vla_ros.datasets.lerobot import read_dataset, validate_dataset  # noqa: E402

STORE = get_typestore(Stores.ROS2_JAZZY)
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
START = 1000.0  # header stamps: a simulator's clock, not the bag's log time


def commanded(t: float) -> np.ndarray:
    return np.array([0.3 * math.sin(t - START), -1.0, 1.0, 0.9, 0.1 * (t - START), 0.2])


def _header(t: float):
    sec = int(t)
    return STORE.types["std_msgs/msg/Header"](
        stamp=STORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9)), frame_id="")


def write_bag(path, storage, seconds: float = 2.0) -> None:
    types = STORE.types
    Duration = types["builtin_interfaces/msg/Duration"]  # noqa: N806
    with Writer(path, version=9, storage_plugin=storage) as writer:
        joints = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=STORE)
        cameras = {name: writer.add_connection(f"/camera/{name}/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
                   for name in ("front", "wrist")}
        arm = writer.add_connection("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory",
                                    typestore=STORE)
        gripper = writer.add_connection("/gripper_controller/joint_trajectory",
                                        "trajectory_msgs/msg/JointTrajectory", typestore=STORE)

        def put(connection, msg, t, msgtype):
            writer.write(connection, int((t - START + 5.0) * 1e9), STORE.serialize_cdr(msg, msgtype))

        for k in range(int(seconds * 100)):  # joint states at 100 Hz: the arm one tick behind its command
            t = START + k / 100
            put(joints, types["sensor_msgs/msg/JointState"](
                header=_header(t), name=JOINTS, position=commanded(t - 1 / 30), velocity=np.zeros(0),
                effort=np.zeros(0)), t, "sensor_msgs/msg/JointState")
            if k % 10 == 0:  # cameras at 10 Hz
                for connection in cameras.values():
                    pixels = np.full((60, 80, 3), 40 + k // 2, dtype=np.uint8)
                    put(connection, types["sensor_msgs/msg/Image"](
                        header=_header(t), height=60, width=80, encoding="rgb8", is_bigendian=0, step=240,
                        data=pixels.ravel()), t, "sensor_msgs/msg/Image")
            if k % 3 == 0:  # commands at about 30 Hz, streamed with stamp 0 as the policy node sends them
                target = commanded(t)
                for connection, names, values in ((arm, JOINTS[:5], target[:5]), (gripper, JOINTS[5:], target[5:])):
                    point = types["trajectory_msgs/msg/JointTrajectoryPoint"](
                        positions=values, velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                        time_from_start=Duration(sec=0, nanosec=33_333_333))
                    put(connection, types["trajectory_msgs/msg/JointTrajectory"](
                        header=_header(0.0), joint_names=names, points=[point]), t,
                        "trajectory_msgs/msg/JointTrajectory")


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_bags_become_episodes_with_the_commands_as_actions(tmp_path, storage):
    bags = [tmp_path / f"bag{i}" for i in range(2)]
    for bag in bags:
        write_bag(bag, storage)
    out = tmp_path / "dataset"
    assert main(["record", "--from-bag", *map(str, bags), "--robot", "so101", "--instruction",
                 "touch the red cube", "--image-size", "60", "80", "--out", str(out)]) == 0
    validate_dataset(out, joint_names=JOINTS, camera_keys=["front", "wrist"])
    dataset = read_dataset(out)
    assert len(dataset.episodes) == 2
    episode = dataset.episode(0)
    assert episode.task == "touch the red cube"
    assert 45 <= len(episode) <= 60  # 2 s at 30 Hz, less the start-up before every input has arrived
    # Each frame's state is the joint state at the frame's camera time (cameras at 10 Hz: up to 0.1 s old); its
    # action is the newest command at the tick. Commands were sent every 3 joint-state steps of 10 ms, so the ramp
    # on wrist_roll (0.1 rad/s) puts every recorded action on a multiple of 3 ms: they are commands, not states.
    assert np.abs(episode.action - episode.state).max() < 0.05
    assert np.abs(episode.action[:, 1:4] - [-1.0, 1.0, 0.9]).max() < 1e-6
    ramp_ms = episode.action[:, 4] / 0.1 * 1000
    assert np.abs(ramp_ms / 30 - np.round(ramp_ms / 30)).max() < 1e-2
    assert episode.action[-1, 4] > episode.action[0, 4] + 0.1  # the slow ramp on wrist_roll got through
    frames = dataset.episode_frames(0, "front")
    assert frames.shape == (len(episode), 60, 80, 3) and frames[-1].mean() > frames[0].mean()


def test_a_bag_without_the_robots_topics_is_refused(tmp_path):
    bag = tmp_path / "empty"
    with Writer(bag, version=9) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=STORE)
        writer.write(connection, 1, STORE.serialize_cdr(STORE.types["std_msgs/msg/String"](data="hi"),
                                                       "std_msgs/msg/String"))
    assert main(["record", "--from-bag", str(bag), "--robot", "so101", "--instruction", "x",
                 "--out", str(tmp_path / "d")]) == 2
