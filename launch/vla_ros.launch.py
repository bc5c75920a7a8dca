"""Base launch file: the policy node for one robot, optionally the MuJoCo robot and rviz.

Per-robot launch files include this one with `robot` set. Arguments are validated by
vla_ros.ros.launch_params, so a bad robot or simulator fails here, before anything moves.
"""

import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from vla_ros.core.embodiment import load_embodiment
from vla_ros.ros.launch_params import (
    SIM_CHOICES,
    mock_follower_parameters,
    parse_bool,
    policy_node_parameters,
    sim_node_parameters,
)
from vla_ros.ros.mock_bringup import mock_processes, preview_description
from vla_ros.ros.mock_control import controllers_yaml_text

ARGUMENTS = [
    DeclareLaunchArgument("robot", default_value="so101", description="robot config (config/robots/<robot>.yaml)"),
    DeclareLaunchArgument("sim", default_value="none", choices=list(SIM_CHOICES),
                          description="mujoco: start our simulated robot; mock: ros2_control's controller_manager "
                                      "on mock hardware with the robot's controllers (the MuJoCo world follows "
                                      "/joint_states where it has the robot); gazebo/isaac: use their /clock "
                                      "(isaac: command /joint_command); none: real hardware"),
    DeclareLaunchArgument("policy", default_value="expert",
                          description="policy spec: builtin, expert, a checkpoint directory, ws://, gr00t:// or "
                                      "openvla+http://host:port"),
    DeclareLaunchArgument("sim_world", default_value="true", choices=["true", "false"],
                          description="sim:=mock: the MuJoCo world follows /joint_states, renders the cameras and "
                                      "judges the task (robots the simulator has); false: controllers only"),
    DeclareLaunchArgument("instruction", default_value="touch the red cube", description="language instruction"),
    DeclareLaunchArgument("dry_run", default_value="false", choices=["true", "false"],
                          description="compute commands but publish them only to ~/preview"),
    DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"], description="start rviz2"),
    DeclareLaunchArgument("monitor", default_value="false", choices=["true", "false"],
                          description="start rqt (robot monitor, latency plot, what the model sees) and the "
                                      "diagnostic aggregator it reads"),
    DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                          description="use /clock (implied by sim:=mujoco|gazebo|isaac)"),
    DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                          description="configure and activate the policy node at start"),
    DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
                              [FindPackageShare("vla_ros"), "config", "vla_policy.yaml"]),
                          description="policy node parameters (YAML); launch arguments override it"),
    DeclareLaunchArgument("description_file", default_value="",
                          description="the robot's URDF: shows the commanded pose as a ghost robot (frames preview/*); "
                                      "with sim:=mock, the ros2_control description (default: generated from the "
                                      "robot config)"),
]


def _ghost_robot(description: str, use_sim_time: bool):
    """robot_state_publisher on the policy node's ~/preview: the commanded pose in rviz, under frames preview/*."""
    return Node(package="robot_state_publisher", executable="robot_state_publisher", name="preview_state_publisher",
                namespace="preview", output="screen",
                parameters=[{"robot_description": description, "frame_prefix": "preview/",
                             "use_sim_time": use_sim_time}],
                remappings=[("joint_states", "/vla_policy/preview")])


def _mock_hardware(robot: str, description_file: str):
    """ros2_control on mock hardware: per controller manager, robot_state_publisher, ros2_control_node and a spawner
    of every controller the robot config names (vla_ros.ros.mock_bringup)."""
    embodiment = load_embodiment(robot)
    # The controllers file is derived from the robot config at each launch, so an edited config is never stale.
    params_file = os.path.join(tempfile.mkdtemp(prefix="vla_ros_mock_"), f"{embodiment.robot}_controllers.yaml")
    with open(params_file, "w", encoding="utf-8") as f:
        f.write(controllers_yaml_text(embodiment))
    return [Node(package=p.package, executable=p.executable, namespace=p.namespace or None, output="screen",
                 parameters=[dict(p.parameters)] + ([p.params_file] if p.params_file else []),
                 remappings=list(p.remappings), arguments=list(p.arguments))
            for p in mock_processes(embodiment, params_file=params_file, description_file=description_file or None)]


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in
           ("robot", "sim", "policy", "instruction", "dry_run", "use_sim_time", "autostart", "description_file",
            "sim_world")}
    parameters = policy_node_parameters(robot=arg["robot"], sim=arg["sim"], policy=arg["policy"],
                                        instruction=arg["instruction"], dry_run=arg["dry_run"],
                                        use_sim_time=arg["use_sim_time"])
    if arg["description_file"]:
        with open(arg["description_file"], encoding="utf-8") as f:
            ghost = f.read()
    else:  # sim:=mock knows a description of its own (robots with one controller manager)
        ghost = preview_description(load_embodiment(arg["robot"])) if arg["sim"] == "mock" else None
    actions = [_ghost_robot(ghost, parameters["use_sim_time"])] if ghost else []
    if arg["sim"] == "mujoco" and arg["policy"] == "expert":
        # The scripted expert reads the simulator's ground truth, so both nodes share one process.
        actions.append(Node(package="vla_ros", executable="demo_node", output="screen",
                            arguments=["--robot", arg["robot"], "--instruction", arg["instruction"],
                                       *(["--dry-run"] if parameters["dry_run"] else [])]))
        return actions
    if arg["sim"] == "mujoco":
        actions.append(Node(package="vla_ros", executable="sim_node", name="mujoco_robot", output="screen",
                            parameters=[sim_node_parameters(robot=arg["robot"], instruction=arg["instruction"])]))
    if arg["sim"] == "mock":
        actions += _mock_hardware(arg["robot"], arg["description_file"])
        follower = mock_follower_parameters(robot=arg["robot"], instruction=arg["instruction"])
        # The MuJoCo world renders the cameras and judges the task.
        if follower is not None and parse_bool(arg["sim_world"], argument="sim_world"):
            actions.append(Node(package="vla_ros", executable="sim_node", name="mujoco_robot", output="screen",
                                parameters=[follower]))
    policy_node = LifecycleNode(package="vla_ros", executable="policy_node", name="vla_policy", namespace="",
                                output="screen", parameters=[LaunchConfiguration("params_file"), parameters])
    actions.append(policy_node)
    if parse_bool(arg["autostart"], argument="autostart"):
        actions.append(RegisterEventHandler(OnStateTransition(
            # Only after configure: a later deactivate (an operator, a behaviour tree) must not be undone.
            target_lifecycle_node=policy_node, start_state="configuring", goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(policy_node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))])))
        actions.append(EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(policy_node),
                                                   transition_id=Transition.TRANSITION_CONFIGURE)))
    return actions


def generate_launch_description():
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                arguments=["-d", PathJoinSubstitution([FindPackageShare("vla_ros"), "config", "vla_ros.rviz"])],
                condition=IfCondition(LaunchConfiguration("rviz")))
    config = PathJoinSubstitution([FindPackageShare("vla_ros"), "config"])
    monitor = IfCondition(LaunchConfiguration("monitor"))
    # rqt_robot_monitor shows /diagnostics_agg: the aggregator groups /diagnostics under it.
    aggregator = Node(package="diagnostic_aggregator", executable="aggregator_node", output="screen",
                      parameters=[PathJoinSubstitution([config, "diagnostic_aggregator.yaml"])], condition=monitor)
    rqt = Node(package="rqt_gui", executable="rqt_gui", name="rqt", output="screen", condition=monitor,
               arguments=["--force-discover", "--perspective-file",
                          PathJoinSubstitution([config, "vla_ros.perspective"])])
    return LaunchDescription([*ARGUMENTS, OpaqueFunction(function=_nodes), rviz, aggregator, rqt])
