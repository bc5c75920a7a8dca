"""TrajectoryExecutor follows trajectories with joint_trajectory_controller semantics; SimWorld tracks them."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint, build_trajectory
from vla_ros.sim.executor import ControllerSetExecutor, TrajectoryExecutor
from vla_ros.sim.world import SimWorld

NAMES = ("a", "b")


def executor(positions=(0.0, 0.0)) -> TrajectoryExecutor:
    return TrajectoryExecutor(NAMES, np.array(positions))


def trajectory(points, *, names=NAMES, stamp=0.0, velocities=None) -> JointTrajectory:
    """`points`: [(time_from_start, positions)]; `velocities`: one per point, or None."""
    return JointTrajectory(
        joint_names=names,
        points=tuple(
            TrajectoryPoint(
                positions=np.array(p, dtype=float),
                time_from_start=t,
                velocities=None if velocities is None else np.array(velocities[i], dtype=float),
            )
            for i, (t, p) in enumerate(points)
        ),
        stamp=stamp,
    )


def positions_at(ex: TrajectoryExecutor, t: float) -> list[float]:
    return ex.sample(t)[0].tolist()


def test_holds_its_start_positions_until_given_a_trajectory():
    ex = executor((0.5, -0.5))
    positions, velocities = ex.sample(123.0)
    assert positions.tolist() == [0.5, -0.5]
    assert velocities.tolist() == [0.0, 0.0]


def test_stamp_zero_starts_now():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 4.0))]), now=5.0)
    assert positions_at(ex, 5.0) == [0.0, 0.0]
    assert positions_at(ex, 5.5) == [1.0, 2.0]
    assert positions_at(ex, 6.0) == [2.0, 4.0]


def test_nonzero_stamp_is_absolute_time_and_the_arm_sets_off_as_the_goal_arrives():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 4.0))], stamp=7.0), now=5.0)
    # As JTC does, from the state at arrival (5 s) to the first point at stamp + 1 s = 8 s.
    assert positions_at(ex, 5.0) == [0.0, 0.0]
    assert positions_at(ex, 6.5) == [1.0, 2.0]
    assert positions_at(ex, 8.0) == [2.0, 4.0]


def test_a_stamp_in_the_past_still_reaches_the_first_point_on_time():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 4.0))], stamp=4.5), now=5.0)
    assert positions_at(ex, 5.0) == [0.0, 0.0]
    assert positions_at(ex, 5.25) == [1.0, 2.0]
    assert positions_at(ex, 5.5) == [2.0, 4.0]


def test_points_already_in_the_past_are_skipped_and_the_arm_steps_onto_the_trajectory():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 4.0)), (3.0, (4.0, 8.0))], stamp=3.0), now=5.0)
    assert positions_at(ex, 5.0) == [3.0, 6.0]
    assert positions_at(ex, 6.0) == [4.0, 8.0]


def test_a_trajectory_ending_just_now_jumps_to_its_last_point():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 4.0))], stamp=4.0), now=5.0)
    assert positions_at(ex, 5.0) == [2.0, 4.0]


def test_a_trajectory_that_ended_in_the_past_is_rejected():
    ex = executor()
    with pytest.raises(TrajectoryError, match="ends at 4.000 s, before the current time 5.000 s"):
        ex.accept(trajectory([(1.0, (2.0, 4.0))], stamp=3.0), now=5.0)


def test_a_new_trajectory_starts_from_the_desired_state_of_the_old_one():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 2.0))]), now=0.0)
    ex.accept(trajectory([(1.0, (-1.0, 3.0))]), now=0.5)  # desired is (1, 1) here
    assert positions_at(ex, 0.5) == [1.0, 1.0]
    assert positions_at(ex, 1.0) == [0.0, 2.0]
    assert positions_at(ex, 1.5) == [-1.0, 3.0]


def test_joints_are_matched_by_name_in_any_order():
    ex = executor()
    ex.accept(trajectory([(1.0, (4.0, 2.0))], names=("b", "a")), now=0.0)
    assert positions_at(ex, 1.0) == [2.0, 4.0]


def test_unknown_joints_are_rejected_by_name_with_a_suggestion():
    ex = executor()
    with pytest.raises(TrajectoryError, match=r"unknown joints \['bb'\].*missing joints \['b'\].*Did you mean 'b'"):
        ex.accept(trajectory([(1.0, (1.0, 1.0))], names=("a", "bb")), now=0.0)


def test_partial_goals_are_rejected():
    ex = executor()
    with pytest.raises(TrajectoryError, match=r"missing joints \['b'\]"):
        ex.accept(trajectory([(1.0, (1.0,))], names=("a",)), now=0.0)


def test_a_rejected_trajectory_leaves_the_current_one_running():
    ex = executor()
    ex.accept(trajectory([(1.0, (2.0, 2.0))]), now=0.0)
    with pytest.raises(TrajectoryError):
        ex.accept(trajectory([(1.0, (9.0,))], names=("a",)), now=0.5)
    assert positions_at(ex, 1.0) == [2.0, 2.0]


def test_holds_the_last_point_after_the_end():
    ex = executor()
    ex.accept(trajectory([(0.5, (1.0, 1.0)), (1.0, (2.0, -2.0))]), now=0.0)
    positions, velocities = ex.sample(10.0)
    assert positions.tolist() == [2.0, -2.0]
    assert velocities.tolist() == [0.0, 0.0]


def test_positions_only_interpolate_linearly_and_with_velocities_cubically():
    linear = executor()
    linear.accept(trajectory([(1.0, (1.0, 1.0))]), now=0.0)
    assert positions_at(linear, 0.25) == pytest.approx([0.25, 0.25])

    cubic = executor()
    cubic.accept(trajectory([(1.0, (1.0, 1.0))], velocities=[(0.0, 0.0)]), now=0.0)
    # Cubic Hermite from rest to rest: 3 s^2 - 2 s^3 at s = 0.25.
    assert positions_at(cubic, 0.25) == pytest.approx([0.15625, 0.15625])


def test_a_moving_end_is_rejected_unless_allowed():
    moving_end = trajectory([(1.0, (1.0, 1.0))], velocities=[(0.5, 0.0)])
    with pytest.raises(TrajectoryError, match="non-zero velocities"):
        executor().accept(moving_end, now=0.0)
    tolerant = TrajectoryExecutor(NAMES, np.zeros(2), allow_nonzero_velocity_at_trajectory_end=True)
    tolerant.accept(moving_end, now=0.0)
    assert positions_at(tolerant, 2.0) == [1.0, 1.0]


@pytest.mark.parametrize("robot", ["so101", "panda"])
def test_the_simulated_arm_tracks_a_trajectory_and_holds_its_end(robot):
    world = SimWorld(robot, render=False)
    home = np.array(world.sim_robot.home)
    offsets = np.linspace(0.0, 0.3, 20)[:, None] * np.ones(len(home))
    offsets[:, world.sim_robot.gripper_index] = 0.0
    chunk = home - offsets  # every arm joint stays inside its range going down from home
    world.send_trajectory(build_trajectory(world.joint_names, chunk, 0.05))
    worst_lag = 0.0
    for _ in range(20):
        world.advance(0.05)
        worst_lag = max(worst_lag, float(np.abs(world.joint_positions() - world.desired_joint_state()[0]).max()))
    world.advance(1.0)
    assert worst_lag < 0.02
    np.testing.assert_allclose(world.joint_positions(), chunk[-1], atol=2e-3)


def test_the_simulated_arm_continues_from_its_desired_state_not_its_measured_one():
    world = SimWorld("so101", render=False)
    target = np.array(world.sim_robot.home)
    target[0] += 1.0
    world.send_trajectory(build_trajectory(world.joint_names, target, 1.0))
    world.advance(0.5)
    desired_before, _ = world.desired_joint_state()
    assert not np.array_equal(desired_before, world.joint_positions())
    world.send_trajectory(build_trajectory(world.joint_names, target, 1.0))
    np.testing.assert_array_equal(world.desired_joint_state()[0], desired_before)


def test_each_controller_follows_its_own_trajectory():
    ex = ControllerSetExecutor(("a", "b", "g"), np.zeros(3), (("a", "b"), ("g",)))
    ex.accept(build_trajectory(("b", "a"), np.array([[2.0, 1.0]]), 1.0), now=0.0)
    ex.accept(build_trajectory(("g",), np.array([[4.0]]), 1.0), now=0.5)  # the arm's trajectory carries on
    assert ex.sample(0.5)[0].tolist() == [0.5, 1.0, 0.0]
    assert ex.sample(1.0)[0].tolist() == [1.0, 2.0, 2.0]
    assert ex.sample(1.5)[0].tolist() == [1.0, 2.0, 4.0]


def test_trajectories_must_name_exactly_one_controllers_joints():
    ex = ControllerSetExecutor(("a", "b", "g"), np.zeros(3), (("a", "b"), ("g",)))
    with pytest.raises(TrajectoryError, match=r"missing joints \['b'\]"):
        ex.accept(build_trajectory(("a",), np.array([[1.0]]), 1.0), now=0.0)
    with pytest.raises(TrajectoryError, match=r"unknown joints \['g'\]"):
        ex.accept(build_trajectory(("a", "b", "g"), np.zeros((1, 3)), 1.0), now=0.0)
    with pytest.raises(TrajectoryError, match="belong to no controller"):
        ex.accept(build_trajectory(("x",), np.zeros((1, 1)), 1.0), now=0.0)
    with pytest.raises(ConfigError, match="exactly once"):
        ControllerSetExecutor(("a", "b"), np.zeros(2), (("a",), ("a", "b")))
