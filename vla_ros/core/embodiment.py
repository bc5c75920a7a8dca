"""Embodiment configs: one YAML per robot under config/robots/, validated once at start-up.

An embodiment says which joints a robot has (by name, in the order a policy sees them), their limits
and home pose, how each joint's robot units map to the policy's units, which action dimensions are
deltas, which joint is the gripper, and which camera feeds which policy image key.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.core.features import RobotObservation


class JointUnit(str, Enum):
    RAD = "rad"  # revolute joints
    M = "m"  # prismatic joints (parallel-gripper fingers)


class PolicyUnit(str, Enum):
    """How a joint's value is expressed to the policy. Every mapping is affine."""

    RAD = "rad"
    DEG = "deg"
    M = "m"
    RANGE_M100_100 = "range_m100_100"  # LeRobot's normalised SO-100/101 arm joints: limits map to -100..100
    RANGE_0_100 = "range_0_100"  # LeRobot's normalised SO-100/101 gripper: limits map to 0..100
    GRIPPER_0_1 = "gripper_0_1"  # 0 open .. 1 closed, from the gripper's open/closed positions


class ActionMode(str, Enum):
    ABSOLUTE = "absolute"
    DELTA = "delta"  # relative to the state captured with the observation the chunk was computed from


class CommandInterface(str, Enum):
    """How commands reach the robot's controllers (see ros2-control conventions)."""

    JOINT_TRAJECTORY = "joint_trajectory"  # topic, trajectory_msgs/JointTrajectory (joint_trajectory_controller)
    FOLLOW_JOINT_TRAJECTORY = "follow_joint_trajectory"  # action, control_msgs/FollowJointTrajectory
    FORWARD_POSITION = "forward_position"  # topic, std_msgs/Float64MultiArray in the controller's joint order
    JOINT_COMMAND = "joint_command"  # topic, sensor_msgs/JointState (Isaac Sim's /joint_command)
    GRIPPER_COMMAND = "gripper_command"  # action, control_msgs/GripperCommand (one joint)
    PARALLEL_GRIPPER_COMMAND = "parallel_gripper_command"  # action, control_msgs/ParallelGripperCommand (one joint)


GRIPPER_INTERFACES = (CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND)


class ImageTransport(str, Enum):
    RAW = "raw"  # sensor_msgs/Image on the camera topic
    COMPRESSED = "compressed"  # sensor_msgs/CompressedImage on <topic>/compressed


@dataclass(frozen=True)
class JointSpec:
    name: str
    unit: JointUnit
    position_limits: tuple[float, float]  # joint units
    velocity_limit: float  # joint units / s
    acceleration_limit: float  # joint units / s^2
    home: float  # joint units
    policy_unit: PolicyUnit
    action: ActionMode = ActionMode.ABSOLUTE
    max_tracking_error: float | None = None  # joint units; overrides safety.max_tracking_error (fingers in m)


@dataclass(frozen=True)
class GripperSpec:
    joint: str
    open: float  # joint units, fully open (policy 0)
    closed: float  # joint units, fully closed (policy 1)


@dataclass(frozen=True)
class CameraSpec:
    name: str  # the robot's name for the camera
    policy_key: str  # feeds observation.images.<policy_key>
    width: int
    height: int
    topic: str | None = None  # ROS image topic; None means /<robot camera name>/image_raw
    transport: ImageTransport = ImageTransport.RAW


@dataclass(frozen=True)
class JointStateSource:
    """A joint state topic. `prefix` is prepended to the names it reports: two identical arms of a bimanual
    robot both report `waist`, which the embodiment calls `left_waist` and `right_waist`."""

    topic: str
    prefix: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """One command output: an interface, its topic or action name, and the joints it carries, in order."""

    interface: CommandInterface
    name: str  # topic or action name
    joints: tuple[str, ...]  # embodiment names; for forward_position: the controller's `joints` parameter order
    max_effort: float | None = None  # N or Nm, gripper actions only; None: the controller's default
    prefix: str = ""  # stripped from the joint names in the messages (the controller's own names)

    @property
    def wire_joint_names(self) -> tuple[str, ...]:
        return tuple(name[len(self.prefix):] for name in self.joints)


@dataclass(frozen=True)
class RosSpec:
    """Where the robot's joint states come from and where its commands go."""

    joint_state_topics: tuple[JointStateSource, ...] = (JointStateSource("/joint_states"),)  # merged by name
    outputs: tuple[OutputSpec, ...] = ()  # empty: one joint_trajectory output for every joint


@dataclass(frozen=True)
class SafetySpec:
    max_tracking_error: float | None = None  # joint units: the farthest a command may lead the measured position
    observation_timeout_s: float | None = 0.5  # older observations make the arm hold


@dataclass(frozen=True)
class EmbodimentConfig:
    robot: str
    control_rate_hz: float
    joints: tuple[JointSpec, ...]
    cameras: tuple[CameraSpec, ...]
    grippers: tuple[GripperSpec, ...] = ()  # one per hand: a bimanual robot has two
    safety: SafetySpec = SafetySpec()
    ros: RosSpec = RosSpec()
    description: str = ""
    source: str = "<inline>"  # the file it came from, for error messages
    # `policy_servers:` as written: how this robot talks to GR00T and OpenVLA servers (their modality keys, the
    # end-effector mapping). Checked by vla_ros.policies.remote when such a server is used; core reads none of it.
    policy_servers: Mapping[str, Any] = field(default_factory=dict, hash=False)

    # Derived per-joint arrays, in joint order: the adapter and safety filter work on these.
    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def lower_limits(self) -> np.ndarray:
        return np.array([j.position_limits[0] for j in self.joints])

    @property
    def upper_limits(self) -> np.ndarray:
        return np.array([j.position_limits[1] for j in self.joints])

    @property
    def velocity_limits(self) -> np.ndarray:
        return np.array([j.velocity_limit for j in self.joints])

    @property
    def acceleration_limits(self) -> np.ndarray:
        return np.array([j.acceleration_limit for j in self.joints])

    @property
    def home(self) -> np.ndarray:
        return np.array([j.home for j in self.joints])

    @property
    def delta_mask(self) -> np.ndarray:
        return np.array([j.action is ActionMode.DELTA for j in self.joints])

    @property
    def arm_mask(self) -> np.ndarray:
        """(n,) True for every joint that is not a gripper."""
        grippers = set(self.gripper_joints)
        return np.array([j.name not in grippers for j in self.joints])

    @property
    def tracking_error_limits(self) -> np.ndarray | None:
        """(n,) cap on |command - measured| per joint: the joint's own value, else safety.max_tracking_error."""
        default = self.safety.max_tracking_error
        if default is None and all(j.max_tracking_error is None for j in self.joints):
            return None
        return np.array([default if j.max_tracking_error is None else j.max_tracking_error for j in self.joints])

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def gripper_joints(self) -> tuple[str, ...]:
        return tuple(g.joint for g in self.grippers)

    def gripper_of(self, joint: str) -> GripperSpec | None:
        return next((g for g in self.grippers if g.joint == joint), None)

    def camera_topic(self, camera: CameraSpec) -> str:
        """The topic the camera's images arrive on, `/compressed` suffix included for compressed transport."""
        topic = camera.topic or f"/{camera.name}/image_raw"
        return f"{topic}/compressed" if camera.transport is ImageTransport.COMPRESSED else topic

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """Command outputs; without a `ros.outputs` entry, one joint_trajectory_controller for every joint."""
        if self.ros.outputs:
            return self.ros.outputs
        return (OutputSpec(CommandInterface.JOINT_TRAJECTORY, "/joint_trajectory_controller/joint_trajectory",
                           self.joint_names),)

    def camera(self, name: str) -> CameraSpec:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise ConfigError(
            f"robot '{self.robot}' has no camera '{name}'." + did_you_mean(name, [c.name for c in self.cameras]),
            source=self.source,
        )

    def example_observation(self, *, seed: int = 0, stamp: float = 0.0, instruction: str = "") -> RobotObservation:
        """A valid observation of this robot (random joints within limits, random images): for tests and benches."""
        rng = np.random.default_rng(seed)
        images = {c.name: rng.integers(0, 256, size=(c.height, c.width, 3), dtype=np.uint8) for c in self.cameras}
        positions = rng.uniform(self.lower_limits, self.upper_limits)
        return RobotObservation(stamp=stamp, joint_names=self.joint_names, joint_positions=positions, images=images,
                                instruction=instruction)

    def __post_init__(self) -> None:
        _validate(self)


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def config_dir() -> Path:
    """The folder holding robots/*.yaml: $VLA_ROS_CONFIG_DIR, a source checkout, or the installed share/ folder."""
    candidates = []
    if "VLA_ROS_CONFIG_DIR" in os.environ:
        candidates.append(Path(os.environ["VLA_ROS_CONFIG_DIR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "config")  # source checkout / pip install -e
    candidates.append(Path(sys.prefix) / "share" / "vla_ros" / "config")  # pip install (data_files)
    try:  # colcon install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vla_ros")) / "config")
    except Exception:  # noqa: BLE001 - not a ROS environment, or the package is not in the ament index
        pass
    for candidate in candidates:
        if (candidate / "robots").is_dir():
            return candidate
    raise ConfigError(
        "cannot find vla_ros's config folder (looked in " + ", ".join(str(c) for c in candidates) + "): "
        "set VLA_ROS_CONFIG_DIR to the folder that contains robots/"
    )


def available_robots() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "robots").glob("*.yaml"))


def load_embodiment(robot: str | os.PathLike) -> EmbodimentConfig:
    """Load and validate a robot by name (config/robots/<name>.yaml) or by path to a YAML file."""
    path = Path(robot)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "robots" / f"{robot}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown robot '{robot}'." + did_you_mean(str(robot), available_robots()))
    if not path.is_file():
        raise ConfigError(f"robot config file not found: {path}")
    with path.open(encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)  # safe_load: a config file must never construct Python objects
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from exc
    return embodiment_from_dict(data, source=str(path))


def embodiment_from_dict(data: Any, *, source: str = "<inline>") -> EmbodimentConfig:
    """Build an EmbodimentConfig from parsed YAML, naming the file, key and value of anything wrong."""
    top = _Section(data, source, "")
    top.reject_unknown(("robot", "description", "control_rate_hz", "joints", "cameras", "grippers", "safety", "ros",
                        "policy_servers"))
    joints = tuple(_joint(section) for section in top.list("joints"))
    return EmbodimentConfig(
        robot=top.get("robot", str),
        description=top.get("description", str, default=""),
        control_rate_hz=top.get("control_rate_hz", float),
        joints=joints,
        cameras=tuple(_camera(section) for section in top.list("cameras", default=[])),
        grippers=tuple(_gripper(section) for section in top.list("grippers", default=[])),
        safety=_safety(top.section("safety")) if "safety" in top.data else SafetySpec(),
        ros=_ros(top.section("ros"), tuple(j.name for j in joints)) if "ros" in top.data else RosSpec(),
        source=source,
        policy_servers=top.section("policy_servers").data if "policy_servers" in top.data else {},
    )


def _joint(s: _Section) -> JointSpec:
    s.reject_unknown(tuple(f.name for f in fields(JointSpec)))
    return JointSpec(
        name=s.get("name", str),
        unit=s.get("unit", JointUnit, default=JointUnit.RAD),
        position_limits=s.get("position_limits", _float_pair),
        velocity_limit=s.get("velocity_limit", float),
        acceleration_limit=s.get("acceleration_limit", float),
        home=s.get("home", float),
        policy_unit=s.get("policy_unit", PolicyUnit),
        action=s.get("action", ActionMode, default=ActionMode.ABSOLUTE),
        max_tracking_error=s.get("max_tracking_error", float, default=None),
    )


def _gripper(s: _Section) -> GripperSpec:
    s.reject_unknown(tuple(f.name for f in fields(GripperSpec)))
    return GripperSpec(joint=s.get("joint", str), open=s.get("open", float), closed=s.get("closed", float))


def _camera(s: _Section) -> CameraSpec:
    s.reject_unknown(tuple(f.name for f in fields(CameraSpec)))
    return CameraSpec(
        name=s.get("name", str),
        policy_key=s.get("policy_key", str),
        width=s.get("width", int),
        height=s.get("height", int),
        topic=s.get("topic", str, default=None),
        transport=s.get("transport", ImageTransport, default=ImageTransport.RAW),
    )


def _safety(s: _Section) -> SafetySpec:
    s.reject_unknown(tuple(f.name for f in fields(SafetySpec)))
    return SafetySpec(
        max_tracking_error=s.get("max_tracking_error", float, default=None),
        observation_timeout_s=s.get("observation_timeout_s", float, default=0.5),
    )


def _ros(s: _Section, joint_names: tuple[str, ...]) -> RosSpec:
    s.reject_unknown(("joint_state_topics", "outputs"))
    topics = RosSpec.joint_state_topics
    if "joint_state_topics" in s.data:
        topics = tuple(_joint_state_source(item, s.source, f"ros.joint_state_topics[{i}]")
                       for i, item in enumerate(s.get("joint_state_topics", _list)))
    sections = s.list("outputs", default=[])
    claimed = {name for section in sections for name in section.get("joints", _string_tuple, default=())}
    outputs = []
    for section in sections:
        section.reject_unknown(tuple(f.name for f in fields(OutputSpec)))
        # An output without `joints` takes every joint no other output names, in embodiment order.
        default_joints = tuple(name for name in joint_names if name not in claimed)
        outputs.append(OutputSpec(
            interface=section.get("interface", CommandInterface),
            name=section.get("name", str),
            joints=section.get("joints", _string_tuple, default=default_joints),
            max_effort=section.get("max_effort", float, default=None),
            prefix=section.get("prefix", str, default=""),
        ))
    return RosSpec(joint_state_topics=topics, outputs=tuple(outputs))


def _joint_state_source(item: Any, source: str, path: str) -> JointStateSource:
    if isinstance(item, str):  # a bare topic name
        return JointStateSource(item)
    section = _Section(item, source, path)
    section.reject_unknown(tuple(f.name for f in fields(JointStateSource)))
    return JointStateSource(topic=section.get("topic", str), prefix=section.get("prefix", str, default=""))


def _list(value: Any) -> list:
    if not isinstance(value, list):  # list("/joint_states") would quietly make one topic per character
        raise ValueError("expected a list")
    return value


def _string_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return tuple(value)


def _float_pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("expected [lower, upper]")
    return float(value[0]), float(value[1])


_MISSING = object()


class _Section:
    """One mapping of the YAML tree, remembering its path so that errors can name file, key and value."""

    def __init__(self, data: Any, source: str, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping, got {type(data).__name__} {data!r}",
                              source=source, key=path or None)
        self.data, self.source, self.path = data, source, path

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: Any, *, default: Any = _MISSING) -> Any:
        if key not in self.data or self.data[key] is None and default is None:
            if default is _MISSING:
                raise ConfigError("is required but missing", source=self.source, key=self._key(key))
            return default
        value = self.data[key]
        try:
            if kind in (float, int) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"expected a number, got {type(value).__name__}")
            if kind is str and not isinstance(value, str):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            if kind is int and value != int(value):
                raise ValueError("expected an integer")
            return kind(value)
        except ValueError as exc:
            if isinstance(kind, type) and issubclass(kind, Enum):
                choices = [m.value for m in kind]
                raise ConfigError(f"invalid value {value!r}." + did_you_mean(str(value), choices),
                                  source=self.source, key=self._key(key)) from None
            raise ConfigError(f"invalid value {value!r}: {exc}", source=self.source, key=self._key(key)) from None

    def section(self, key: str) -> _Section:
        return _Section(self.data[key], self.source, self._key(key))

    def list(self, key: str, *, default: Any = _MISSING) -> list[_Section]:
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError("is required but missing", source=self.source, key=self._key(key))
            return default
        items = self.data[key]
        if not isinstance(items, list):
            raise ConfigError(f"expected a list, got {items!r}", source=self.source, key=self._key(key))
        return [_Section(item, self.source, f"{self._key(key)}[{i}]") for i, item in enumerate(items)]

    def reject_unknown(self, known: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in known:
                raise ConfigError("unknown key." + did_you_mean(str(key), known), source=self.source,
                                  key=self._key(str(key)))


# ---------------------------------------------------------------------------------------------------------------------
# Validation: cross-field rules, checked once at construction


def _validate_ros(config: EmbodimentConfig, fail) -> None:
    names = config.joint_names
    if not config.ros.joint_state_topics:
        fail("ros.joint_state_topics", "needs at least one topic")
    owner: dict[str, int] = {}
    for i, output in enumerate(config.ros.outputs):
        key = f"ros.outputs[{i}]"
        if not output.name:
            fail(f"{key}.name", "must be a topic or action name")
        if not output.joints:
            fail(f"{key}.joints", "no joints left for this output: every joint is claimed by another output")
        for joint in output.joints:
            if not joint.startswith(output.prefix):
                fail(f"{key}.joints", f"'{joint}' does not start with the output's prefix '{output.prefix}'")
            if joint not in names:
                fail(f"{key}.joints", f"'{joint}' is not a joint of this robot." + did_you_mean(joint, names))
            if joint in owner:
                fail(f"{key}.joints", f"joint '{joint}' is already commanded by ros.outputs[{owner[joint]}]")
            owner[joint] = i
        if output.interface in GRIPPER_INTERFACES:
            if len(output.joints) != 1 or output.joints[0] not in config.gripper_joints:
                fail(f"{key}.joints", f"a {output.interface.value} output carries exactly one gripper joint "
                                      f"(grippers: {list(config.gripper_joints)}), got {list(output.joints)}")
        elif output.max_effort is not None:
            fail(f"{key}.max_effort", f"only gripper actions take max_effort, not {output.interface.value}")
    if config.ros.outputs:
        uncommanded = [name for name in names if name not in owner]
        if uncommanded:
            fail("ros.outputs", f"joints {uncommanded} are not commanded by any output: add them to one")


def _validate(config: EmbodimentConfig) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(message, source=config.source, key=key)

    if not config.robot:
        fail("robot", "must be a non-empty name")
    if not (math.isfinite(config.control_rate_hz) and config.control_rate_hz > 0):
        fail("control_rate_hz", f"must be > 0 Hz, got {config.control_rate_hz}")
    if not config.joints:
        fail("joints", "a robot needs at least one joint")
    names = config.joint_names
    for g, gripper in enumerate(config.grippers):
        key = f"grippers[{g}]"
        if gripper.joint not in names:
            fail(f"{key}.joint", f"'{gripper.joint}' is not one of the joints." + did_you_mean(gripper.joint, names))
        if gripper.joint in config.gripper_joints[:g]:
            fail(f"{key}.joint", f"joint '{gripper.joint}' is listed as a gripper twice")
        lower, upper = config.joints[names.index(gripper.joint)].position_limits
        for field_name in ("open", "closed"):
            value = getattr(gripper, field_name)
            if not (lower <= value <= upper):
                fail(f"{key}.{field_name}", f"{value} is outside joint '{gripper.joint}' limits [{lower}, {upper}]")
        if gripper.open == gripper.closed:
            fail(f"{key}.closed", f"must differ from open ({gripper.open})")
    for i, joint in enumerate(config.joints):
        key = f"joints[{i}]"
        lower, upper = joint.position_limits
        if not joint.name:
            fail(f"{key}.name", "must be a non-empty joint name")
        if joint.name in names[:i]:
            fail(f"{key}.name", f"joint '{joint.name}' is listed more than once")
        if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            fail(f"{key}.position_limits", f"joint '{joint.name}': need finite lower < upper, got [{lower}, {upper}]")
        if not (lower <= joint.home <= upper):
            fail(f"{key}.home", f"joint '{joint.name}': home {joint.home} is outside [{lower}, {upper}]")
        for field_name in ("velocity_limit", "acceleration_limit"):
            value = getattr(joint, field_name)
            if not (math.isfinite(value) and value > 0):
                fail(f"{key}.{field_name}", f"joint '{joint.name}': must be > 0, got {value}")
        if joint.max_tracking_error is not None:
            if not joint.max_tracking_error > 0:
                fail(f"{key}.max_tracking_error", f"joint '{joint.name}': must be > 0, got {joint.max_tracking_error}")
            if config.safety.max_tracking_error is None:
                fail(f"{key}.max_tracking_error", "set safety.max_tracking_error too: it applies to the joints "
                                                  "without a value of their own")
        native = {JointUnit.RAD: {PolicyUnit.RAD, PolicyUnit.DEG}, JointUnit.M: {PolicyUnit.M}}[joint.unit]
        if joint.policy_unit in (PolicyUnit.RAD, PolicyUnit.DEG, PolicyUnit.M) and joint.policy_unit not in native:
            fail(f"{key}.policy_unit", f"joint '{joint.name}' is in {joint.unit.value}; "
                                       f"policy_unit '{joint.policy_unit.value}' does not apply to it")
        if joint.policy_unit is PolicyUnit.GRIPPER_0_1 and joint.name not in config.gripper_joints:
            fail(f"{key}.policy_unit", f"joint '{joint.name}' uses gripper_0_1 but is not a gripper joint "
                                       f"(grippers: {list(config.gripper_joints)})")
    for field_name, values in (("name", [c.name for c in config.cameras]),
                               ("policy_key", [c.policy_key for c in config.cameras])):
        for i, value in enumerate(values):
            if not value:
                fail(f"cameras[{i}].{field_name}", "must be non-empty")
            if value in values[:i]:
                fail(f"cameras[{i}].{field_name}", f"'{value}' is used by more than one camera")
    for i, camera in enumerate(config.cameras):
        if camera.width <= 0 or camera.height <= 0:
            fail(f"cameras[{i}]", f"camera '{camera.name}': width and height must be > 0, "
                                  f"got {camera.width}x{camera.height}")
    _validate_ros(config, fail)
    safety = config.safety
    if safety.max_tracking_error is not None and not safety.max_tracking_error > 0:
        fail("safety.max_tracking_error", f"must be > 0 or left out (off), got {safety.max_tracking_error}")
    if safety.observation_timeout_s is not None and not safety.observation_timeout_s > 0:
        fail("safety.observation_timeout_s", f"must be > 0 s or null (off), got {safety.observation_timeout_s}")
