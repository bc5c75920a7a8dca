"""Scripted experts: demonstrators that solve the sim tasks from ground truth (cube poses) and inverse kinematics.

They are the data source for training a VLA and a check that the pipeline around a policy works; they are not
policies of their own and never see images.

An expert keeps a *script*: a chain of smooth moves in absolute sim time (hover over the cube, descend, close,
lift). Every `plan()` samples the script ahead of the current time, so re-planning as often as a caller likes gives
the same motion. The script is rebuilt from the world's state when it has run out without success (a missed grasp,
a dropped cube) or when the arm is far from where the script put it (another controller moved it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from vla_ros.sim.ik import TcpIk
from vla_ros.sim.tasks import PickTask, Task, TouchTask

if TYPE_CHECKING:
    from vla_ros.sim.world import SimWorld

# Fraction of the configured joint velocity and acceleration limits the expert plans with: the peaks of its moves
# stay below the 60% that leaves a safety filter clamping at the limits nothing to do.
SPEED_FRACTION = 0.5

# Peaks of the minimum-jerk time scaling s(u) = 10u^3 - 15u^4 + 6u^5 over a move of duration T:
# max ds/dt = 1.875 / T and max |d2s/dt2| = 10 / sqrt(3) / T^2.
_MIN_JERK_PEAK_SPEED = 1.875
_MIN_JERK_PEAK_ACCELERATION = 10 / math.sqrt(3)
_LINE_WAYPOINT_SPACING_M = 0.005  # IK waypoints along straight TCP moves; the path between them is joint-linear
_MIN_MOVE_DURATION_S = 0.2
# Arm joints farther than this from the script mean something else moved the arm: re-plan from where it is.
_REPLAN_DEVIATION_RAD = 0.3
# A script that ran out is judged once the arm is this close to its end, or this long after it.
_SETTLED_RAD = 0.02
_SETTLE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ExpertSettings:
    """Geometry and pacing of a top-down grasp for one arm (m, s)."""

    hover_height_m: float  # above the grasp (or touch) pose, where descents start
    lift_height_m: float  # how far a grasped cube is raised
    fingertip_below_tcp_m: float  # how far the jaw tips reach past the TCP along the approach axis (from the MJCF)
    tip_clearance_m: float  # jaw tips above the table at the grasp pose
    touch_depth_m: float  # how far below the cube's top face a touch aims the jaw tips, so that contact is certain
    max_line_speed_m_s: float  # peak TCP speed on straight moves near the cubes
    squeeze_s: float  # hold after closing, so that the grip force builds before the lift
    # Where the expert closes the gripper to (joint units), when not the robot's `closed` value: part-way for a slow
    # gripper, still past contact with a cube and narrower than one for a touch.
    gripper_closed: float | None = None


# The Franka Hand, on the Panda and the FR3: fingertips 9 mm past the tool centre point.
_FRANKA_HAND_SETTINGS = ExpertSettings(
    hover_height_m=0.10,
    lift_height_m=0.10,
    fingertip_below_tcp_m=0.009,
    tip_clearance_m=0.005,
    touch_depth_m=0.003,
    max_line_speed_m_s=0.15,
    squeeze_s=0.3,
)

EXPERT_SETTINGS: dict[str, ExpertSettings] = {
    # The SO-101 cannot point straight down above ~9 cm at its longest reach, so its lift stays low.
    "so101": ExpertSettings(
        hover_height_m=0.05,
        lift_height_m=0.07,
        fingertip_below_tcp_m=0.015,
        tip_clearance_m=0.005,
        touch_depth_m=0.003,
        max_line_speed_m_s=0.1,
        squeeze_s=0.3,
    ),
    "panda": _FRANKA_HAND_SETTINGS,
    "fr3": _FRANKA_HAND_SETTINGS,
    # The other 7-DoF arms reach as far as the Panda; only their grippers' pads end farther past the TCP.
    # The 2F-85's knuckle turns at 0.5 rad/s (gen3.yaml): closing it halfway (pads 32 mm apart, 13 mm inside a cube)
    # instead of shut saves 2 s of every grasp and touch.
    "gen3": replace(_FRANKA_HAND_SETTINGS, fingertip_below_tcp_m=0.017, gripper_closed=0.5),
    "xarm7": replace(_FRANKA_HAND_SETTINGS, fingertip_below_tcp_m=0.015),
    # The ViperX reaches 0.75 m from a shoulder 13 cm up: lower hovers and lifts, slower lines.
    "vx300s": replace(
        _FRANKA_HAND_SETTINGS, hover_height_m=0.08, lift_height_m=0.08, fingertip_below_tcp_m=0.018,
        max_line_speed_m_s=0.12,
    ),
}


@dataclass(frozen=True)
class Move:
    """One smooth move of the whole joint vector along `waypoints` (K, D), K >= 2, evenly spaced in path length.

    Position along the path follows a minimum-jerk profile, so every move starts and ends at rest.
    """

    phase: str
    start_time: float  # s, sim time
    duration_s: float
    waypoints: np.ndarray

    @property
    def end_time(self) -> float:
        return self.start_time + self.duration_s

    def sample(self, t: float) -> np.ndarray:
        """(D,) joint positions at sim time `t`, holding the ends outside the move."""
        u = min(max((t - self.start_time) / self.duration_s, 0.0), 1.0)
        s = u**3 * (10 - 15 * u + 6 * u**2) * (len(self.waypoints) - 1)
        i = min(int(s), len(self.waypoints) - 2)
        return self.waypoints[i] + (s - i) * (self.waypoints[i + 1] - self.waypoints[i])


class Script:
    """Moves back to back in sim time; holds the last position after the end."""

    def __init__(self, moves: list[Move]):
        if not moves:
            raise ValueError("a script needs at least one move")
        self.moves = moves

    @property
    def start_time(self) -> float:
        return self.moves[0].start_time

    @property
    def end_time(self) -> float:
        return self.moves[-1].end_time

    def move_at(self, t: float) -> Move:
        return next((move for move in self.moves if t < move.end_time), self.moves[-1])

    def sample(self, t: float) -> np.ndarray:
        return self.move_at(t).sample(t)


@dataclass(frozen=True)
class MotionLimits:
    """The peaks the expert plans its moves with."""

    velocity: np.ndarray  # (D,) joint units per second
    acceleration: np.ndarray  # (D,) joint units per second squared
    line_speed_m_s: float  # TCP speed on straight moves

    def duration(self, waypoints: np.ndarray, path_length_m: float = 0.0) -> float:
        """Shortest minimum-jerk duration (s) along `waypoints` (K, D), a TCP path `path_length_m` long."""
        # Largest rate of change of each joint per unit of path parameter (0..1).
        slopes = np.abs(np.diff(waypoints, axis=0)).max(axis=0) * (len(waypoints) - 1)
        return max(
            _MIN_MOVE_DURATION_S,
            float(np.max(_MIN_JERK_PEAK_SPEED * slopes / self.velocity)),
            float(np.max(np.sqrt(_MIN_JERK_PEAK_ACCELERATION * slopes / self.acceleration))),
            _MIN_JERK_PEAK_SPEED * path_length_m / self.line_speed_m_s,
        )


class ScriptedExpert:
    """Solves `task` in `world` from ground truth: touch a cube from above, or grasp it from above and lift it."""

    def __init__(self, world: SimWorld, task: Task):
        if not isinstance(task, (TouchTask, PickTask)):
            raise TypeError(f"no scripted expert for {type(task).__name__}")
        self._world = world
        self._task = task
        robot = world.sim_robot
        self._settings = EXPERT_SETTINGS[robot.name]
        self._gripper_closed = (robot.gripper_closed if self._settings.gripper_closed is None
                                else self._settings.gripper_closed)
        self._gripper = robot.gripper_index
        self._arm = np.array([i for i in range(len(robot.joint_names)) if i != self._gripper])
        home = np.array(robot.home)
        self._ik = TcpIk(
            world.model, tuple(robot.joint_names[i] for i in self._arm), site=robot.tcp_site, posture=home[self._arm]
        )
        self._limits = MotionLimits(
            velocity=SPEED_FRACTION * np.array(robot.velocity_limits),
            acceleration=SPEED_FRACTION * np.array(robot.acceleration_limits),
            line_speed_m_s=self._settings.max_line_speed_m_s,
        )
        # The gripper's yaw at home, turned to face a target, is its most comfortable yaw there (wrist mid-range).
        _, home_rotation = self._ik.forward(home[self._arm])
        self._home_yaw = tcp_heading(home_rotation)
        self._script: Script | None = None

    def reset(self) -> None:
        """Forget the current script: call after `world.reset`."""
        self._script = None

    @property
    def phase(self) -> str:
        """What the expert is doing at the world's current time ('approach', 'descend', 'close', ...)."""
        return "idle" if self._script is None else self._script.move_at(self._world.time).phase

    def plan(self, horizon: int, dt: float) -> np.ndarray:
        """(horizon, D) absolute joint targets: row i is where the arm should be at world time + (i + 1) * dt."""
        now = self._world.time
        measured = self._world.joint_positions()
        script = self._script
        if script is None or now < script.start_time or self._arm_error(measured, now) > _REPLAN_DEVIATION_RAD:
            self._script = self._build_script(now, start=measured)
        elif now >= script.end_time and self._settled(measured, now) and not self._task.is_success(self._world):
            # Out of moves without success (a missed grasp, a dropped cube): start over from where the script is.
            self._script = self._build_script(now, start=script.sample(now))
        targets = [self._script.sample(now + (i + 1) * dt) for i in range(horizon)]
        return np.array(targets, dtype=np.float64).reshape(horizon, len(measured))

    def _arm_error(self, measured: np.ndarray, now: float) -> float:
        """Largest distance (rad) of the measured arm joints from the script's.

        The gripper is left out: closed on a cube, it is meant to lag its command.
        """
        return float(np.abs(measured[self._arm] - self._script.sample(now)[self._arm]).max())

    def _settled(self, measured: np.ndarray, now: float) -> bool:
        """Whether the arm has caught up with the end of the script, or had a fair while to.

        Judging success before then would send a lagging arm back to the start over and over.
        """
        return self._arm_error(measured, now) < _SETTLED_RAD or now >= self._script.end_time + _SETTLE_TIMEOUT_S

    def _build_script(self, now: float, start: np.ndarray) -> Script:
        """The moves that finish the task from joint positions `start` (D,) at sim time `now`."""
        builder = _ScriptBuilder(self._ik, self._arm, self._gripper, self._limits, now, start)
        if isinstance(self._task, PickTask):
            self._add_pick(builder)
        else:
            self._add_touch(builder)
        return builder.script()

    def _add_pick(self, builder: _ScriptBuilder) -> None:
        world, robot, settings, color = self._world, self._world.sim_robot, self._settings, self._task.color
        if world.gripper_holds(color):
            tcp_position, _ = builder.tcp_pose()
            lift_height = self._grasp_height(world.cube_size_m / 2) + settings.lift_height_m
            builder.line("lift", np.array([*tcp_position[:2], lift_height]), gripper=self._gripper_closed)
            return
        cube_position, cube_rotation = world.cube_pose(color)
        grasp = np.array([*cube_position[:2], self._grasp_height(cube_position[2])])
        rotation = self._top_down_rotation(cube_position, cube_rotation)
        self._add_reach_down(builder, grasp, rotation, gripper=robot.gripper_open)
        builder.gripper("close", self._gripper_closed)
        builder.hold("squeeze", settings.squeeze_s)
        builder.line("lift", grasp + [0.0, 0.0, settings.lift_height_m])

    def _add_touch(self, builder: _ScriptBuilder) -> None:
        world, settings, color = self._world, self._settings, self._task.color
        if world.gripper_touches(color):
            return  # done: the builder holds still
        cube_position, cube_rotation = world.cube_pose(color)
        cube_top = cube_position[2] + world.cube_size_m / 2
        touch = np.array([*cube_position[:2], cube_top + settings.fingertip_below_tcp_m - settings.touch_depth_m])
        rotation = self._top_down_rotation(cube_position, cube_rotation)
        self._add_reach_down(builder, touch, rotation, gripper=self._gripper_closed)

    def _add_reach_down(
        self, builder: _ScriptBuilder, target: np.ndarray, rotation: np.ndarray, *, gripper: float
    ) -> None:
        """Hover above the TCP pose (`target` (3,), `rotation` (3, 3)), then descend straight onto it."""
        hover = target + [0.0, 0.0, self._settings.hover_height_m]
        tcp_position, _ = builder.tcp_pose()
        if tcp_position[2] < hover[2] - 0.01:
            # Leave upwards first, so that the move to the hover pose cannot sweep through the cubes around.
            builder.line("retreat", np.array([*tcp_position[:2], hover[2]]), gripper=gripper)
        builder.joint_move("approach", hover, rotation, gripper=gripper)
        builder.line("descend", target)

    def _grasp_height(self, cube_centre_z: float) -> float:
        """TCP height (m) of a grasp: as deep as the table lets the jaw tips go, at most to the cube's centre."""
        return max(cube_centre_z, self._settings.fingertip_below_tcp_m + self._settings.tip_clearance_m)

    def _top_down_rotation(self, cube_position: np.ndarray, cube_rotation: np.ndarray) -> np.ndarray:
        """(3, 3) TCP rotation pointing straight down, jaws closing across a pair of the cube's side faces.

        Of the four yaws that do that, the one nearest the arm's comfortable yaw over the cube is taken, which keeps
        the wrist near mid-range.
        """
        comfortable_yaw = self._home_yaw + math.atan2(cube_position[1], cube_position[0])
        cube_yaw = math.atan2(cube_rotation[1, 0], cube_rotation[0, 0])
        yaw = cube_yaw + round((comfortable_yaw - cube_yaw) / (math.pi / 2)) * math.pi / 2
        c, s = math.cos(yaw), math.sin(yaw)
        # Columns: TCP x heading at `yaw`, y completing the frame, z (the approach axis) straight down.
        return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def tcp_heading(rotation: np.ndarray) -> float:
    """Heading (rad about the vertical) of a TCP frame's x axis, read from its y axis where x points up or down.

    A gripper pointing forward at home (the ViperX) has its x axis near vertical; its y axis (the jaws' closing
    direction) is then level, and a top-down frame's x heads a quarter turn from its y.
    """
    if math.hypot(rotation[0, 0], rotation[1, 0]) >= 0.5:
        return math.atan2(rotation[1, 0], rotation[0, 0])
    return math.atan2(rotation[1, 1], rotation[0, 1]) + math.pi / 2


class _ScriptBuilder:
    """Appends moves to a script, each starting where and when the previous one ends.

    `arm` indexes the arm joints (what `ik` solves for) in the joint vector, `gripper` the gripper joint.
    """

    def __init__(
        self,
        ik: TcpIk,
        arm: np.ndarray,
        gripper: int,
        limits: MotionLimits,
        start_time: float,
        start: np.ndarray,
    ):
        self._ik = ik
        self._arm = arm
        self._gripper = gripper
        self._limits = limits
        self._time = start_time
        self._positions = np.array(start, dtype=np.float64)
        self._moves: list[Move] = []

    def script(self) -> Script:
        """The moves so far; a short hold where there are none, so that every script has an end."""
        if not self._moves:
            self.hold("hold", _MIN_MOVE_DURATION_S)
        return Script(self._moves)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the TCP where the script is so far."""
        return self._ik.forward(self._positions[self._arm])

    def joint_move(self, phase: str, position: np.ndarray, rotation: np.ndarray, *, gripper: float) -> None:
        """Straight in joint space to the TCP pose (`position` (3,), `rotation` (3, 3)), moving the gripper too."""
        target = self._positions.copy()
        target[self._arm] = self._ik.solve(position, rotation, self._positions[self._arm]).positions
        target[self._gripper] = gripper
        self._append(phase, np.stack([self._positions, target]))

    def line(self, phase: str, position: np.ndarray, *, gripper: float | None = None) -> None:
        """Straight TCP line to `position` (3,), keeping the TCP's rotation; the gripper moves along if given."""
        start_position, rotation = self.tcp_pose()
        length = float(np.linalg.norm(position - start_position))
        count = max(2, math.ceil(length / _LINE_WAYPOINT_SPACING_M) + 1)
        waypoints = np.repeat(self._positions[None, :], count, axis=0)
        arm = self._positions[self._arm]
        for k, fraction in enumerate(np.linspace(0.0, 1.0, count)[1:], start=1):
            point = start_position + fraction * (position - start_position)
            arm = self._ik.solve(point, rotation, arm, lean_to_posture=False).positions
            waypoints[k, self._arm] = arm
        if gripper is not None:
            waypoints[:, self._gripper] = np.linspace(self._positions[self._gripper], gripper, count)
        self._append(phase, waypoints, path_length_m=length)

    def gripper(self, phase: str, target: float) -> None:
        """Open or close the gripper to `target`, the arm still."""
        end = self._positions.copy()
        end[self._gripper] = target
        self._append(phase, np.stack([self._positions, end]))

    def hold(self, phase: str, duration_s: float) -> None:
        self._moves.append(Move(phase, self._time, duration_s, np.stack([self._positions, self._positions])))
        self._time += duration_s

    def _append(self, phase: str, waypoints: np.ndarray, *, path_length_m: float = 0.0) -> None:
        duration = self._limits.duration(waypoints, path_length_m)
        self._moves.append(Move(phase, self._time, duration, waypoints))
        self._time += duration
        self._positions = waypoints[-1].copy()
