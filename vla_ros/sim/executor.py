"""Trajectory execution with joint_trajectory_controller (JTC) semantics, for the simulated arm.

The rules it follows (reference: shared/reference/ros2-control.md and JTC's trajectory.cpp):
- a trajectory stamped 0 starts now; a non-zero stamp is absolute time on the simulator's clock;
- whatever the stamp, the arm leaves its current desired state as the goal arrives, reaching the first point at
  stamp + its time_from_start; points already in the past are skipped, and the arm steps onto the trajectory;
- a trajectory stamped in the past that also ends in the past is rejected;
- joints are matched by name, in any order; unknown or missing joints reject the whole goal
  (JTC's default `allow_partial_joints_goal: false`);
- a new trajectory replaces the old one and starts from the current *desired* state, as with
  `interpolate_from_desired_state` / `open_loop_control`, so a stream of goals never pulls back to the measured state;
- interpolation and holding after the last point are `TrajectorySampler`'s.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint, TrajectorySampler


class TrajectoryExecutor:
    """Turns accepted trajectories into the desired joint state at any controller time.

    `joint_names` fixes the order of every array this class returns: (D,) float64, joint units.
    """

    def __init__(
        self,
        joint_names: tuple[str, ...],
        positions: np.ndarray,
        *,
        allow_nonzero_velocity_at_trajectory_end: bool = False,
    ):
        self.joint_names = tuple(joint_names)
        self.allow_nonzero_velocity_at_trajectory_end = allow_nonzero_velocity_at_trajectory_end
        self._sampler: TrajectorySampler | None = None
        self._held_positions = np.zeros(len(self.joint_names))
        self.hold(positions)

    def hold(self, positions: np.ndarray) -> None:
        """Drop any trajectory and hold `positions` (D,) from now on."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.joint_names),):
            raise TrajectoryError(
                f"expected ({len(self.joint_names)},) positions for {list(self.joint_names)}, got {positions.shape}"
            )
        self._sampler = None
        self._held_positions = positions.copy()

    def accept(self, trajectory: JointTrajectory, now: float) -> None:
        """Replace the active trajectory at controller time `now` (s); TrajectoryError where JTC would reject it."""
        order = self._order_of(trajectory.joint_names)
        if trajectory.stamp != 0.0 and trajectory.stamp + trajectory.duration < now:
            # JTC's own check; a trajectory ending exactly now is accepted and holds its last point.
            raise TrajectoryError(
                f"trajectory stamped {trajectory.stamp:.3f} s ends at {trajectory.stamp + trajectory.duration:.3f} s, "
                f"before the current time {now:.3f} s: stamp 0 means 'start now'"
            )
        end_velocities = trajectory.points[-1].velocities
        if not self.allow_nonzero_velocity_at_trajectory_end and end_velocities is not None and np.any(end_velocities):
            raise TrajectoryError(
                "the last point has non-zero velocities, which JTC rejects by default "
                "(allow_nonzero_velocity_at_trajectory_end: false): end the trajectory at rest"
            )
        desired_positions, desired_velocities = self.sample(now)
        ours = _reordered(trajectory, order, self.joint_names)
        start_time = now if trajectory.stamp == 0.0 else trajectory.stamp
        # JTC anchors the state it leaves at the moment the goal arrives, not at the stamp: rebase onto `now`.
        offset = start_time - now
        rebased = (replace(p, time_from_start=p.time_from_start + offset) for p in ours.points)
        ahead = tuple(p for p in rebased if p.time_from_start > 0.0)
        if not ahead:
            self.hold(ours.points[-1].positions)
            return
        if len(ahead) < len(ours.points):
            # Points already passed are skipped: the arm steps to where the trajectory is now.
            desired_positions, desired_velocities = TrajectorySampler(
                ours, start_time=start_time, start_positions=desired_positions, start_velocities=desired_velocities
            ).sample(now)
        self._sampler = TrajectorySampler(
            trajectory=JointTrajectory(joint_names=self.joint_names, points=ahead),
            start_time=now,
            start_positions=desired_positions,
            start_velocities=desired_velocities,
        )

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) desired at controller time `now`, each (D,) in joint units (per second)."""
        if self._sampler is None:
            return self._held_positions.copy(), np.zeros_like(self._held_positions)
        return self._sampler.sample(now)

    def _order_of(self, names: tuple[str, ...]) -> np.ndarray:
        """Index into `names` for each of our joints; TrajectoryError naming unknown and missing joints."""
        unknown = [name for name in names if name not in self.joint_names]
        missing = [name for name in self.joint_names if name not in names]
        if unknown or missing:
            problems = [f"unknown joints {unknown}"] if unknown else []
            if missing:
                problems.append(f"missing joints {missing} (JTC rejects partial goals)")
            hint = did_you_mean(unknown[0], self.joint_names) if unknown else f" Expected {list(self.joint_names)}."
            raise TrajectoryError("trajectory rejected: " + ", ".join(problems) + "." + hint)
        return np.array([names.index(name) for name in self.joint_names])


def _reordered(trajectory: JointTrajectory, order: np.ndarray, joint_names: tuple[str, ...]) -> JointTrajectory:
    """`trajectory` with its joints in `joint_names` order; `order` indexes the trajectory's joints."""
    points = tuple(
        TrajectoryPoint(
            positions=point.positions[order],
            time_from_start=point.time_from_start,
            velocities=None if point.velocities is None else point.velocities[order],
        )
        for point in trajectory.points
    )
    return JointTrajectory(joint_names=joint_names, points=points, stamp=trajectory.stamp)


class ControllerSetExecutor:
    """Several joint_trajectory_controllers side by side, as ros2_control runs an arm controller next to a gripper
    controller: each owns a group of joints, a trajectory goes to the controller whose joints it names (all of them,
    in any order), and the other controllers carry on with their own trajectories.

    Same interface as `TrajectoryExecutor`; arrays are (D,) in `joint_names` order. `groups` partition `joint_names`.
    """

    def __init__(
        self,
        joint_names: tuple[str, ...],
        positions: np.ndarray,
        groups: tuple[tuple[str, ...], ...],
        *,
        allow_nonzero_velocity_at_trajectory_end: bool = False,
    ):
        self.joint_names = tuple(joint_names)
        grouped = [name for group in groups for name in group]
        if sorted(grouped) != sorted(self.joint_names):
            raise ConfigError(
                f"controller joint groups {[list(g) for g in groups]} must name each of the joints "
                f"{list(self.joint_names)} exactly once"
            )
        positions = np.asarray(positions, dtype=np.float64)
        self._controllers = tuple(
            (
                np.array([self.joint_names.index(name) for name in group]),
                TrajectoryExecutor(
                    tuple(group),
                    positions[[self.joint_names.index(name) for name in group]],
                    allow_nonzero_velocity_at_trajectory_end=allow_nonzero_velocity_at_trajectory_end,
                ),
            )
            for group in groups
        )

    def hold(self, positions: np.ndarray) -> None:
        """Every controller drops its trajectory and holds its share of `positions` (D,) from now on."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.joint_names),):
            raise TrajectoryError(
                f"expected ({len(self.joint_names)},) positions for {list(self.joint_names)}, got {positions.shape}"
            )
        for indices, controller in self._controllers:
            controller.hold(positions[indices])

    def accept(self, trajectory: JointTrajectory, now: float) -> None:
        """Hand `trajectory` to the controller owning its joints; TrajectoryError where that controller rejects it."""
        names = set(trajectory.joint_names)
        overlaps = [len(names & set(controller.joint_names)) for _, controller in self._controllers]
        best = int(np.argmax(overlaps))
        if overlaps[best] == 0:
            raise TrajectoryError(
                f"trajectory rejected: joints {list(trajectory.joint_names)} belong to no controller; the controllers "
                f"command {[list(c.joint_names) for _, c in self._controllers]}."
                + did_you_mean(trajectory.joint_names[0], self.joint_names)
            )
        # The controller sharing the most joints judges it, so that errors name that controller's unknown and
        # missing joints.
        self._controllers[best][1].accept(trajectory, now)

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) desired at controller time `now`, each (D,) in joint units (per second)."""
        if len(self._controllers) == 1:  # the common case, sampled every physics step
            return self._controllers[0][1].sample(now)
        positions, velocities = np.empty(len(self.joint_names)), np.empty(len(self.joint_names))
        for indices, controller in self._controllers:
            positions[indices], velocities[indices] = controller.sample(now)
        return positions, velocities
