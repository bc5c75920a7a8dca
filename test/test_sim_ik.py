"""TCP inverse kinematics: exact where reachable, and every pose the experts ask for is reachable."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vla_ros.sim.experts import EXPERT_SETTINGS, tcp_heading
from vla_ros.sim.ik import TcpIk
from vla_ros.sim.robots import SIM_ROBOTS
from vla_ros.sim.world import SimWorld


def top_down(yaw: float) -> np.ndarray:
    """TCP rotation with its approach axis (z) pointing down and its x axis heading `yaw` rad."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


@pytest.fixture(scope="module", params=SIM_ROBOTS)
def arm(request) -> tuple[SimWorld, TcpIk, np.ndarray]:
    """(world, IK over the arm joints, home arm joints)."""
    world = SimWorld(request.param, render=False)
    robot = world.sim_robot
    arm_joints = tuple(name for name in robot.joint_names if name != robot.gripper_joint)
    home = np.array([robot.home[robot.joint_names.index(name)] for name in arm_joints])
    return world, TcpIk(world.model, arm_joints, site=robot.tcp_site, posture=home), home


def test_solving_for_the_current_pose_keeps_the_joints(arm):
    _, ik, home = arm
    position, rotation = ik.forward(home)
    solution = ik.solve(position, rotation, home, lean_to_posture=False)
    np.testing.assert_allclose(solution.positions, home, atol=1e-6)


def home_yaw(ik: TcpIk, home: np.ndarray) -> float:
    """Heading (rad) of the TCP's x axis at home, as the expert reads it."""
    _, rotation = ik.forward(home)
    return tcp_heading(rotation)


def test_solutions_reach_the_pose_they_were_asked_for(arm):
    world, ik, home = arm
    workspace = world.sim_robot.workspace
    target = np.array([(workspace.min_radius_m + workspace.max_radius_m) / 2, 0.05, 0.1])
    target_rotation = top_down(home_yaw(ik, home) + 0.3)
    solution = ik.solve(target, target_rotation, home)
    position, rotation = ik.forward(solution.positions)
    np.testing.assert_allclose(position, target, atol=1e-4)
    np.testing.assert_allclose(rotation, target_rotation, atol=1e-3)


def test_every_pose_an_expert_needs_is_reachable_all_over_the_workspace(arm):
    world, ik, home = arm
    workspace, settings = world.sim_robot.workspace, EXPERT_SETTINGS[world.robot]
    comfortable_yaw = home_yaw(ik, home)
    grasp = max(world.cube_size_m / 2, settings.fingertip_below_tcp_m + settings.tip_clearance_m)
    touch = world.cube_size_m + settings.fingertip_below_tcp_m - settings.touch_depth_m
    heights = (grasp, grasp + settings.lift_height_m, touch + settings.hover_height_m)
    radii = (workspace.min_radius_m, workspace.max_radius_m)
    azimuths = (-workspace.max_azimuth_rad, 0.0, workspace.max_azimuth_rad)
    # Cubes may sit at any yaw; the expert turns the jaws by at most an eighth of a turn from the comfortable yaw.
    yaw_offsets = (-math.pi / 4, 0.0, math.pi / 4)
    for radius, azimuth, height, yaw_offset in itertools.product(radii, azimuths, heights, yaw_offsets):
        target = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
        solution = ik.solve(target, top_down(comfortable_yaw + azimuth + yaw_offset), home)
        assert solution.converged(), f"{world.robot} cannot reach {target} at yaw offset {yaw_offset:.2f}"
