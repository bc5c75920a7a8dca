"""The MuJoCo simulator as a ROS 2 robot, on any rclpy-shaped node: rclpy's (`sim_node`) or the pip-only DDS one.

It stands in for a robot with its ros2_control controllers: /clock, joint states and camera images out; the
embodiment's joint_trajectory topics in, with JTC's semantics (shared/reference/ros2-control.md). The rclpy node adds
the action servers (FollowJointTrajectory, GripperCommand, ParallelGripperCommand), ~/reset and parameter changes.

Time: physics runs on a wall-clock timer at `realtime_factor`, and every stamp this node writes or reads is simulated
time, published on /clock: run the other nodes with use_sim_time:=true. Rates are in simulated time. /clock never
goes back: a reset starts the next episode where the last one stopped.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vla_ros.core.embodiment import (
    CameraSpec,
    CommandInterface,
    EmbodimentConfig,
    ImageTransport,
    OutputSpec,
)
from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint
from vla_ros.ros.backend import Backend
from vla_ros.ros.convert import (
    camera_info_to_msg,
    compressed_image_to_msg,
    image_to_msg,
    joint_state_to_msg,
    seconds_to_stamp,
    trajectory_from_msg,
)
from vla_ros.sim.robots import ROBOTS
from vla_ros.sim.tasks import Task, parse_instruction
from vla_ros.sim.world import SimWorld

if TYPE_CHECKING:
    import mujoco

NODE_NAME = "mujoco_robot"
DEFAULT_COLORS = ("red", "green", "blue")

# Falling further behind real time than this (simulated seconds) restarts the pacing instead of catching up in one
# long step: the simulation then runs slower than asked, and says so.
MAX_CATCH_UP_S = 0.1
# A new goal does not have to reach a held pose in any time; this only keeps the hold trajectory's one point > 0 s.
HOLD_TIME_S = 0.01
REJECTION_LOG_INTERVAL_S = 10.0
# follow_joint_states: the world's arm reaches each reported position this long after the report (about one period
# of joint_state_broadcaster at the mock controller manager's 100 Hz).
FOLLOW_TIME_S = 0.01

SUPPORTED_INTERFACES = (CommandInterface.JOINT_TRAJECTORY, CommandInterface.FOLLOW_JOINT_TRAJECTORY,
                        CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND)


@dataclass(frozen=True)
class SimNodeConfig:
    """The node's parameters (see `MujocoRobotNode`), checked once."""

    robot: str = "so101"
    instruction: str = "touch the red cube"
    seed: int = 0
    publish_rate_hz: float = 100.0
    camera_rate_hz: float = 10.0
    camera_width: int = 640
    camera_height: int = 480
    realtime_factor: float = 1.0
    render: bool = True
    # sim:=mock: ros2_control's mock hardware is the robot; the world follows its joint states (wall-clock stamps,
    # no /clock, no commands of its own) to render the cameras and judge the task.
    follow_joint_states: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"{message}, got {getattr(self, name)!r}", key=name)

        if not (math.isfinite(self.publish_rate_hz) and self.publish_rate_hz > 0):
            fail("publish_rate_hz", "must be > 0 Hz (simulated time)")
        if not (math.isfinite(self.camera_rate_hz) and self.camera_rate_hz > 0):
            fail("camera_rate_hz", "must be > 0 Hz (simulated time); to turn the cameras off set render:=false")
        for name in ("camera_width", "camera_height"):
            if getattr(self, name) <= 0:
                fail(name, "must be > 0 pixels")
        if not (math.isfinite(self.realtime_factor) and self.realtime_factor >= 0):
            fail("realtime_factor", "must be >= 0 (1: real time, 0: as fast as possible)")
        if self.seed < 0:
            fail("seed", "must be >= 0")


class MujocoRobotCore:
    """The simulated arm of `config.robot` on its table, publishing and subscribing through `node`.

    Publishes: /clock; the embodiment's joint state topics (JointState, position and velocity); per camera its image
    topic (Image rgb8; also CompressedImage JPEG on <topic>/compressed for cameras with compressed transport) and
    <topic base>/camera_info; ~/task_success (Bool, latched). Subscribes to the embodiment's joint_trajectory outputs.
    The owner calls `step` from a steady wall-clock timer every `sim_period_s / realtime_factor` seconds.
    """

    def __init__(self, node: Any, backend: Backend, embodiment: EmbodimentConfig, config: SimNodeConfig, *,
                 action_interfaces: bool = False):
        self.node, self.backend, self.msg = node, backend, backend.msg
        self.embodiment, self.config = embodiment, config
        self.logger = node.get_logger()
        outputs = checked_outputs(embodiment, action_interfaces=action_interfaces)
        self.outputs = outputs
        task = parse_instruction(config.instruction)
        self.world = SimWorld(
            embodiment.robot,
            camera_size=(config.camera_height, config.camera_width),
            render=False,  # the camera thread renders, with a GL context of its own
            colors=tuple(dict.fromkeys((*DEFAULT_COLORS, task.color))),
            # Following joint states moves every joint at once; taking commands, each controller owns its joints.
            joint_groups=None if config.follow_joint_states else tuple(output.joints for output in outputs),
        )
        check_joints_and_cameras(embodiment, self.world)
        self.rejections = RejectionLog(self.logger)
        self.task: Task = task
        self._episode = 0
        self._time_offset = 0.0  # /clock time at the start of this episode: /clock = offset + world.time
        self._task_success: bool | None = None
        self.on_step: list[Callable[[Any], None]] = []  # called after each physics step with its stamp message
        self.on_new_episode: list[Callable[[str], None]] = []  # called with the reason before a reset
        self.world.reset(task, config.seed)

        msg, qos = self.msg, backend.qos
        self._clock_pub = node.create_publisher(msg.Clock, "/clock", qos.clock)
        # Each joint state topic reports the joints with its prefix, under their names without it.
        self._joint_state_pubs = []
        self._followed: np.ndarray | None = None  # follow_joint_states: the last reported positions, world order
        for source in embodiment.ros.joint_state_topics:
            indices = [i for i, name in enumerate(embodiment.joint_names) if name.startswith(source.prefix)]
            names = [embodiment.joint_names[i][len(source.prefix):] for i in indices]
            if config.follow_joint_states:
                node.create_subscription(msg.JointState, source.topic,
                                         lambda m, p=source.prefix: self._on_joint_state(p, m), qos.sensor)
            else:
                self._joint_state_pubs.append((node.create_publisher(msg.JointState, source.topic, qos.sensor),
                                               names, indices))
        self._success_pub = node.create_publisher(msg.Bool, "~/task_success", qos.latched)
        for output in outputs:
            if output.interface is CommandInterface.JOINT_TRAJECTORY and not config.follow_joint_states:
                node.create_subscription(msg.JointTrajectory, output.name,
                                         lambda m, o=output: self._on_trajectory(o, m), qos.command)

        self.cameras: CameraPublisher | None = None
        if config.render and embodiment.cameras:
            self.cameras = CameraPublisher(node, backend, self.world.model, embodiment, config)
        self._next_frame_time = 0.0  # world time

        # Physics is paced by a steady wall clock, never by the node's ROS clock: with use_sim_time that would be the
        # /clock this node publishes itself, and nothing would ever start.
        self.sim_period_s = 1.0 / config.publish_rate_hz
        self.wall_period_s = self.sim_period_s / config.realtime_factor if config.realtime_factor > 0 else 0.0
        self._anchor_wall, self._anchor_sim = time.monotonic(), self.world.time
        self.lagging_steps = 0
        self.logger.info(
            f"simulating {embodiment.robot} ({embodiment.source}) for '{task.instruction}', seed "
            f"{config.seed}: joint states at {config.publish_rate_hz:g} Hz, "
            + (f"{len(embodiment.cameras)} cameras {config.camera_width}x{config.camera_height} at "
               f"{config.camera_rate_hz:g} Hz" if self.cameras else "no cameras")
            + f", realtime factor {config.realtime_factor:g}; commands: "
            + ", ".join(f"{o.name} ({o.interface.value})" for o in outputs)
        )

    @property
    def sim_time(self) -> float:
        """Simulated time since start-up (s): what /clock says."""
        return self._time_offset + self.world.time

    def stamp(self) -> Any:
        if self.config.follow_joint_states:  # the controllers' clock: the stamps the joint states carry
            return self.node.get_clock().now().to_msg()
        return seconds_to_stamp(self.sim_time, self.msg.Time)

    # --- physics ---------------------------------------------------------------------------------------------------

    def step(self) -> None:
        if self.config.realtime_factor > 0:
            wall = time.monotonic()
            duration = self._anchor_sim + (wall - self._anchor_wall) * self.config.realtime_factor - self.world.time
            if duration > MAX_CATCH_UP_S:
                self.lagging_steps += 1
                if self.lagging_steps == 1:
                    self.logger.warning(
                        f"the simulation cannot keep up with realtime_factor {self.config.realtime_factor:g} on this "
                        "machine and runs slower: lower camera_rate_hz, camera_width/camera_height or realtime_factor")
                duration = self.sim_period_s
                self._anchor_wall, self._anchor_sim = wall, self.world.time + duration
        else:
            duration = self.sim_period_s
        with self.world.lock:
            before = self.world.time
            self.world.advance(max(duration, 0.0))
            if self.world.time == before:
                return  # less than a physics step is due: publishing now would repeat the last stamp
            positions, velocities = self.world.joint_positions(), self.world.joint_velocities()

        stamp = self.stamp()
        msg = self.msg
        if not self.config.follow_joint_states:
            self._clock_pub.publish(msg.Clock(clock=stamp))
        for publisher, names, indices in self._joint_state_pubs:
            publisher.publish(joint_state_to_msg(msg.JointState, stamp=stamp, names=names,
                                                 positions=positions[indices], velocities=velocities[indices]))
        for callback in self.on_step:
            callback(stamp)
        self._publish_task_success()
        if self.cameras is not None and self.world.time >= self._next_frame_time:
            self.cameras.post(stamp, self.world.data.qpos)
            self._next_frame_time += 1.0 / self.config.camera_rate_hz
            if self._next_frame_time <= self.world.time:  # fell behind: no burst of frames to catch up
                self._next_frame_time = self.world.time + 1.0 / self.config.camera_rate_hz

    def _publish_task_success(self) -> None:
        success = self.task.is_success(self.world)
        if success != self._task_success:
            self._task_success = success
            self._success_pub.publish(self.msg.Bool(data=success))
            if success:
                self.logger.info(f"task '{self.task.instruction}' succeeded at {self.world.time:.2f} s")

    # --- episodes --------------------------------------------------------------------------------------------------

    def new_episode(self, task: Task, reason: str) -> str:
        """Lay out the next episode (seed + 1) for `task`; returns what happened, for the log and the caller."""
        for callback in self.on_new_episode:
            callback(reason)
        self._episode += 1
        seed = self.config.seed + self._episode
        with self.world.lock:
            self._time_offset += self.world.time
            self.world.reset(task, seed)
            if self._followed is not None:  # the arm is where the hardware has it, not at home
                self.world.place_arm(self._followed)
        self.task = task
        self._anchor_wall, self._anchor_sim = time.monotonic(), self.world.time
        self._next_frame_time = 0.0
        self._task_success = None
        self._publish_task_success()
        message = f"episode {self._episode}: '{task.instruction}', seed {seed}, from {self.sim_time:.3f} s sim time"
        self.logger.info(f"{message} ({reason})")
        return message

    def task_for(self, instruction: str) -> Task:
        """The task of a new instruction, if this world can set it up (its cube colours are fixed at start)."""
        task = parse_instruction(instruction)
        if task.color not in self.world.cube_colors:
            raise ConfigError(f"this world has cubes {list(self.world.cube_colors)} only, not {task.color}: "
                              f"restart the node with instruction:='{instruction}'")
        return task

    # --- following the hardware (follow_joint_states) ---------------------------------------------------------------

    def _on_joint_state(self, prefix: str, msg: Any) -> None:
        """Move the world's arm to the reported positions within one report period (its servos track them)."""
        names = [prefix + name for name in msg.name]
        known = [(self.world.joint_names.index(n), p) for n, p in zip(names, msg.position, strict=False)
                 if n in self.world.joint_names]
        if not known:
            return
        with self.world.lock:
            positions = self.world.desired_joint_state()[0] if self._followed is None else self._followed.copy()
            for index, position in known:
                positions[index] = position
            self._followed = positions
            self.world.send_trajectory(JointTrajectory(
                joint_names=self.world.joint_names, points=(TrajectoryPoint(positions.copy(), FOLLOW_TIME_S),)))

    # --- commands --------------------------------------------------------------------------------------------------

    def _on_trajectory(self, output: OutputSpec, msg: Any) -> None:
        try:
            self.world.send_trajectory(self.world_trajectory(output, trajectory_from_msg(msg)))
        except TrajectoryError as exc:
            self.rejections.add(output.name, exc)

    def world_trajectory(self, output: OutputSpec, trajectory: JointTrajectory) -> JointTrajectory:
        """`trajectory` in the controller's names and on /clock -> in the world's joint names and time."""
        wire_names = output.wire_joint_names
        unknown = [name for name in trajectory.joint_names if name not in wire_names]
        if unknown:
            raise TrajectoryError(f"trajectory rejected: unknown joints {unknown} for {output.name}."
                                  + did_you_mean(unknown[0], wire_names))
        stamp = trajectory.stamp - self._time_offset if trajectory.stamp != 0.0 else 0.0
        return replace(trajectory, joint_names=tuple(output.prefix + name for name in trajectory.joint_names),
                       stamp=stamp)

    def move_gripper(self, output: OutputSpec, target: float) -> None:
        """Send the gripper to `target` at its velocity limit, as its servo would move."""
        index = self.embodiment.joint_names.index(output.joints[0])
        current = self.world.desired_joint_state()[0][index]
        duration = max(abs(target - current) / self.embodiment.velocity_limits[index], HOLD_TIME_S)
        self.world.send_trajectory(JointTrajectory(
            joint_names=output.joints, points=(TrajectoryPoint(np.array([target]), duration),)))

    def hold(self, output: OutputSpec, positions: np.ndarray) -> None:
        """Stop `output`'s joints at `positions`, as a controller does on cancel."""
        self.world.send_trajectory(JointTrajectory(
            joint_names=output.joints, points=(TrajectoryPoint(np.asarray(positions, float), HOLD_TIME_S),)))

    def close(self) -> None:
        if self.cameras is not None:
            self.cameras.close()


class RejectionLog:
    """Counts rejected commands per source and kind; logs the first of each kind in full, later ones as a count at
    most every REJECTION_LOG_INTERVAL_S. A kind is the error message with its numbers blanked out."""

    def __init__(self, logger: Any):
        self._logger = logger
        self.counts: dict[tuple[str, str], int] = {}
        self._last_logged: dict[tuple[str, str], float] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, source: str, error: Exception) -> None:
        key = (source, re.sub(r"\d+(\.\d+)?", "#", str(error)))
        count = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        if count == 1 or now - self._last_logged[key] >= REJECTION_LOG_INTERVAL_S:
            self._last_logged[key] = now
            self._logger.warning(f"{source}: command dropped ({count} of this kind so far): {error}")


class CameraPublisher:
    """Renders the cameras and publishes their images on a thread of its own.

    A GL context works only on the thread that made it current, while executor callbacks may run on any thread; and
    rendering (15-35 ms for two cameras in software) would otherwise hold up the physics and joint states. The physics
    timer posts the joint positions of each frame due; a frame still waiting when the next is posted is skipped.
    """

    def __init__(self, node: Any, backend: Backend, model: mujoco.MjModel, embodiment: EmbodimentConfig,
                 config: SimNodeConfig):
        # Imported here, not at the top: MuJoCo reads MUJOCO_GL when first imported, which vla_ros.sim sets first.
        import mujoco

        self._mujoco = mujoco
        msg, qos = backend.msg, backend.qos.image
        self._msg = msg
        self._model, self._data = model, mujoco.MjData(model)
        self._size = (config.camera_height, config.camera_width)
        self._cameras = []
        for camera in embodiment.cameras:
            topic = camera.topic or f"/{camera.name}/image_raw"
            compressed = None
            if camera.transport is ImageTransport.COMPRESSED:
                compressed = node.create_publisher(msg.CompressedImage, f"{topic}/compressed", qos)
            fovy = math.radians(model.cam_fovy[model.camera(camera.name).id])
            self._cameras.append(_Camera(
                name=camera.name, frame_id=f"{camera.name}_camera_optical_frame",
                image=node.create_publisher(msg.Image, topic, qos), compressed=compressed,
                info=node.create_publisher(msg.CameraInfo, f"{topic.rsplit('/', 1)[0]}/camera_info", qos),
                focal_px=config.camera_height / 2 / math.tan(fovy / 2)))
        self._logger, self._context = node.get_logger(), node.context
        self._condition = threading.Condition()
        self._pending: tuple[Any, np.ndarray] | None = None
        self._stopping = False
        self.frames_published = 0
        self.frames_skipped = 0
        self._started = threading.Event()
        self._start_error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="camera_render", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def post(self, stamp: Any, qpos: np.ndarray) -> None:
        """Render the scene with these joint positions (the world's full qpos) for `stamp`."""
        with self._condition:
            if self._pending is not None:
                self.frames_skipped += 1
            self._pending = (stamp, qpos.copy())
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        height, width = self._size
        try:
            renderer = self._mujoco.Renderer(self._model, height, width)
        except Exception as exc:  # noqa: BLE001 - GL errors come as several types, all of them reported here
            self._start_error = ConfigError(
                f"MuJoCo cannot render {width}x{height} images ({exc}): set MUJOCO_GL=egl or osmesa in the "
                "environment, or start the node with render:=false")
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                with self._condition:
                    self._condition.wait_for(lambda: self._pending is not None or self._stopping)
                    if self._stopping:
                        return
                    (stamp, qpos), self._pending = self._pending, None
                self._data.qpos[:] = qpos
                self._mujoco.mj_forward(self._model, self._data)
                for camera in self._cameras:
                    renderer.update_scene(self._data, camera=camera.name)
                    self._publish(camera, renderer.render(), stamp)
                self.frames_published += 1
        except Exception as exc:  # noqa: BLE001 - a dead camera thread must say why
            if self._context.ok():  # else ROS was shut down (Ctrl-C) before close() stopped this thread
                self._logger.error(f"camera rendering stopped: {type(exc).__name__}: {exc}")
        finally:
            renderer.close()

    def _publish(self, camera: _Camera, rgb: np.ndarray, stamp: Any) -> None:
        height, width = rgb.shape[:2]
        camera.image.publish(image_to_msg(rgb, self._msg.Image, stamp=stamp, frame_id=camera.frame_id))
        if camera.compressed is not None:
            camera.compressed.publish(compressed_image_to_msg(rgb, self._msg.CompressedImage, stamp=stamp,
                                                              frame_id=camera.frame_id))
        # MuJoCo's fovy is vertical and pixels are square; the principal point is the image centre.
        camera.info.publish(camera_info_to_msg(
            self._msg.CameraInfo, stamp=stamp, frame_id=camera.frame_id, width=width, height=height,
            fx=camera.focal_px, fy=camera.focal_px, cx=(width - 1) / 2, cy=(height - 1) / 2))


@dataclass(frozen=True)
class _Camera:
    name: str
    frame_id: str
    image: Any  # publishers
    compressed: Any
    info: Any
    focal_px: float


def checked_outputs(embodiment: EmbodimentConfig, *, action_interfaces: bool) -> tuple[OutputSpec, ...]:
    """The embodiment's command inputs, if this node can serve them (actions only with `action_interfaces`)."""
    if embodiment.robot not in ROBOTS:
        raise ConfigError(f"the MuJoCo simulator has no model of '{embodiment.robot}', only of {', '.join(ROBOTS)}: "
                          "simulate other robots in Gazebo or Isaac Sim", source=embodiment.source, key="robot")
    supported = SUPPORTED_INTERFACES if action_interfaces else (CommandInterface.JOINT_TRAJECTORY,)
    for output in embodiment.outputs:
        if output.interface not in supported:
            raise ConfigError(
                f"the simulator takes no {output.interface.value} commands ({output.name}) here; it offers "
                + ", ".join(i.value for i in supported)
                + ("" if action_interfaces else " without rclpy (actions need ROS 2 sourced)"),
                source=embodiment.source, key="ros.outputs")
    return embodiment.outputs


def check_joints_and_cameras(embodiment: EmbodimentConfig, world: SimWorld) -> None:
    if set(embodiment.joint_names) != set(world.joint_names):
        raise ConfigError(f"names joints {list(embodiment.joint_names)}, but the simulated {world.robot} has "
                          f"{list(world.joint_names)}", source=embodiment.source, key="joints")
    for i, camera in enumerate(embodiment.cameras):
        if camera.name not in world.camera_names:
            raise ConfigError(f"the simulated {world.robot} has no camera '{camera.name}'."
                              + did_you_mean(camera.name, world.camera_names), source=embodiment.source,
                              key=f"cameras[{i}].name")


def default_camera(embodiment: EmbodimentConfig) -> CameraSpec:
    """The camera whose size the simulator renders by default: the robot's first."""
    return embodiment.cameras[0] if embodiment.cameras else CameraSpec("", "", 640, 480)


def default_publish_rate_hz(embodiment: EmbodimentConfig) -> float:
    return max(100.0, 2 * embodiment.control_rate_hz)
