"""ros2_control on mock hardware for any robot config: the URDF and the controllers YAML, without ROS.

`sim:=mock` runs ros2_control's controller_manager on `mock_components/GenericSystem` (each joint's state
follows its command exactly) with the controllers a robot config's outputs name, so that the policy node
commands the real joint_trajectory_controller (JTC) and gripper controllers, as on the robot. Where the real
driver runs several controller managers (ALOHA: one per follower, under /follower_left and /follower_right),
there is one per namespace here too.

Names follow the outputs: `/ns/<controller>/joint_trajectory` is a JTC called `<controller>` in namespace `ns`;
a gripper action `/ns/<controller>/<action>` a GripperActionController (whose own action is `gripper_cmd`, so
another action name is remapped, e.g. franka_gripper's `gripper_action`). joint_state_broadcaster publishes
each namespace's joint states on the topic the robot config reads there.

`JTC_PARAMETERS` are the JTC settings we recommend for a streaming policy (docs/ros2-control.md has the
measurements behind them); config/controllers/<robot>.yaml is `controllers_yaml` of each shipped robot.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import yaml

from vla_ros.core.embodiment import CommandInterface, EmbodimentConfig, JointUnit
from vla_ros.core.errors import ConfigError

# JTC settings for a policy that streams a stamped lookahead (docs/ros2-control.md, "Recommended parameters").
JTC_PARAMETERS = {
    "command_interfaces": ["position"],
    "state_interfaces": ["position", "velocity"],
    # Interpolate from the last command, not from the measured state: a new lookahead continues the old one
    # exactly instead of pulling back to where the (lagging) hardware reports itself.
    "open_loop_control": True,
    # Our lookahead ends at zero velocity, which Jazzy's default requires; keep the default explicit.
    "allow_nonzero_velocity_at_trajectory_end": False,
    "allow_partial_joints_goal": False,
    "interpolation_method": "splines",
}

MOCK_UPDATE_RATE_HZ = 100  # controller_manager rate on mock hardware: 10 robots fit on 2 cores at this rate
CONTROLLER_TYPES = {
    CommandInterface.JOINT_TRAJECTORY: "joint_trajectory_controller/JointTrajectoryController",
    CommandInterface.FOLLOW_JOINT_TRAJECTORY: "joint_trajectory_controller/JointTrajectoryController",
    CommandInterface.FORWARD_POSITION: "position_controllers/JointGroupPositionController",
    CommandInterface.GRIPPER_COMMAND: "position_controllers/GripperActionController",
    CommandInterface.PARALLEL_GRIPPER_COMMAND: "parallel_gripper_action_controller/GripperActionController",
}
# The topic or action each controller type itself serves, under its own name.
OWN_ENDPOINT = {
    CommandInterface.JOINT_TRAJECTORY: "joint_trajectory",
    CommandInterface.FOLLOW_JOINT_TRAJECTORY: "follow_joint_trajectory",
    CommandInterface.FORWARD_POSITION: "commands",
    CommandInterface.GRIPPER_COMMAND: "gripper_cmd",
    CommandInterface.PARALLEL_GRIPPER_COMMAND: "gripper_cmd",
}
JOINT_STATE_BROADCASTER = "joint_state_broadcaster"


@dataclass(frozen=True)
class MockController:
    name: str
    type: str
    joints: tuple[str, ...]  # the controller's own joint names (the output's prefix stripped)
    interface: CommandInterface
    remap: tuple[str, str] | None  # (the controller's own endpoint, the output's name) where they differ


@dataclass(frozen=True)
class ControlGroup:
    """One controller_manager: its namespace ("" or "/name"), joints and controllers."""

    namespace: str
    joints: tuple[tuple[str, str], ...]  # (embodiment name, hardware name)
    controllers: tuple[MockController, ...]
    joint_state_topic: str  # where joint_state_broadcaster publishes

    def node_name(self, name: str) -> str:
        """Fully qualified node name of `name` in this group, as a parameters file addresses it."""
        return f"{self.namespace}/{name}" if self.namespace else name

    @property
    def remappings(self) -> list[tuple[str, str]]:
        """Remappings for the controller_manager process: endpoints renamed and the joint state topic."""
        pairs = [c.remap for c in self.controllers if c.remap is not None]
        own_joint_states = f"{self.namespace}/joint_states"
        if self.joint_state_topic != own_joint_states:
            pairs.append((own_joint_states, self.joint_state_topic))
        return pairs


def _split_endpoint(name: str, embodiment: EmbodimentConfig) -> tuple[str, str, str]:
    parts = name.strip("/").split("/")
    if not name.startswith("/") or len(parts) < 2:
        raise ConfigError(
            f"output '{name}' is not an absolute /<controller>/<topic or action> name, so no mock controller can "
            "serve it: write it as the driver names it, e.g. /arm_controller/joint_trajectory",
            source=embodiment.source,
            key="ros.outputs",
        )
    namespace = "/" + "/".join(parts[:-2]) if len(parts) > 2 else ""
    return namespace, parts[-2], parts[-1]


def control_groups(embodiment: EmbodimentConfig) -> tuple[ControlGroup, ...]:
    """The controller managers that serve `embodiment`'s outputs, one per namespace, in output order.

    Raises ConfigError for an output no mock controller can serve (sensor_msgs/JointState commands) or a
    namespace whose joint state topic is not among the robot's `joint_state_topics`.
    """
    by_namespace: dict[str, tuple[list, list]] = {}
    for output in embodiment.outputs:
        if output.interface not in CONTROLLER_TYPES:
            raise ConfigError(
                f"output {output.name} is a {output.interface.value} command, which no ros2_control controller "
                f"serves; sim:=mock needs one of {[i.value for i in CONTROLLER_TYPES]}",
                source=embodiment.source,
                key="ros.outputs",
            )
        namespace, controller, endpoint = _split_endpoint(output.name, embodiment)
        own = OWN_ENDPOINT[output.interface]
        remap = None if endpoint == own else (f"{namespace}/{controller}/{own}", output.name)
        joints, controllers = by_namespace.setdefault(namespace, ([], []))
        joints.extend(j for j in zip(output.joints, output.wire_joint_names, strict=True) if j not in joints)
        controllers.append(
            MockController(
                controller, CONTROLLER_TYPES[output.interface], output.wire_joint_names, output.interface, remap
            )
        )
    topics = [source.topic for source in embodiment.ros.joint_state_topics]
    groups = []
    for namespace, (joints, controllers) in by_namespace.items():
        own = f"{namespace}/joint_states"
        if own in topics:
            topic = own
        elif len(topics) == 1 and len(by_namespace) == 1:
            topic = topics[0]  # e.g. xArm: controllers at the root, joint states under /xarm
        else:
            raise ConfigError(
                f"controllers under '{namespace or '/'}' publish joint states on {own}, which is not among the "
                f"robot's joint_state_topics {topics}",
                source=embodiment.source,
                key="ros.joint_state_topics",
            )
        groups.append(ControlGroup(namespace, tuple(joints), tuple(controllers), topic))
    return tuple(groups)


def mock_urdf(embodiment: EmbodimentConfig, group: ControlGroup) -> str:
    """A URDF with one serial chain of the group's joints (limits from the robot config) and a ros2_control
    block on mock_components/GenericSystem: position commands, position and velocity states, starting at home.

    The chain has no geometry: it exists for ros2_control and robot_state_publisher, not for display.
    """
    specs = {joint.name: joint for joint in embodiment.joints}
    name = f"{embodiment.robot}{group.namespace.replace('/', '_')}"
    lines = ['<?xml version="1.0"?>', f"<robot name={quoteattr(name)}>", '  <link name="base_link"/>']
    parent = "base_link"
    for index, (robot_name, hardware_name) in enumerate(group.joints):
        spec = specs[robot_name]
        lower, upper = spec.position_limits
        kind = "prismatic" if spec.unit is JointUnit.M else "revolute"
        child = f"{hardware_name}_link"
        lines += [
            f"  <link name={quoteattr(child)}/>",
            f'  <joint name={quoteattr(hardware_name)} type="{kind}">',
            f"    <parent link={quoteattr(parent)}/><child link={quoteattr(child)}/>",
            f'    <origin xyz="0 0 {0.1 if index else 0.0}"/><axis xyz="0 0 1"/>',
            f'    <limit lower="{lower!r}" upper="{upper!r}" velocity="{spec.velocity_limit!r}" effort="100"/>',
            "  </joint>",
        ]
        parent = child
    lines += [
        f'  <ros2_control name={quoteattr(name + "_mock")} type="system">',
        "    <hardware><plugin>mock_components/GenericSystem</plugin></hardware>",
    ]
    for robot_name, hardware_name in group.joints:
        spec = specs[robot_name]
        lower, upper = spec.position_limits
        home = min(max(spec.home, lower), upper)
        lines += [
            f"    <joint name={quoteattr(hardware_name)}>",
            f'      <command_interface name="position"><param name="min">{lower!r}</param>'
            f'<param name="max">{upper!r}</param></command_interface>',
            f'      <state_interface name="position"><param name="initial_value">{home!r}</param></state_interface>',
            '      <state_interface name="velocity"/>',
            "    </joint>",
        ]
    lines += ["  </ros2_control>", "</robot>", ""]
    return "\n".join(lines)


def controllers_yaml(
    embodiment: EmbodimentConfig, *, update_rate_hz: int = MOCK_UPDATE_RATE_HZ, jtc_parameters: dict | None = None
) -> dict:
    """The parameters file of every controller manager and controller of `embodiment` (one file serves all
    namespaces: nodes are addressed by fully qualified name)."""
    jtc = JTC_PARAMETERS if jtc_parameters is None else jtc_parameters
    if not (isinstance(update_rate_hz, int) and update_rate_hz > 0) or not math.isfinite(update_rate_hz):
        raise ConfigError(f"update_rate_hz must be an integer > 0, got {update_rate_hz!r}")
    document: dict = {}
    for group in control_groups(embodiment):
        manager = {
            "update_rate": update_rate_hz,
            JOINT_STATE_BROADCASTER: {"type": "joint_state_broadcaster/JointStateBroadcaster"},
        }
        for controller in group.controllers:
            manager[controller.name] = {"type": controller.type}
            if controller.interface in (CommandInterface.JOINT_TRAJECTORY, CommandInterface.FOLLOW_JOINT_TRAJECTORY):
                parameters = {"joints": list(controller.joints), **copy.deepcopy(jtc)}
            elif controller.interface is CommandInterface.FORWARD_POSITION:
                parameters = {"joints": list(controller.joints)}
            else:  # a gripper action controller commands one joint
                parameters = {"joint": controller.joints[0]}
            document[group.node_name(controller.name)] = {"ros__parameters": parameters}
        document[group.node_name("controller_manager")] = {"ros__parameters": manager}
    return document


def controllers_yaml_text(embodiment: EmbodimentConfig, **kwargs) -> str:
    """`controllers_yaml` as the text of config/controllers/<robot>.yaml, with a header saying what it is."""
    header = (
        f"# ros2_control controllers for {embodiment.robot} (vla_ros sim:=mock, and the JTC settings we\n"
        "# recommend for a streaming policy on the real robot: docs/ros2-control.md).\n"
        "# Generated from config/robots/ by `python -m vla_ros.ros.mock_control <robot>`; a test keeps them in step.\n"
    )
    return header + yaml.safe_dump(controllers_yaml(embodiment, **kwargs), sort_keys=False, width=120)


if __name__ == "__main__":
    import sys

    from vla_ros.core.embodiment import load_embodiment

    for robot in sys.argv[1:]:
        print(controllers_yaml_text(load_embodiment(robot)), end="")
