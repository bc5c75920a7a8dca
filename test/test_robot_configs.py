"""The shipped robot configs: each loads, and each states the vendor facts it was written from.

The literal expectations below come from the vendors' ROS 2 packages (see /work/shared/reference/ros2-control.md and
the comments in config/robots/*.yaml): a config edit that changes a joint name, a limit or a controller topic must
change this file too, on purpose.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from vla_ros.core.embodiment import (
    ActionMode,
    CommandInterface,
    JointUnit,
    PolicyUnit,
    available_robots,
    load_embodiment,
)

SHIPPED = ("so101", "so100", "ur5e", "fr3", "panda", "gen3", "xarm7", "lite6", "aloha", "vx300s")
VX300S_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
TWO_PI = 2 * math.pi


def limits(robot: str, joint: str) -> tuple[float, float]:
    embodiment = load_embodiment(robot)
    return embodiment.joints[embodiment.joint_names.index(joint)].position_limits


def output_names(robot: str) -> list[str]:
    return [output.name for output in load_embodiment(robot).outputs]


# -- every robot -------------------------------------------------------------------------------------------------------


def test_the_shipped_robots_are_all_there():
    assert set(SHIPPED) <= set(available_robots())


@pytest.mark.parametrize("robot", available_robots())
def test_loads_under_its_own_name(robot):
    assert load_embodiment(robot).robot == robot


@pytest.mark.parametrize("robot", available_robots())
def test_home_is_within_limits(robot):
    embodiment = load_embodiment(robot)
    assert np.all(embodiment.lower_limits <= embodiment.home), embodiment.joint_names
    assert np.all(embodiment.home <= embodiment.upper_limits), embodiment.joint_names


@pytest.mark.parametrize("robot", available_robots())
def test_every_joint_is_commanded_by_exactly_one_output(robot):
    embodiment = load_embodiment(robot)
    counts = Counter(name for output in embodiment.outputs for name in output.joints)
    assert counts == Counter(embodiment.joint_names)


@pytest.mark.parametrize("robot", available_robots())
def test_gripper_outputs_and_units_are_consistent(robot):
    embodiment = load_embodiment(robot)
    for output in embodiment.outputs:
        if output.interface in (CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND):
            assert output.joints[0] in embodiment.gripper_joints
    for joint in embodiment.joints:
        assert (joint.policy_unit is PolicyUnit.GRIPPER_0_1) == (joint.name in embodiment.gripper_joints)
        if joint.name in embodiment.gripper_joints:
            assert joint.action is ActionMode.ABSOLUTE


@pytest.mark.parametrize("robot", available_robots())
def test_safety_is_set(robot):
    safety = load_embodiment(robot).safety
    assert safety.max_tracking_error is not None and 0 < safety.max_tracking_error <= 1.0
    assert safety.observation_timeout_s is not None and 0 < safety.observation_timeout_s <= 0.5


@pytest.mark.parametrize("robot", available_robots())
def test_camera_topics_are_absolute_ros_names(robot):
    embodiment = load_embodiment(robot)
    assert embodiment.cameras
    for camera in embodiment.cameras:
        topic = embodiment.camera_topic(camera)
        assert topic.startswith("/") and "image" in topic
        assert (camera.width, camera.height) == (640, 480)


# -- per robot ---------------------------------------------------------------------------------------------------------


def test_so100_is_an_so101_in_lerobot_units():
    so100, so101 = load_embodiment("so100"), load_embodiment("so101")
    assert so100.joint_names == ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    assert so100.joint_names == so101.joint_names
    np.testing.assert_array_equal(so100.lower_limits, so101.lower_limits)
    np.testing.assert_array_equal(so100.upper_limits, so101.upper_limits)
    assert [j.policy_unit for j in so100.joints] == [PolicyUnit.RANGE_M100_100] * 5 + [PolicyUnit.GRIPPER_0_1]
    assert so100.control_rate_hz == 30.0
    assert so100.gripper_joints == ("gripper",)


def test_ur5e():
    ur5e = load_embodiment("ur5e")
    assert ur5e.joint_names == ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
                                "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
    assert limits("ur5e", "shoulder_pan_joint") == pytest.approx((-TWO_PI, TWO_PI), abs=1e-5)
    assert limits("ur5e", "elbow_joint") == pytest.approx((-math.pi, math.pi), abs=1e-5)
    np.testing.assert_allclose(ur5e.velocity_limits, 3.14)
    np.testing.assert_allclose(ur5e.home, [0, -1.57, 0, -1.57, 0, 0])
    assert ur5e.grippers == ()
    assert all(j.policy_unit is PolicyUnit.RAD for j in ur5e.joints)
    assert output_names("ur5e") == ["/scaled_joint_trajectory_controller/joint_trajectory"]
    assert ur5e.control_rate_hz == 20.0


def test_fr3():
    fr3 = load_embodiment("fr3")
    assert fr3.joint_names == tuple(f"fr3_joint{i}" for i in range(1, 8)) + ("fr3_finger_joint1",)
    assert limits("fr3", "fr3_joint1") == (-2.744, 2.744)
    assert limits("fr3", "fr3_joint4") == (-3.042, -0.152)
    assert limits("fr3", "fr3_joint6") == (0.545, 4.517)
    assert limits("fr3", "fr3_joint7") == (-3.016, 3.016)
    assert limits("fr3", "fr3_finger_joint1") == (0.0, 0.04)
    np.testing.assert_allclose(fr3.velocity_limits[:7], [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
    ready = [0, -math.pi / 4, 0, -3 * math.pi / 4, 0, math.pi / 2, math.pi / 4]
    np.testing.assert_allclose(fr3.home[:7], ready, atol=1e-3)
    assert fr3.delta_mask.tolist() == [True] * 7 + [False]
    arm, gripper = fr3.outputs
    assert (arm.interface, arm.name) == (CommandInterface.JOINT_TRAJECTORY, "/fr3_arm_controller/joint_trajectory")
    assert (gripper.interface, gripper.name) == (CommandInterface.GRIPPER_COMMAND, "/franka_gripper/gripper_action")
    assert gripper.joints == ("fr3_finger_joint1",) and gripper.max_effort == 20.0
    assert fr3.joints[-1].unit is JointUnit.M
    assert fr3.control_rate_hz == 20.0


def test_gen3():
    gen3 = load_embodiment("gen3")
    assert gen3.joint_names == tuple(f"joint_{i}" for i in range(1, 8)) + ("robotiq_85_left_knuckle_joint",)
    for continuous in ("joint_1", "joint_3", "joint_5", "joint_7"):
        assert limits("gen3", continuous) == pytest.approx((-TWO_PI, TWO_PI), abs=1e-5)
    assert limits("gen3", "joint_2") == (-2.24, 2.24)
    assert limits("gen3", "joint_4") == (-2.57, 2.57)
    assert limits("gen3", "joint_6") == (-2.09, 2.09)
    np.testing.assert_allclose(gen3.velocity_limits[:7], [1.396] * 4 + [1.222] * 3)
    np.testing.assert_allclose(gen3.home[:7], [0, 0.26, 3.14, -2.27, 0, 0.96, 1.57])
    (gripper,) = gen3.grippers
    assert (gripper.joint, gripper.open, gripper.closed) == ("robotiq_85_left_knuckle_joint", 0.0, 0.8)
    assert output_names("gen3") == ["/joint_trajectory_controller/joint_trajectory",
                                    "/robotiq_gripper_controller/gripper_cmd"]
    assert gen3.outputs[1].interface is CommandInterface.GRIPPER_COMMAND


def test_xarm7():
    xarm7 = load_embodiment("xarm7")
    assert xarm7.joint_names == tuple(f"joint{i}" for i in range(1, 8)) + ("drive_joint",)
    assert limits("xarm7", "joint2") == (-2.059, 2.0944)
    assert limits("xarm7", "joint4") == (-0.19198, 3.927)
    assert limits("xarm7", "joint6") == pytest.approx((-1.69297, math.pi), abs=1e-5)
    assert limits("xarm7", "drive_joint") == (0.0, 0.85)
    np.testing.assert_array_equal(xarm7.home[:7], 0.0)
    assert [s.topic for s in xarm7.ros.joint_state_topics] == ["/xarm/joint_states"]
    assert output_names("xarm7") == ["/xarm7_traj_controller/joint_trajectory", "/xarm_gripper/gripper_action"]
    assert xarm7.outputs[1].interface is CommandInterface.GRIPPER_COMMAND
    assert xarm7.gripper_joints == ("drive_joint",)


def test_lite6():
    lite6 = load_embodiment("lite6")
    assert lite6.joint_names == tuple(f"joint{i}" for i in range(1, 7))
    assert limits("lite6", "joint2") == (-2.61799, 2.61799)
    assert limits("lite6", "joint3") == (-0.061087, 5.235988)
    assert limits("lite6", "joint5") == (-2.1642, 2.1642)
    np.testing.assert_array_equal(lite6.home, 0.0)
    assert lite6.grippers == ()
    assert [s.topic for s in lite6.ros.joint_state_topics] == ["/ufactory/joint_states"]
    assert output_names("lite6") == ["/lite6_traj_controller/joint_trajectory"]


def test_vx300s():
    vx300s = load_embodiment("vx300s")
    assert vx300s.joint_names == (*VX300S_ARM, "left_finger")
    assert limits("vx300s", "shoulder") == pytest.approx((math.radians(-106), math.radians(72)), abs=1e-5)
    assert limits("vx300s", "elbow") == pytest.approx((math.radians(-101), math.radians(92)), abs=1e-5)
    assert limits("vx300s", "wrist_angle") == pytest.approx((math.radians(-107), math.radians(128)), abs=1e-5)
    assert limits("vx300s", "left_finger") == (0.021, 0.057)
    np.testing.assert_allclose(vx300s.home[:6], [0, -0.96, 1.16, 0, -0.3, 0])
    assert vx300s.joints[-1].unit is JointUnit.M
    assert output_names("vx300s") == ["/vx300s/arm_controller/joint_trajectory",
                                      "/vx300s/gripper_controller/joint_trajectory"]
    assert vx300s.outputs[1].joints == ("left_finger",)


def test_aloha_is_two_prefixed_vx300s():
    aloha, vx300s = load_embodiment("aloha"), load_embodiment("vx300s")
    assert len(aloha.joints) == 14
    for side in ("left_", "right_"):
        names = tuple(side + name for name in vx300s.joint_names)
        assert tuple(n for n in aloha.joint_names if n.startswith(side)) == names
        for name in names:
            vendor = name[len(side):]
            assert limits("aloha", name) == limits("vx300s", vendor)
        np.testing.assert_allclose([aloha.home[aloha.joint_names.index(side + n)] for n in VX300S_ARM],
                                   [0, -0.96, 1.16, 0, -0.3, 0])
    assert aloha.gripper_joints == ("left_left_finger", "right_left_finger")
    assert aloha.control_rate_hz == 50.0
    assert [(s.topic, s.prefix) for s in aloha.ros.joint_state_topics] == [
        ("/follower_left/joint_states", "left_"), ("/follower_right/joint_states", "right_")]


def test_aloha_cameras():
    aloha = load_embodiment("aloha")
    names = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    assert tuple(c.name for c in aloha.cameras) == names
    assert tuple(c.policy_key for c in aloha.cameras) == names
    assert [aloha.camera_topic(c) for c in aloha.cameras] == [f"/{n}/camera/color/image_rect_raw" for n in names]


def test_aloha_outputs_speak_the_vendor_names():
    aloha = load_embodiment("aloha")
    assert [(o.name, o.prefix, o.wire_joint_names) for o in aloha.outputs] == [
        ("/follower_left/arm_controller/joint_trajectory", "left_", VX300S_ARM),
        ("/follower_left/gripper_controller/joint_trajectory", "left_", ("left_finger",)),
        ("/follower_right/arm_controller/joint_trajectory", "right_", VX300S_ARM),
        ("/follower_right/gripper_controller/joint_trajectory", "right_", ("left_finger",)),
    ]
    assert all(o.interface is CommandInterface.JOINT_TRAJECTORY for o in aloha.outputs)
