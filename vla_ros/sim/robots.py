"""The simulated robots: which MJCF file, and the facts about it the world and experts rely on.

Joint order, home pose, gripper values and motion limits come from the robot's embodiment
(config/robots/<name>.yaml), the same file the pipeline uses; test_sim_models.py checks the MJCF against it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from functools import cached_property

from vla_ros.core.embodiment import EmbodimentConfig, GripperSpec, load_embodiment
from vla_ros.core.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Workspace:
    """Where cube centres may be placed: an annular sector of the table around the arm's base (at the origin)."""

    min_radius_m: float
    max_radius_m: float
    max_azimuth_rad: float  # |atan2(y, x)|, 0 = straight ahead (+x)
    min_spacing_m: float  # between cube centres, so that open jaws fit between neighbours

    def __post_init__(self) -> None:
        if not 0 < self.min_radius_m < self.max_radius_m:
            raise ConfigError(f"need 0 < min_radius_m < max_radius_m, got {self.min_radius_m} and {self.max_radius_m}")


@dataclass(frozen=True)
class SimRobot:
    """One arm of the simulator. Per-joint arrays are in `joint_names` order, in joint units (rad or m)."""

    name: str  # also the embodiment's name: config/robots/<name>.yaml
    model_file: str  # in vla_ros/sim/assets/; each embodiment joint has a position actuator of the same name
    gripper_body: str  # every geom in this body's subtree counts as the gripper for contact checks
    jaw_geoms: tuple[str, str]  # a cube is held when it touches both
    cube_size_m: float  # edge length of the cubes this arm handles
    workspace: Workspace
    tcp_site: str = "tcp"
    # Where episodes start, in the arm's joint order with the gripper open, when not the embodiment's home pose
    # (which stays what the real arm's driver calls home).
    start_pose: tuple[float, ...] | None = None

    @cached_property
    def embodiment(self) -> EmbodimentConfig:
        embodiment = load_embodiment(self.name)
        if len(embodiment.grippers) != 1:
            raise ConfigError(f"a simulated arm has exactly one gripper, got {len(embodiment.grippers)}",
                              source=embodiment.source, key="grippers")
        return embodiment

    @property
    def gripper(self) -> GripperSpec:
        return self.embodiment.grippers[0]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.embodiment.joint_names

    @cached_property
    def home(self) -> tuple[float, ...]:
        """Where episodes start, and the posture the expert's inverse kinematics leans to (checked once)."""
        if self.start_pose is None:
            return tuple(self.embodiment.home)
        if len(self.start_pose) != len(self.joint_names):
            raise ConfigError(f"simulated {self.name}: start_pose has {len(self.start_pose)} values for "
                              f"{len(self.joint_names)} joints ({', '.join(self.joint_names)})")
        lower, upper = self.embodiment.lower_limits, self.embodiment.upper_limits
        for name, value, low, high in zip(self.joint_names, self.start_pose, lower, upper, strict=True):
            if not low <= value <= high:
                raise ConfigError(f"simulated {self.name}: start_pose puts joint '{name}' at {value}, outside "
                                  f"[{low}, {high}]")
        return self.start_pose

    @property
    def velocity_limits(self) -> tuple[float, ...]:
        return tuple(self.embodiment.velocity_limits)

    @property
    def acceleration_limits(self) -> tuple[float, ...]:
        return tuple(self.embodiment.acceleration_limits)

    @property
    def gripper_joint(self) -> str:
        return self.gripper.joint

    @property
    def gripper_open(self) -> float:
        return self.gripper.open

    @property
    def gripper_closed(self) -> float:
        """Past contact with a cube, so that the position servo squeezes."""
        return self.gripper.closed

    @property
    def gripper_index(self) -> int:
        return self.joint_names.index(self.gripper_joint)


SO101 = SimRobot(
    name="so101",
    model_file="so101.xml",
    gripper_body="gripper",
    jaw_geoms=("fixed_jaw", "moving_jaw"),
    cube_size_m=0.028,
    workspace=Workspace(min_radius_m=0.13, max_radius_m=0.22, max_azimuth_rad=0.8, min_spacing_m=0.065),
)

PANDA = SimRobot(
    name="panda",
    model_file="panda.xml",
    gripper_body="panda_hand",
    jaw_geoms=("left_finger", "right_finger"),
    cube_size_m=0.045,
    workspace=Workspace(min_radius_m=0.35, max_radius_m=0.62, max_azimuth_rad=0.6, min_spacing_m=0.11),
)

# The Panda's kinematics and hand under franka_ros2's names (fr3.xml), so the Panda's cubes and workspace.
FR3 = replace(PANDA, name="fr3", model_file="fr3.xml", gripper_body="fr3_hand")

# Kinova's Home points the gripper forward at the wall and puts joint 6 two radians from any top-down grasp: at
# the expert's half speed that swing alone took 6 of a touch episode's 10 s. The gen3 starts instead as the Panda
# does, ready over its workspace: gripper down 30 cm above the table, 40 cm out, wrist camera on the cubes (joints
# 1, 3, 5 and 7 as at Home).
GEN3 = SimRobot(
    name="gen3",
    model_file="gen3.xml",
    gripper_body="end_effector_link",
    jaw_geoms=("left_pad", "right_pad"),
    cube_size_m=0.045,
    workspace=Workspace(min_radius_m=0.35, max_radius_m=0.62, max_azimuth_rad=0.6, min_spacing_m=0.11),
    start_pose=(0.0, 0.23, 3.14, -1.60, 0.0, -1.31, 1.57, 0.0),
)

XARM7 = SimRobot(
    name="xarm7",
    model_file="xarm7.xml",
    gripper_body="xarm_gripper_base_link",
    jaw_geoms=("left_pad", "right_pad"),
    cube_size_m=0.045,
    workspace=Workspace(min_radius_m=0.3, max_radius_m=0.52, max_azimuth_rad=0.6, min_spacing_m=0.11),
)

VX300S = SimRobot(
    name="vx300s",
    model_file="vx300s.xml",
    gripper_body="hand",
    jaw_geoms=("left_pad", "right_pad"),
    cube_size_m=0.04,
    workspace=Workspace(min_radius_m=0.25, max_radius_m=0.45, max_azimuth_rad=0.7, min_spacing_m=0.1),
)

ROBOTS: dict[str, SimRobot] = {robot.name: robot for robot in (SO101, PANDA, FR3, GEN3, XARM7, VX300S)}
SIM_ROBOTS = tuple(ROBOTS)  # the robot configs the simulator can build a scene for
SIM_ROBOT_HELP = (f"simulated robot: {', '.join(SIM_ROBOTS)}, or a robot YAML of one of them (the other robot "
                  "configs run on ROS 2 only)")


def get_robot(name: str) -> SimRobot:
    """The simulated robot called `name`; ConfigError listing the valid names otherwise."""
    try:
        return ROBOTS[name]
    except KeyError:
        raise ConfigError(f"no simulated robot '{name}'.{did_you_mean(name, ROBOTS)}") from None


def load_simulated_embodiment(name: str) -> EmbodimentConfig:
    """The embodiment of a simulated robot: a name of `SIM_ROBOTS` or a robot YAML of one of them.

    Refuses other robots before anything loads, naming the ones the simulator has: the other robot configs drive
    real arms (and Gazebo or Isaac Sim) through ROS 2.
    """
    is_path = name.endswith((".yaml", ".yml"))
    if not is_path and name not in ROBOTS:
        close = difflib.get_close_matches(name, SIM_ROBOTS, n=1)
        raise ConfigError(f"the simulator has no robot '{name}': it simulates {', '.join(SIM_ROBOTS)} (other "
                          "robots run on ROS 2: ros2 launch vla_ros <robot>.launch.py)."
                          + (f" Did you mean '{close[0]}'?" if close else ""))
    embodiment = load_embodiment(name)
    if embodiment.robot not in ROBOTS:
        raise ConfigError(f"{name} is the robot '{embodiment.robot}', which the simulator does not have: it "
                          f"simulates {', '.join(SIM_ROBOTS)}")
    return embodiment
