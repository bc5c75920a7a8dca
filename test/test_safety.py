"""SafetyFilter: hand-computed interventions and property tests of the limits it must never break."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vla_ros.core.errors import ConfigError, VlaRosError
from vla_ros.core.safety import (
    HOLD_REASONS,
    INTERVENTIONS,
    SafetyConfig,
    SafetyError,
    SafetyFilter,
    SafetyReport,
    braking_speed,
)

PERIOD = 0.1
ACCEL = 2.0  # one step changes the velocity by at most 0.2
VMAX = 1.0


def config(**overrides) -> SafetyConfig:
    arguments = dict(
        joint_names=("a", "b"),
        lower=[-1.0, -1.0],
        upper=[1.0, 1.0],
        max_velocity=[VMAX, VMAX],
        max_acceleration=[ACCEL, ACCEL],
        control_period_s=PERIOD,
    )
    arguments.update(overrides)
    return SafetyConfig(**arguments)


def started(at=(0.0, 0.0), **overrides) -> SafetyFilter:
    f = SafetyFilter(config(**overrides))
    f.reset(np.array(at))
    return f


def step(f: SafetyFilter, target, measured=None, age=0.0) -> tuple[np.ndarray, SafetyReport]:
    measured = f.last_command if measured is None else measured
    return f.filter(None if target is None else np.array(target, dtype=float), measured=measured, observation_age_s=age)


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"joint_names": ()}, "joint_names"),
        ({"joint_names": ("a", "a")}, "joint_names"),
        ({"joint_names": ("a", "")}, "joint_names"),
        ({"lower": [-1.0]}, "lower"),
        ({"lower": [[-1.0, -1.0]]}, "lower"),
        ({"lower": [-1.0, np.nan]}, "lower"),
        ({"lower": [1.0, -1.0]}, "lower"),
        ({"upper": [1.0, 1.0, 1.0]}, "upper"),
        ({"upper": ["x", 1.0]}, "upper"),
        ({"max_velocity": [1.0, 0.0]}, "max_velocity"),
        ({"max_velocity": [1.0, -1.0]}, "max_velocity"),
        ({"max_velocity": [1.0, np.inf]}, "max_velocity"),
        ({"max_acceleration": [0.0, 1.0]}, "max_acceleration"),
        ({"control_period_s": 0.0}, "control_period_s"),
        ({"control_period_s": float("nan")}, "control_period_s"),
        ({"max_tracking_error": [0.1]}, "max_tracking_error"),
        ({"max_tracking_error": [0.1, 0.0]}, "max_tracking_error"),
        ({"observation_timeout_s": 0.0}, "observation_timeout_s"),
        ({"observation_timeout_s": -1.0}, "observation_timeout_s"),
        ({"dry_run": 1}, "dry_run"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, key):
    with pytest.raises(ConfigError, match=key) as info:
        config(**overrides)
    assert info.value.key == key


def test_config_error_names_the_offending_joint_and_value():
    with pytest.raises(ConfigError, match=r"'b': -3\.0"):
        config(max_velocity=[1.0, -3.0])
    with pytest.raises(ConfigError, match=r"'a': \(1\.0, -1\.0\)"):
        config(lower=[1.0, -1.0], upper=[-1.0, 1.0])


def test_config_copies_arrays_and_makes_them_read_only():
    lower = np.array([-1.0, -1.0])
    c = config(lower=lower, max_tracking_error=[0.1, 0.2], joint_names=["a", "b"])
    lower[0] = 5.0
    assert c.lower[0] == -1.0
    assert c.joint_names == ("a", "b")
    assert c.lower.dtype == np.float64
    with pytest.raises(ValueError):
        c.upper[0] = 3.0
    with pytest.raises(ValueError):
        c.max_tracking_error[0] = 3.0


def test_config_allows_infinite_limits_and_off_switches():
    c = config(lower=[-np.inf, -1.0], upper=[np.inf, 1.0], observation_timeout_s=None, max_tracking_error=None)
    f = SafetyFilter(c)
    f.reset(np.array([100.0, 0.0]))
    command, report = step(f, [100.01, 0.01], age=1e9)
    np.testing.assert_array_equal(command, [100.01, 0.01])
    assert report.interventions == ()


# -- usage errors ------------------------------------------------------------------------------------


def test_errors_are_in_the_hierarchy():
    assert issubclass(SafetyError, VlaRosError)


def test_filter_before_reset_is_an_error():
    f = SafetyFilter(config())
    assert f.last_command is None and f.last_velocity is None
    with pytest.raises(SafetyError, match="before reset"):
        f.filter(np.zeros(2), measured=np.zeros(2), observation_age_s=0.0)


@pytest.mark.parametrize("measured", [[0.0, np.nan], [np.inf, 0.0]])
def test_reset_needs_a_finite_position(measured):
    with pytest.raises(SafetyError, match="finite"):
        SafetyFilter(config()).reset(np.array(measured))


@pytest.mark.parametrize("shape", [(3,), (1, 2), ()])
def test_wrong_shapes_are_errors_not_holds(shape):
    f = started()
    with pytest.raises(SafetyError, match=r"expected \(2,\)"):
        f.reset(np.zeros(shape))
    with pytest.raises(SafetyError, match=r"target has shape"):
        f.filter(np.zeros(shape), measured=np.zeros(2), observation_age_s=0.0)
    with pytest.raises(SafetyError, match=r"measured has shape"):
        f.filter(np.zeros(2), measured=np.zeros(shape), observation_age_s=0.0)


# -- hand-computed steps -----------------------------------------------------------------------------


def test_feasible_target_passes_unchanged():
    f = started()
    command, report = step(f, [0.01, -0.02])  # v = 0.1, -0.2: within aT = 0.2
    np.testing.assert_array_equal(command, [0.01, -0.02])
    assert report == SafetyReport(interventions=(), held=False, dry_run=False)
    assert not report.intervened
    np.testing.assert_allclose(f.last_velocity, [0.1, -0.2])
    assert all(v == 0 for v in f.counters.values())


def test_jump_from_rest_is_limited_by_acceleration_then_velocity():
    f = started()
    positions, reports = [], []
    for _ in range(7):
        command, report = step(f, [1.0, 0.0])
        positions.append(command[0])
        reports.append(report.interventions)
    # v = 0.2, 0.4, 0.6, 0.8, 1.0 (velocity limit), 1.0, ...: positions are their running sums * 0.1.
    assert positions[:6] == pytest.approx([0.02, 0.06, 0.12, 0.2, 0.3, 0.4])
    assert reports[0] == ("acceleration_limited",)  # desired 10/s: the acceleration window binds first
    assert reports[5] == ("velocity_limited",)
    assert f.counters["acceleration_limited"] == 4  # the 5th step reaches v = 1.0 on both bounds at once
    assert f.counters["velocity_limited"] >= 2


def travel_to_stop(velocity: float, acceleration: float, period: float) -> float:
    """Distance covered braking by acceleration*period per step from `velocity` (after this step)."""
    travel, v = 0.0, velocity - acceleration * period
    while v > 0:
        travel += v * period
        v -= acceleration * period
    return travel


def test_braking_distance_keeps_the_limit_reachable_without_breaking_acceleration():
    f = started(max_velocity=[3.0, 3.0])
    previous_v, reports = 0.0, set()
    for _ in range(60):
        command, report = step(f, [5.0, 0.0])  # far beyond the upper limit: counts as the limit
        reports.update(report.interventions)
        v = f.last_velocity[0]
        assert command[0] <= 1.0
        assert abs(v - previous_v) <= ACCEL * PERIOD + 1e-12
        assert command[0] + travel_to_stop(v, ACCEL, PERIOD) <= 1.0 + 1e-12  # can still stop in time
        previous_v = v
    assert command[0] == 1.0 and v == 0.0  # reached exactly, and stopped
    assert "position_limited" in reports


def test_braking_speed_is_the_exact_discrete_stopping_speed():
    a = np.full(6, 2.0)
    d = np.array([0.3, 1e-12, 0.02, 1.0, 0.0, -1.0])
    v = braking_speed(d, a, 0.1)
    # 1.0/s then 0.8, 0.6, 0.4, 0.2: 0.1 + 0.08 + 0.06 + 0.04 + 0.02 = 0.3
    assert v[0] == pytest.approx(1.0)
    assert v[1] == pytest.approx(1e-11, rel=1e-9)  # one step, cancelled by the next
    assert v[2] == pytest.approx(0.2)
    for speed, distance in zip(v[:4], d[:4], strict=True):
        assert speed * 0.1 + travel_to_stop(speed, 2.0, 0.1) == pytest.approx(distance, rel=1e-9)
        assert (speed + 1e-6) * 0.1 + travel_to_stop(speed + 1e-6, 2.0, 0.1) > distance
    assert v[4] == 0.0 and v[5] == 0.0
    assert braking_speed(np.array([np.inf]), np.array([2.0]), 0.1)[0] == np.inf


def test_target_that_jumped_is_reached_without_overshoot():
    f = started()
    positions = []
    for _ in range(40):
        command, report = step(f, [0.6, -0.45])
        positions.append(command.copy())
    positions = np.array(positions)
    assert np.all(positions[:, 0] <= 0.6 + 1e-12) and np.all(positions[:, 1] >= -0.45 - 1e-12)
    np.testing.assert_allclose(positions[-1], [0.6, -0.45], atol=1e-12)
    assert f.counters["approach_limited"] > 0


def test_small_first_step_is_not_shaped():
    f = started()
    command, report = step(f, [0.015, 0.0])  # 0.15/s: the next step can cancel it
    np.testing.assert_array_equal(command, [0.015, 0.0])
    assert report.interventions == ()


def test_nan_and_inf_targets_hold():
    for bad in ([np.nan, 0.0], [0.0, np.inf], [-np.inf, np.nan]):
        f = started(at=(0.5, -0.5))
        command, report = step(f, bad)
        np.testing.assert_array_equal(command, [0.5, -0.5])
        assert report.held and report.interventions == ("nan_target",)
        assert f.counters["nan_target"] == 1


def test_bad_measurement_holds():
    f = started()
    command, report = step(f, [0.01, 0.01], measured=np.array([np.nan, 0.0]))
    np.testing.assert_array_equal(command, [0.0, 0.0])
    assert report.held and report.interventions == ("bad_measurement",)


@pytest.mark.parametrize("age", [0.51, 10.0, float("nan"), float("inf")])
def test_stale_observation_holds(age):
    f = started()
    command, report = step(f, [0.01, 0.01], age=age)
    np.testing.assert_array_equal(command, [0.0, 0.0])
    assert report.interventions == ("stale_observation_hold",)


@pytest.mark.parametrize("age", [0.5, 0.0, -0.01])
def test_fresh_observation_passes(age):
    command, report = step(started(), [0.01, 0.01], age=age)
    np.testing.assert_array_equal(command, [0.01, 0.01])
    assert report.interventions == ()


def test_missing_target_holds():
    f = started(at=(0.3, 0.3))
    command, report = step(f, None)
    np.testing.assert_array_equal(command, [0.3, 0.3])
    assert report == SafetyReport(interventions=("no_action_hold",), held=True, dry_run=False)


def test_every_hold_reason_present_is_counted():
    f = started()
    _, report = step(f, None, measured=np.array([np.nan, 0.0]), age=9.0)
    assert report.interventions == ("bad_measurement", "stale_observation_hold", "no_action_hold")
    _, report = step(f, [np.nan, 0.0], age=9.0)
    assert report.interventions == ("stale_observation_hold", "nan_target")
    assert dict(f.counters) == {
        **dict.fromkeys(INTERVENTIONS, 0),
        "bad_measurement": 1,
        "stale_observation_hold": 2,
        "no_action_hold": 1,
        "nan_target": 1,
    }


def test_hold_while_moving_decelerates_forwards_and_never_reverses():
    f = started()
    for _ in range(5):
        step(f, [1.0, -1.0])  # reach v = +-1.0 at 0.3 / -0.3
    np.testing.assert_allclose(f.last_velocity, [1.0, -1.0])
    np.testing.assert_allclose(f.last_command, [0.3, -0.3])
    positions = []
    for _ in range(6):
        command, report = step(f, None)
        assert report.held
        positions.append(command[0])
        assert command[1] == pytest.approx(-command[0])
    # v = 0.8, 0.6, 0.4, 0.2, 0, 0: it stops 0.2 further on, where it was going.
    assert positions == pytest.approx([0.38, 0.44, 0.48, 0.5, 0.5, 0.5])


def test_hold_then_target_again_resumes_from_where_it_stopped():
    f = started()
    step(f, [0.01, 0.0])
    step(f, None)
    command, report = step(f, [0.02, 0.0])
    assert report.interventions == ()
    np.testing.assert_array_equal(command, [0.02, 0.0])


def test_tracking_error_caps_the_target_around_the_measurement():
    f = started(max_velocity=[100.0, 100.0], max_acceleration=[1e4, 1e4], max_tracking_error=[0.05, 0.5])
    command, report = step(f, [0.5, 0.3], measured=np.array([0.0, 0.0]))
    np.testing.assert_allclose(command, [0.05, 0.3])
    assert report.interventions == ("tracking_error_capped",)
    # Measured lagging behind: the cap is around the measurement, not the last command.
    command, report = step(f, [0.5, 0.3], measured=np.array([0.01, 0.2]))
    np.testing.assert_allclose(command, [0.06, 0.3])


def test_target_beyond_limits_goes_to_the_limit_only():
    f = started(at=(0.99, 0.0), max_velocity=[100.0, 100.0], max_acceleration=[1e4, 1e4])
    command, report = step(f, [3.0, 0.0])
    assert command[0] == 1.0  # one step at 0.1/s, which the next step can cancel
    assert report.interventions == ("position_limited",)
    command, report = step(f, [3.0, 0.0])
    assert command[0] == 1.0


def test_reset_outside_the_limits_only_moves_back():
    f = started(at=(1.5, -1.5))
    command, report = step(f, None)
    np.testing.assert_array_equal(command, [1.5, -1.5])  # no jump into the range
    previous = command
    for _ in range(40):
        command, _ = step(f, [5.0, -5.0])  # beyond the limits: counts as the limits, i.e. back towards range
        assert command[0] <= previous[0] + 1e-12 and command[1] >= previous[1] - 1e-12
        assert command[0] >= 1.0 - 1e-12 and command[1] <= -1.0 + 1e-12  # to the limit, no overshoot into range
        previous = command
    np.testing.assert_allclose(command, [1.0, -1.0], atol=1e-12)


def test_reset_outside_the_limits_never_moves_further_out_when_target_is_outside_too():
    f = started(at=(1.5, 0.0))
    for _ in range(20):
        command, _ = step(f, [1.6, 0.0])
        assert command[0] <= 1.5


def test_step_target_settles_exactly():
    f = started()
    for _ in range(200):
        command, report = step(f, [0.7, -0.25])
    np.testing.assert_allclose(command, [0.7, -0.25], atol=1e-12)
    np.testing.assert_allclose(f.last_velocity, [0.0, 0.0], atol=1e-9)
    assert report.interventions == ()


def test_dry_run_computes_the_same_commands_and_says_so():
    live, dry = started(), started(dry_run=True)
    for target in ([1.0, 0.0], None, [np.nan, 0.0], [0.5, -0.5], [0.5, -0.5]):
        a, report_a = step(live, target)
        b, report_b = step(dry, target)
        np.testing.assert_array_equal(a, b)
        assert report_a.interventions == report_b.interventions
        assert report_b.dry_run and not report_a.dry_run
    assert dict(live.counters) == dict(dry.counters)


def test_inputs_are_not_modified_and_outputs_are_not_aliased():
    f = started()
    target, measured = np.array([0.5, 0.5]), np.array([0.0, 0.0])
    command, _ = f.filter(target, measured=measured, observation_age_s=0.0)
    np.testing.assert_array_equal(target, [0.5, 0.5])
    np.testing.assert_array_equal(measured, [0.0, 0.0])
    command[:] = 9.0
    f.last_command[:] = 9.0
    f.last_velocity[:] = 9.0
    assert np.all(f.last_command < 1.0) and np.all(f.last_velocity < 1.0)
    start = np.array([0.1, 0.1])
    f.reset(start)
    start[0] = 7.0
    assert f.last_command[0] == 0.1


def test_counters_are_read_only_and_named():
    f = started()
    assert tuple(f.counters) == INTERVENTIONS
    assert set(HOLD_REASONS) <= set(INTERVENTIONS)
    with pytest.raises(TypeError):
        f.counters["nan_target"] = 0  # type: ignore[index]


# -- properties --------------------------------------------------------------------------------------

TOL = 1e-9


@st.composite
def configs(draw) -> SafetyConfig:
    n = draw(st.integers(1, 3))
    floats = st.floats(allow_nan=False, allow_infinity=False)
    lower = np.array(draw(st.lists(floats.filter(lambda x: -3 <= x <= 1), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(st.floats(0.05, 4.0), min_size=n, max_size=n)))
    return SafetyConfig(
        joint_names=tuple(f"j{i}" for i in range(n)),
        lower=lower,
        upper=lower + width,
        max_velocity=np.array(draw(st.lists(st.floats(0.05, 5.0), min_size=n, max_size=n))),
        max_acceleration=np.array(draw(st.lists(st.floats(0.2, 50.0), min_size=n, max_size=n))),
        control_period_s=draw(st.sampled_from([0.002, 0.01, 0.02, 0.0333, 0.1])),
        max_tracking_error=draw(st.none() | st.just(np.full(n, draw(st.floats(0.01, 1.0))))),
        observation_timeout_s=draw(st.sampled_from([None, 0.5])),
        dry_run=draw(st.booleans()),
    )


def draw_target(data, c: SafetyConfig, current: np.ndarray):
    n = len(c.joint_names)
    kind = data.draw(st.sampled_from(["none", "nan", "inf", "huge", "beyond", "near", "inside", "inside"]))
    event(f"target: {kind}")
    if kind == "none":
        return None
    if kind in ("nan", "inf"):
        target = current.copy()
        target[data.draw(st.integers(0, n - 1))] = np.nan if kind == "nan" else -np.inf
        return target
    if kind == "huge":
        return current + np.array(data.draw(st.lists(st.sampled_from([-1e6, 1e6, 0.0]), min_size=n, max_size=n)))
    if kind == "beyond":
        return np.where(data.draw(st.booleans()), c.upper + 0.5, c.lower - 0.5)
    if kind == "near":
        step_size = c.max_velocity * c.control_period_s
        return current + step_size * np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)))
    fractions = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    return c.lower + fractions * (c.upper - c.lower)


def check_step(f, c, before_cmd, before_v, before_counters, target, measured, age, command, report):
    """Every invariant of one filter step."""
    T = c.control_period_s
    v = (command - before_cmd) / T
    assert np.all(np.isfinite(command))
    inside = (before_cmd >= c.lower) & (before_cmd <= c.upper)
    assert np.all(~inside | ((command >= c.lower) & (command <= c.upper)))
    assert np.all(~(before_cmd > c.upper) | (command <= before_cmd))  # outside: only back towards range
    assert np.all(~(before_cmd < c.lower) | (command >= before_cmd))
    assert np.all(np.abs(v) <= c.max_velocity * (1 + TOL) + TOL)
    assert np.all(np.abs(v - before_v) <= c.max_acceleration * T * (1 + TOL) + TOL)
    # Expected hold reasons, decided here from the inputs.
    reasons = set()
    if not np.all(np.isfinite(measured)):
        reasons.add("bad_measurement")
    if c.observation_timeout_s is not None and not age <= c.observation_timeout_s:
        reasons.add("stale_observation_hold")
    if target is None:
        reasons.add("no_action_hold")
    elif not np.all(np.isfinite(target)):
        reasons.add("nan_target")
    assert reasons == set(report.interventions) & set(HOLD_REASONS)
    assert report.held == bool(reasons)
    assert report.dry_run == c.dry_run
    if report.held:
        # Stop where you are: braking only, in the direction already moving, never back.
        assert np.all(v * before_v >= -TOL)
        assert np.all(np.abs(v) <= np.abs(before_v) + TOL)
    if not report.interventions:
        np.testing.assert_array_equal(command, target)  # untouched unless an intervention says otherwise
    for name in INTERVENTIONS:
        assert f.counters[name] - before_counters[name] == (name in report.interventions)
    np.testing.assert_array_equal(f.last_command, command)


@settings(max_examples=150, deadline=None)
@given(c=configs(), data=st.data())
def test_no_target_sequence_breaks_a_limit(c, data):
    n = len(c.joint_names)
    outside = data.draw(st.booleans(), label="start outside")
    fractions = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    start = c.lower + fractions * (c.upper - c.lower)
    if outside:
        start = start + np.array(data.draw(st.lists(st.sampled_from([-0.5, 0.0, 0.5]), min_size=n, max_size=n)))
    f = SafetyFilter(c)
    f.reset(start)
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        before_cmd, before_v, before_counters = f.last_command, f.last_velocity, dict(f.counters)
        target = draw_target(data, c, before_cmd)
        measured = before_cmd + data.draw(st.floats(-0.05, 0.05))
        if data.draw(st.integers(0, 9)) == 0:
            measured = measured.copy()
            measured[0] = np.nan
        age = data.draw(st.sampled_from([0.0, 0.01, 0.2, 0.49, 0.51, 3.0, float("nan")]))
        command, report = f.filter(target, measured=measured, observation_age_s=age)
        check_step(f, c, before_cmd, before_v, before_counters, target, measured, age, command, report)


@settings(max_examples=60, deadline=None)
@given(c=configs(), data=st.data())
def test_feasible_smooth_targets_pass_untouched(c, data):
    """A target stream that respects every limit (with margin) from the rest state is never altered."""
    T = c.control_period_s
    base = c.lower + (c.upper - c.lower) / 4
    # p(t) = base + A (1 - cos(w t)) starts at rest; |v| <= A w, |acc| <= A w^2: each within half its limit.
    w = data.draw(st.floats(0.5, 20.0))
    amplitude = np.minimum.reduce([(c.upper - c.lower) / 4, c.max_velocity / (2 * w), c.max_acceleration / (2 * w * w)])
    f = SafetyFilter(c)
    f.reset(base)
    for k in range(1, 120):
        target = base + amplitude * (1 - np.cos(w * k * T))
        measured = f.last_command
        command, report = f.filter(target, measured=measured, observation_age_s=0.0)
        if c.max_tracking_error is not None and np.any(np.abs(target - measured) > c.max_tracking_error):
            assert "tracking_error_capped" in report.interventions
            break  # a legitimate intervention; from here the command lags the stream
        assert report.interventions == (), (k, report)
        np.testing.assert_array_equal(command, target)


@settings(max_examples=80, deadline=None)
@given(c=configs(), data=st.data())
def test_preview_bounds_every_row_and_ends_at_rest_without_changing_the_filter(c, data):
    """Every row of a lookahead is a step the filter could have commanded (all limits hold, row after row), the
    last row is at rest, and neither the filter's state nor its counters move."""
    n = len(c.joint_names)
    f = SafetyFilter(c)
    f.reset(c.lower + (c.upper - c.lower) * np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))))
    for _ in range(data.draw(st.integers(0, 5))):  # get moving
        f.filter(draw_target(data, c, f.last_command), measured=f.last_command, observation_age_s=0.0)
    before = (f.last_command, f.last_velocity, dict(f.counters))
    targets = [draw_target(data, c, f.last_command) for _ in range(data.draw(st.integers(0, 12)))]
    targets = np.array([t if t is not None and np.all(np.isfinite(t)) else f.last_command for t in targets])
    rows = f.preview(targets.reshape(-1, n), measured=f.last_command, observation_age_s=0.0)
    np.testing.assert_array_equal(f.last_command, before[0])
    np.testing.assert_array_equal(f.last_velocity, before[1])
    assert dict(f.counters) == before[2]
    T = c.control_period_s
    positions = np.vstack([before[0], rows])
    velocities = np.vstack([before[1], np.diff(positions, axis=0) / T])
    assert len(rows) >= len(targets)
    assert np.all(np.abs(velocities) <= c.max_velocity * (1 + TOL) + TOL)
    assert np.all(np.abs(np.diff(velocities, axis=0)) <= c.max_acceleration * T * (1 + TOL) + TOL)
    inside = (before[0] >= c.lower) & (before[0] <= c.upper)
    assert np.all(~inside | ((rows >= c.lower - TOL) & (rows <= c.upper + TOL)))
    np.testing.assert_array_equal(velocities[-1], 0.0)


def test_preview_of_nothing_brakes_from_speed_to_rest():
    f = SafetyFilter(config())
    f.reset(np.zeros(2))
    for _ in range(5):  # accelerate at 2 rad/s^2 for 0.5 s: v = 1.0 (the velocity limit), joint a only
        f.filter(np.array([1.0, 0.0]), measured=f.last_command, observation_age_s=0.0)
    assert f.last_velocity[0] == pytest.approx(VMAX)
    rows = f.preview(np.empty((0, 2)), measured=f.last_command, observation_age_s=0.0)
    speeds = np.abs(np.diff(np.vstack([f.last_command, rows])[:, 0])) / PERIOD
    # 1.0 -> 0 at 0.2 per step: 0.8, 0.6, 0.4, 0.2, 0.0
    np.testing.assert_allclose(speeds, [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-12)


def test_resume_from_continues_the_motion_within_the_limits():
    f = SafetyFilter(config())
    f.reset(np.zeros(2))
    f.resume_from(np.array([0.3, 0.0]), np.array([0.5, 0.0]), target=np.array([0.3, 0.0]))
    command, report = f.filter(np.array([0.35, 0.0]), measured=np.array([0.3, 0.0]), observation_age_s=0.0)
    np.testing.assert_allclose(command, [0.35, 0.0])  # 0.5 rad/s on, as the target moves: untouched
    assert report.interventions == ()
    with pytest.raises(SafetyError, match="finite"):
        f.resume_from(np.array([np.nan, 0.0]), np.zeros(2))
    with pytest.raises(SafetyError, match="before reset"):
        SafetyFilter(config()).resume_from(np.zeros(2), np.zeros(2))
