"""JTC trajectory rules (build_trajectory, JointTrajectory) and how TrajectorySampler follows a trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.errors import VlaRosError
from vla_ros.core.trajectory import (
    JointTrajectory,
    TrajectoryError,
    TrajectoryPoint,
    TrajectorySampler,
    build_lookahead,
    build_trajectory,
)

NAMES = ("j1", "j2")


def point(positions, t, velocities=None) -> TrajectoryPoint:
    return TrajectoryPoint(
        positions=np.array(positions, dtype=float),
        time_from_start=t,
        velocities=None if velocities is None else np.array(velocities, dtype=float),
    )


# -- build_trajectory --------------------------------------------------------------------------------


def test_build_first_point_one_dt_after_start_and_strictly_increasing():
    positions = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]])
    traj = build_trajectory(NAMES, positions, 0.25)
    assert [p.time_from_start for p in traj.points] == [0.25, 0.5, 0.75]
    assert traj.duration == 0.75
    assert traj.joint_names == NAMES
    assert traj.stamp == 0.0
    for i, p in enumerate(traj.points):
        np.testing.assert_array_equal(p.positions, positions[i])
        assert p.velocities is None


def test_build_start_offset_and_stamp():
    traj = build_trajectory(list(NAMES), np.zeros((2, 2)), 0.1, start_offset=0.02, stamp=12.5)
    assert [p.time_from_start for p in traj.points] == pytest.approx([0.02, 0.12])
    assert traj.stamp == 12.5
    assert isinstance(traj.joint_names, tuple)


def test_build_single_point_from_1d_positions():
    traj = build_trajectory(NAMES, np.array([0.3, -0.3]), 0.1)
    assert len(traj.points) == 1
    np.testing.assert_array_equal(traj.points[0].positions, [0.3, -0.3])
    assert traj.points[0].time_from_start == 0.1


def test_build_zero_end_velocity_without_touching_the_callers_array():
    velocities = np.ones((3, 2))
    traj = build_trajectory(NAMES, np.zeros((3, 2)), 0.1, velocities=velocities)
    np.testing.assert_array_equal(traj.points[0].velocities, [1.0, 1.0])
    np.testing.assert_array_equal(traj.points[-1].velocities, [0.0, 0.0])
    np.testing.assert_array_equal(velocities, np.ones((3, 2)))


def test_build_keeps_end_velocity_when_asked():
    traj = build_trajectory(NAMES, np.zeros((2, 2)), 0.1, velocities=np.full((2, 2), 0.5), end_with_zero_velocity=False)
    np.testing.assert_array_equal(traj.points[-1].velocities, [0.5, 0.5])


def test_build_points_do_not_alias_the_input():
    positions = np.zeros((2, 2))
    traj = build_trajectory(NAMES, positions, 0.1)
    positions[0, 0] = 9.0
    assert traj.points[0].positions[0] == 0.0


@pytest.mark.parametrize("dt", [0.0, -0.1, float("nan"), float("inf")])
def test_build_rejects_bad_dt(dt):
    with pytest.raises(TrajectoryError, match="dt"):
        build_trajectory(NAMES, np.zeros((2, 2)), dt)


@pytest.mark.parametrize("offset", [0.0, -0.1, float("nan"), float("inf")])
def test_build_rejects_bad_start_offset(offset):
    with pytest.raises(TrajectoryError, match="start_offset"):
        build_trajectory(NAMES, np.zeros((2, 2)), 0.1, start_offset=offset)


@pytest.mark.parametrize("shape", [(3,), (2, 2), (3, 3), (2, 3)])
def test_build_rejects_velocities_of_another_shape(shape):
    # (2, 3) has as many entries as positions (3, 2): it must not be silently reshaped.
    with pytest.raises(TrajectoryError, match="velocities have shape"):
        build_trajectory(("a", "b"), np.zeros((3, 2)), 0.1, velocities=np.zeros(shape))


def test_build_rejects_wrong_joint_count():
    with pytest.raises(TrajectoryError, match=r"expected \(2,\)"):
        build_trajectory(NAMES, np.zeros((2, 3)), 0.1)


def test_build_rejects_nan_and_inf():
    bad = np.zeros((2, 2))
    bad[1, 0] = np.nan
    with pytest.raises(TrajectoryError, match="point 1 contains NaN or inf"):
        build_trajectory(NAMES, bad, 0.1)
    with pytest.raises(TrajectoryError, match="NaN or inf"):
        build_trajectory(NAMES, np.zeros((2, 2)), 0.1, velocities=np.array([[0.0, np.inf], [0.0, 0.0]]))


def test_build_rejects_empty_positions():
    with pytest.raises(TrajectoryError, match="no points"):
        build_trajectory(NAMES, np.zeros((0, 2)), 0.1)


# -- JointTrajectory ---------------------------------------------------------------------------------


def test_trajectory_error_is_a_vla_ros_error():
    assert issubclass(TrajectoryError, VlaRosError)


@pytest.mark.parametrize(
    "times, message",
    [
        ((0.0,), "from > 0"),
        ((-0.1,), "from > 0"),
        ((0.1, 0.1), "point 1"),
        ((0.2, 0.1), "point 1"),
        ((float("nan"),), "point 0"),
        ((float("inf"),), "point 0"),
        ((0.1, float("nan")), "point 1"),
    ],
)
def test_trajectory_times_must_be_finite_positive_and_strictly_increasing(times, message):
    with pytest.raises(TrajectoryError, match=message):
        JointTrajectory(joint_names=NAMES, points=tuple(point([0, 0], t) for t in times))


def test_trajectory_rejects_missing_and_repeated_names_and_no_points():
    with pytest.raises(TrajectoryError, match="no joint names"):
        JointTrajectory(joint_names=(), points=(point([], 0.1),))
    with pytest.raises(TrajectoryError, match="no points"):
        JointTrajectory(joint_names=NAMES, points=())
    with pytest.raises(TrajectoryError, match="repeat"):
        JointTrajectory(joint_names=("a", "a"), points=(point([0, 0], 0.1),))


def test_trajectory_rejects_wrong_velocity_shape():
    with pytest.raises(TrajectoryError, match="velocities"):
        JointTrajectory(joint_names=NAMES, points=(point([0, 0], 0.1, velocities=[0, 0, 0]),))


# -- TrajectorySampler -------------------------------------------------------------------------------


def linear_sampler() -> TrajectorySampler:
    traj = JointTrajectory(joint_names=NAMES, points=(point([1.0, 2.0], 0.5), point([3.0, 2.0], 1.5)))
    return TrajectorySampler(trajectory=traj, start_time=10.0, start_positions=np.array([0.0, 0.0]))


def test_sampler_before_start_holds_start_state():
    sampler = linear_sampler()
    for t in (0.0, 9.99, 10.0):
        positions, velocities = sampler.sample(t)
        np.testing.assert_array_equal(positions, [0.0, 0.0])
        np.testing.assert_array_equal(velocities, [0.0, 0.0])


def test_sampler_linear_from_start_state_to_first_point():
    positions, velocities = linear_sampler().sample(10.25)
    np.testing.assert_allclose(positions, [0.5, 1.0])
    np.testing.assert_allclose(velocities, [2.0, 4.0])


def test_sampler_on_a_point_returns_it():
    positions, velocities = linear_sampler().sample(10.5)
    np.testing.assert_allclose(positions, [1.0, 2.0])
    np.testing.assert_allclose(velocities, [2.0, 0.0])  # the slope of the segment that starts there


def test_sampler_linear_between_points():
    positions, velocities = linear_sampler().sample(11.0)
    np.testing.assert_allclose(positions, [2.0, 2.0])
    np.testing.assert_allclose(velocities, [2.0, 0.0])


def test_sampler_at_and_after_end_holds_last_point_with_zero_velocity():
    sampler = linear_sampler()
    assert sampler.end_time == 11.5
    for t in (11.5, 12.0, 1e6):
        positions, velocities = sampler.sample(t)
        np.testing.assert_array_equal(positions, [3.0, 2.0])
        np.testing.assert_array_equal(velocities, [0.0, 0.0])


def test_sampler_returns_copies():
    sampler = linear_sampler()
    positions, _ = sampler.sample(12.0)
    positions[0] = 99.0
    assert sampler.sample(12.0)[0][0] == 3.0
    start, _ = sampler.sample(0.0)
    start[0] = 99.0
    assert sampler.sample(0.0)[0][0] == 0.0


def test_sampler_cubic_hermite_between_points_with_velocities():
    # One joint from 0 (v=0) to 1 (v=0) in 1 s: the smoothstep 3s^2 - 2s^3, velocity 6s - 6s^2.
    traj = JointTrajectory(joint_names=("j",), points=(point([1.0], 1.0, velocities=[0.0]),))
    sampler = TrajectorySampler(trajectory=traj, start_time=0.0, start_positions=np.array([0.0]))
    for s in (0.25, 0.5, 0.75):
        positions, velocities = sampler.sample(s)
        assert positions[0] == pytest.approx(3 * s**2 - 2 * s**3)
        assert velocities[0] == pytest.approx(6 * s - 6 * s**2)


def test_sampler_cubic_uses_start_and_point_velocities():
    # p(s) = s^3 - s^2 + s  has p(0)=0, p'(0)=1, p(1)=1, p'(1)=2: Hermite reproduces any cubic exactly.
    traj = JointTrajectory(joint_names=("j",), points=(point([1.0], 1.0, velocities=[2.0]),))
    sampler = TrajectorySampler(
        trajectory=traj, start_time=0.0, start_positions=np.array([0.0]), start_velocities=np.array([1.0])
    )
    for s in (0.1, 0.5, 0.9):
        positions, velocities = sampler.sample(s)
        assert positions[0] == pytest.approx(s**3 - s**2 + s)
        assert velocities[0] == pytest.approx(3 * s**2 - 2 * s + 1)


def test_sampler_interpolation_is_chosen_per_segment():
    # Velocities on points 0 and 1 only: segments start->0 and 0->1 are cubic, 1->2 is linear.
    traj = JointTrajectory(
        joint_names=("j",),
        points=(point([1.0], 1.0, [0.0]), point([2.0], 2.0, [0.0]), point([4.0], 3.0)),
    )
    sampler = TrajectorySampler(trajectory=traj, start_time=0.0, start_positions=np.array([0.0]))
    assert sampler.sample(0.25)[0][0] == pytest.approx(3 * 0.25**2 - 2 * 0.25**3)
    assert sampler.sample(1.25)[0][0] == pytest.approx(1.0 + 3 * 0.25**2 - 2 * 0.25**3)
    positions, velocities = sampler.sample(2.5)
    assert positions[0] == pytest.approx(3.0)
    assert velocities[0] == pytest.approx(2.0)


def test_sampler_of_built_trajectory_passes_through_every_point():
    positions = np.array([[0.1, 0.2], [0.3, 0.1], [0.2, -0.4]])
    traj = build_trajectory(NAMES, positions, 0.1, velocities=np.ones((3, 2)))
    sampler = TrajectorySampler(trajectory=traj, start_time=5.0, start_positions=np.zeros(2))
    for p in traj.points:
        np.testing.assert_allclose(sampler.sample(5.0 + p.time_from_start)[0], p.positions, atol=1e-12)


# -- build_lookahead ---------------------------------------------------------------------------------


def test_lookahead_is_stamped_one_step_before_its_first_row_with_central_velocities():
    rows = np.array([[0.0, 1.0], [0.1, 1.0], [0.3, 1.0], [0.4, 1.0]])
    traj = build_lookahead(NAMES, rows, 0.1, start_time=100.0, previous=np.array([0.0, 1.0]))
    assert traj.stamp == pytest.approx(99.9)
    assert [p.time_from_start for p in traj.points] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose([p.velocities[0] for p in traj.points], [0.5, 1.5, 1.5, 0.0])  # last: 0
    np.testing.assert_array_equal(traj.points[-1].velocities, [0.0, 0.0])


def test_lookahead_near_the_clock_start_keeps_a_positive_stamp():
    traj = build_lookahead(NAMES, np.zeros((2, 2)), 0.1, start_time=0.05, previous=np.zeros(2))
    assert traj.stamp == pytest.approx(0.025)
    assert traj.stamp + traj.points[0].time_from_start == pytest.approx(0.05)


def test_lookahead_rejects_bad_shapes_and_a_relative_start():
    with pytest.raises(TrajectoryError, match="positions"):
        build_lookahead(NAMES, np.zeros((0, 2)), 0.1, start_time=1.0, previous=np.zeros(2))
    with pytest.raises(TrajectoryError, match="absolute"):
        build_lookahead(NAMES, np.zeros((2, 2)), 0.1, start_time=0.0, previous=np.zeros(2))


def test_lookahead_spline_speed_exceeds_the_steps_by_at_most_a_quarter_of_their_speed_change():
    """The bound the safety filter's margin relies on: between two rows the cubic's speed stays within
    max(|finite-difference speed|) + max(|change of finite-difference speed|) / 4."""
    rng = np.random.default_rng(3)
    dt = 0.05
    for _ in range(50):
        speeds = np.cumsum(rng.uniform(-1, 1, size=(12, 1)), axis=0)  # speed changes of at most 1 per step
        rows = np.cumsum(speeds * dt, axis=0)
        traj = build_lookahead(("j",), rows, dt, start_time=10.0, previous=rows[0] - speeds[0] * dt)
        sampler = TrajectorySampler(traj, start_time=traj.stamp, start_positions=rows[0])
        times = np.linspace(traj.stamp + dt, traj.stamp + traj.duration - dt, 2000)  # the last segment stops
        fine = np.array([sampler.sample(t)[1][0] for t in times])
        assert np.abs(fine).max() <= np.abs(speeds).max() + 1.0 / 4 + 1e-9
