"""Every robot on ros2_control's mock hardware: `<robot>.launch.py sim:=mock` brings up the controller managers with
the controllers the robot config names, all active; the policy node activates (dry_run false) and the arm's joints
move under the real controllers (joint_trajectory_controller, gripper controllers, joint_state_broadcaster).

The robots come up a few at a time, each in its own ROS domain (40-49), driven by a policy server in this process (a
`SwayPolicy`: no model; the probe stands in for the cameras). Needs ROS 2 with
ros2_control and the colcon-built vla_ros (its launch files and generated interfaces).
"""

from __future__ import annotations

import pytest
from ros_graph import require

require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Jazzy setup")
require("controller_manager_msgs", "needs ros2_control (controller_manager_msgs)")
require("vla_ros.msg", "needs the colcon-built vla_ros (its generated interfaces)")

from ros_mock import MockLaunch, Probe, serve_sway, wait_until  # noqa: E402

from vla_ros.core.embodiment import GRIPPER_INTERFACES, load_embodiment  # noqa: E402
from vla_ros.ros.mock_control import JOINT_STATE_BROADCASTER, control_groups  # noqa: E402

pytestmark = pytest.mark.ros

ROBOTS = ("so101", "so100", "ur5e", "lite6", "fr3", "panda", "gen3", "xarm7", "aloha", "vx300s")
FIRST_DOMAIN = 40  # one domain per robot: 40..49
BRING_UP_S = 150.0  # ten launches on two shared cores


# Robots come up a few at a time: ten at once (about 50 processes) overload two cores badly enough that service
# calls of the spawners time out.
BATCHES = (("so101", "so100", "ur5e", "lite6"), ("fr3", "panda", "gen3"), ("xarm7", "aloha", "vx300s"))


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """Brings a batch of robots up (stopping the previous batch first); {robot: (launch, probe)} of the batch."""
    folder = tmp_path_factory.mktemp("mock_robots")
    running: dict = {"batch": None, "servers": [], "launches": {}, "probes": {}}

    def stop() -> None:
        for launch in running["launches"].values():
            launch.interrupt()
        for probe in running["probes"].values():
            probe.close()
        for server in running["servers"]:
            server.stop()
        running.update(batch=None, servers=[], launches={}, probes={})

    def bring_up(robot: str) -> tuple[MockLaunch, Probe]:
        batch = next(b for b in BATCHES if robot in b)
        if running["batch"] != batch:
            stop()
            running["batch"] = batch
            for robot_in_batch in batch:
                domain = FIRST_DOMAIN + ROBOTS.index(robot_in_batch)
                server, url = serve_sway(robot_in_batch)
                running["servers"].append(server)
                probe = running["probes"][robot_in_batch] = Probe(domain)
                probe.publish_camera_images(load_embodiment(robot_in_batch))
                running["launches"][robot_in_batch] = MockLaunch(
                    robot_in_batch,
                    domain,
                    folder / f"{robot_in_batch}.log",
                    policy=url,
                    dry_run="false",
                    instruction="sway",
                    sim_world="false",
                )
        return running["launches"][robot], running["probes"][robot]

    yield bring_up
    stop()


def _expected_controllers(robot: str) -> dict[str, set[str]]:
    """Controller manager -> the controllers it must have active."""
    return {
        group.node_name("controller_manager") if group.namespace else "/controller_manager": {
            JOINT_STATE_BROADCASTER,
            *(c.name for c in group.controllers),
        }
        for group in control_groups(load_embodiment(robot))
    }


@pytest.mark.parametrize("robot", ROBOTS)
def test_controllers_come_up_active_and_the_policy_moves_the_arm(launcher, robot):
    launch, probe = launcher(robot)
    embodiment = load_embodiment(robot)
    joint_states = {
        source.topic: probe.subscribe_joint_states(source.topic) for source in embodiment.ros.joint_state_topics
    }
    for manager, expected in _expected_controllers(robot).items():
        active = wait_until(
            lambda m=manager, e=expected: all(probe.controller_states(m).get(name) == "active" for name in e),
            BRING_UP_S,
            period_s=1.0,
        )
        assert active, (
            f"{robot}: {manager} has {probe.controller_states(manager)}, expected {sorted(expected)} "
            f"active\n{launch.output()[-4000:]}"
        )
    assert wait_until(lambda: probe.lifecycle_state("/vla_policy") == "active", BRING_UP_S, period_s=1.0), (
        f"{robot}: policy node is '{probe.lifecycle_state('/vla_policy')}'\n{launch.output()[-4000:]}"
    )
    from rcl_interfaces.srv import GetParameters

    dry_run = probe.call(GetParameters, "/vla_policy/get_parameters", GetParameters.Request(names=["dry_run"]))
    assert dry_run is not None and dry_run.values[0].bool_value is False

    # The arm joints (not the grippers) move: the policy's commands went through the real controllers to the mock
    # hardware and back out of joint_state_broadcaster.
    grippers = {output.joints[0] for output in embodiment.outputs if output.interface in GRIPPER_INTERFACES}
    grippers |= {g.joint for g in embodiment.grippers}
    arm = {}  # reported name -> topic, for the embodiment's arm joints
    for source in embodiment.ros.joint_state_topics:
        for name in embodiment.joint_names:
            if name.startswith(source.prefix) and name not in grippers:
                arm[name[len(source.prefix) :], source.topic] = name

    def moved() -> list[str]:
        return [
            robot_name
            for (wire, topic), robot_name in arm.items()
            if len(values := joint_states[topic].get(wire, [])) > 1 and max(values) - min(values) > 0.01
        ]

    assert wait_until(lambda: len(moved()) == len(arm), 60.0, period_s=0.5), (
        f"{robot}: only {moved()} of {sorted(arm.values())} moved\n{launch.output()[-4000:]}"
    )
    # A command that an overloaded machine delivers after its whole lookahead (a second) has passed is rejected, as
    # it must be; any other rejection (joint names, velocities, ...) is a bug in what we send.
    problems = ("Received trajectory", "rejected", "Joints on incoming", "Velocity of last")
    rejected = [
        line
        for line in launch.output().splitlines()
        if any(p in line for p in problems) and "ends in the past" not in line
    ]
    assert not rejected, f"{robot}: the controllers rejected commands:\n" + "\n".join(rejected[:10])
