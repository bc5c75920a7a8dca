"""The MJCF arms agree with config/robots/*.yaml and are built the way SimWorld relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_ros.core.errors import ConfigError
from vla_ros.core.trajectory import build_trajectory
from vla_ros.sim.robots import SIM_ROBOTS
from vla_ros.sim.world import SimWorld

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "robots"
ROBOTS = SIM_ROBOTS


def robot_yaml(robot: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{robot}.yaml").read_text(encoding="utf-8"))


def yaml_joint_values(config: dict, key: str) -> list:
    return [joint[key] for joint in config["joints"]]


@pytest.fixture(scope="module", params=ROBOTS)
def world(request) -> SimWorld:
    return SimWorld(request.param, render=False)


def test_joint_names_follow_the_yaml_order(world):
    assert world.joint_names == tuple(yaml_joint_values(robot_yaml(world.robot), "name"))


def test_joint_position_limits_equal_the_yaml(world):
    ranges = np.array([world.model.joint(name).range for name in world.joint_names])
    np.testing.assert_allclose(ranges, yaml_joint_values(robot_yaml(world.robot), "position_limits"), atol=1e-9)


def test_world_starts_at_the_yaml_home_unless_the_sim_sets_a_start_pose(world):
    start_pose = world.sim_robot.start_pose
    expected = yaml_joint_values(robot_yaml(world.robot), "home") if start_pose is None else start_pose
    np.testing.assert_allclose(world.joint_positions(), expected, atol=0.02)
    # Only the gen3's home (Kinova's) is not a pose to start a tabletop task from (test_sim_arms.py).
    assert (start_pose is not None) == (world.robot == "gen3")


def test_world_cameras_are_the_yaml_cameras(world):
    assert world.camera_names == tuple(camera["name"] for camera in robot_yaml(world.robot)["cameras"])


def test_each_joint_has_a_position_actuator_over_its_range(world):
    model = world.model
    for name in world.joint_names:
        actuator, joint = model.actuator(name), model.joint(name)
        assert actuator.trnid[0] == joint.id
        np.testing.assert_allclose(actuator.ctrlrange, joint.range, atol=1e-12)
        kp = actuator.gainprm[0]
        assert kp > 0 and actuator.biasprm[1] == -kp, f"{name} is not a position servo"


def test_physics_steps_every_2_ms(world):
    assert world.model.opt.timestep == pytest.approx(0.002)


def test_wrist_camera_and_tcp_ride_on_the_gripper_and_the_front_camera_is_fixed(world):
    model = world.model
    gripper = model.body(world.sim_robot.gripper_body).id

    def on_gripper(body: int) -> bool:
        while body != 0:
            if body == gripper:
                return True
            body = model.body_parentid[body]
        return False

    assert model.camera("front").bodyid[0] == 0
    assert on_gripper(model.camera("wrist").bodyid[0])
    assert on_gripper(model.site(world.sim_robot.tcp_site).bodyid[0])


def test_panda_second_finger_mirrors_the_first_and_is_not_an_embodiment_joint():
    world = SimWorld("panda", render=False)
    assert "panda_finger_joint2" not in world.joint_names
    target = np.array(world.sim_robot.home)
    target[world.sim_robot.gripper_index] = 0.01
    world.send_trajectory(build_trajectory(world.joint_names, target, 0.5))
    world.advance(1.0)
    assert world.data.joint("panda_finger_joint1").qpos[0] == pytest.approx(0.01, abs=5e-4)
    assert world.data.joint("panda_finger_joint2").qpos[0] == pytest.approx(0.01, abs=5e-4)


def test_unknown_robot_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"no simulated robot 'pand'.*panda, so101.*Did you mean 'panda'"):
        SimWorld("pand", render=False)
