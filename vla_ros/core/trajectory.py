"""Joint trajectories as ros2_control's joint_trajectory_controller (JTC) understands them, without ROS.

A `JointTrajectory` mirrors trajectory_msgs/JointTrajectory closely enough that the ROS layer only
copies fields. `build_trajectory` enforces the rules under which JTC accepts a trajectory
(reference: ros2-control.md), and `TrajectorySampler` reproduces how JTC follows one, so that the
simulator and the tests execute trajectories exactly as a real controller would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vla_ros.core.errors import VlaRosError


class TrajectoryError(VlaRosError):
    """A trajectory that a joint_trajectory_controller would reject."""


@dataclass(frozen=True)
class TrajectoryPoint:
    positions: np.ndarray  # (D,) float64, joint units (rad or m)
    time_from_start: float  # s, relative to the trajectory's stamp
    velocities: np.ndarray | None = None  # (D,) float64, joint units per second


@dataclass(frozen=True)
class JointTrajectory:
    """ROS-free trajectory_msgs/JointTrajectory.

    `stamp` is the start time on the controller's clock; 0.0 means "start at the controller's next
    update", which is what a streaming policy sends.
    """

    joint_names: tuple[str, ...]
    points: tuple[TrajectoryPoint, ...]
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if not self.joint_names:
            raise TrajectoryError("trajectory has no joint names")
        if not self.points:
            raise TrajectoryError("trajectory has no points")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise TrajectoryError(f"trajectory joint names repeat: {list(self.joint_names)}")
        n = len(self.joint_names)
        previous = 0.0
        for i, point in enumerate(self.points):
            if point.positions.shape != (n,):
                raise TrajectoryError(
                    f"point {i} has {point.positions.shape} positions, "
                    f"expected ({n},) for joints {list(self.joint_names)}"
                )
            if point.velocities is not None and point.velocities.shape != (n,):
                raise TrajectoryError(f"point {i} has {point.velocities.shape} velocities, expected ({n},)")
            if not np.all(np.isfinite(point.positions)) or (
                point.velocities is not None and not np.all(np.isfinite(point.velocities))
            ):
                raise TrajectoryError(f"point {i} contains NaN or inf")
            # JTC skips points at or before the start, so a first point at 0 would step the arm.
            # Written as `not >` so that NaN, which compares false with everything, is rejected too.
            if not point.time_from_start > previous or not math.isfinite(point.time_from_start):
                raise TrajectoryError(
                    f"time_from_start must increase strictly from > 0: point {i} has {point.time_from_start:.6f} s "
                    f"after {previous:.6f} s"
                )
            previous = point.time_from_start

    @property
    def duration(self) -> float:
        return self.points[-1].time_from_start


def build_trajectory(
    joint_names: tuple[str, ...] | list[str],
    positions: np.ndarray,
    dt: float,
    *,
    start_offset: float | None = None,
    velocities: np.ndarray | None = None,
    end_with_zero_velocity: bool = True,
    stamp: float = 0.0,
) -> JointTrajectory:
    """Trajectory through `positions` (N, D), one point every `dt` seconds.

    The first point is at `start_offset` (default `dt`), never at 0. `velocities` (N, D), where known,
    make JTC interpolate with cubic splines instead of linearly. With `end_with_zero_velocity` the last
    point's velocity is zero, which Jazzy's `allow_nonzero_velocity_at_trajectory_end: false` requires.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 1:
        positions = positions[None, :]
    if not (math.isfinite(dt) and dt > 0):
        raise TrajectoryError(f"dt must be finite and > 0 s, got {dt}")
    start_offset = dt if start_offset is None else start_offset
    if not (math.isfinite(start_offset) and start_offset > 0):
        raise TrajectoryError(f"start_offset must be > 0 s (JTC skips a point at 0), got {start_offset}")
    if velocities is not None:
        velocities = np.array(velocities, dtype=np.float64)
        if velocities.ndim == 1:
            velocities = velocities[None, :]
        if velocities.shape != positions.shape:
            raise TrajectoryError(
                f"velocities have shape {velocities.shape}, expected {positions.shape} (the shape of positions)"
            )
        if end_with_zero_velocity:
            velocities[-1] = 0.0
    points = tuple(
        TrajectoryPoint(
            positions=positions[i].copy(),
            time_from_start=start_offset + i * dt,
            velocities=None if velocities is None else velocities[i].copy(),
        )
        for i in range(len(positions))
    )
    return JointTrajectory(joint_names=tuple(joint_names), points=points, stamp=stamp)


def build_lookahead(
    joint_names: tuple[str, ...] | list[str],
    positions: np.ndarray,
    dt: float,
    *,
    start_time: float,
    previous: np.ndarray,
    rest_until: float | None = None,
) -> JointTrajectory:
    """A stamped lookahead: `positions` (M, D), row k meant for absolute time `start_time + k * dt`.

    `previous` (D,) is the position one step before row 0 (the last command sent). Velocities are central
    differences (row 0 uses `previous`), the last one zero, so JTC follows one C1 cubic spline through the rows
    (Catmull-Rom) and stops at the end, as Jazzy's default `allow_nonzero_velocity_at_trajectory_end: false`
    requires. The stamp is `start_time - dt` with row k at time_from_start (k + 1) * dt: row 0 at its own
    time, so the message's arrival time does not matter, and consecutive lookaheads of one plan agree. Where
    `start_time - dt` is not > 0 (a simulated clock just started) the stamp is `start_time / 2`.

    `rest_until` (absolute time): where the rows end earlier, one more point repeats the last row then, so that a
    message delayed in transit still ends in the future (JTC rejects a stamped trajectory that ends in the past).

    Between two rows the spline's speed exceeds the larger of the rows' finite-difference speeds by at most
    a quarter of the change in finite-difference speed (`max_acceleration * dt / 4` for filtered rows).
    """
    positions = np.asarray(positions, dtype=np.float64)
    previous = np.asarray(previous, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[0] < 1 or previous.shape != positions.shape[1:]:
        raise TrajectoryError(
            f"a lookahead needs positions (M, D) with M >= 1 and previous (D,), got {positions.shape} and "
            f"{previous.shape}"
        )
    if not (math.isfinite(start_time) and start_time > 0):
        raise TrajectoryError(f"a lookahead's start_time must be an absolute time > 0 s, got {start_time}")
    padded = np.vstack([previous, positions, positions[-1:]])
    velocities = (padded[2:] - padded[:-2]) / (2.0 * dt)
    velocities[-1] = 0.0
    stamp = start_time - dt if start_time - dt > 0 else start_time / 2
    trajectory = build_trajectory(
        joint_names, positions, dt, start_offset=start_time - stamp, velocities=velocities, stamp=stamp
    )
    if rest_until is not None and rest_until - stamp > trajectory.duration + dt:
        rest = TrajectoryPoint(positions[-1].copy(), rest_until - stamp, np.zeros_like(positions[-1]))
        trajectory = JointTrajectory(trajectory.joint_names, (*trajectory.points, rest), stamp)
    return trajectory


@dataclass
class TrajectorySampler:
    """Follows one trajectory the way JTC does, from the state the arm was in when it arrived.

    `sample(t)` edge behaviour, with t on the controller clock:
    - before the first point: interpolates from the start state (held at `start_time`) to point 0;
    - between points: linear when the points have no velocities, cubic Hermite when both ends have them;
    - at or after the last point: holds the last point's positions with zero velocity.
    """

    trajectory: JointTrajectory
    start_time: float  # controller time at which time_from_start = 0
    start_positions: np.ndarray  # (D,) the desired state when the trajectory was accepted
    start_velocities: np.ndarray | None = None
    _times: np.ndarray = field(init=False, repr=False)
    _positions: np.ndarray = field(init=False, repr=False)
    _velocities: np.ndarray = field(init=False, repr=False)
    _has_velocity: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        traj = self.trajectory
        self._times = np.array([0.0] + [p.time_from_start for p in traj.points])
        self._positions = np.vstack([self.start_positions] + [p.positions for p in traj.points])
        # The start state always has a velocity (zero unless given), so whether a segment is cubic
        # depends on its points alone, as in JTC's interpolate_between_points.
        zero = np.zeros_like(self._positions[0])
        start_v = zero if self.start_velocities is None else self.start_velocities
        self._velocities = np.vstack([start_v] + [zero if p.velocities is None else p.velocities for p in traj.points])
        self._has_velocity = np.array([True] + [p.velocities is not None for p in traj.points])

    @property
    def end_time(self) -> float:
        return self.start_time + self._times[-1]

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) desired at controller time `t`."""
        tau = t - self.start_time
        if tau <= 0.0:
            return self._positions[0].copy(), np.zeros_like(self._positions[0])
        if tau >= self._times[-1]:
            return self._positions[-1].copy(), np.zeros_like(self._positions[-1])
        i = int(np.searchsorted(self._times, tau, side="right")) - 1
        t0, t1 = self._times[i], self._times[i + 1]
        h = t1 - t0
        s = (tau - t0) / h
        p0, p1 = self._positions[i], self._positions[i + 1]
        if not (self._has_velocity[i] and self._has_velocity[i + 1]):
            return p0 + s * (p1 - p0), (p1 - p0) / h
        v0, v1 = self._velocities[i] * h, self._velocities[i + 1] * h
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
        position = h00 * p0 + h10 * v0 + h01 * p1 + h11 * v1
        velocity = (d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1) / h
        return position, velocity
