"""ActionPipeline: the per-tick path adapter -> scheduler -> safety -> trajectory, on plain data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import VlaRosError
from vla_ros.core.features import PolicyFeatures, RobotObservation
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.core.trajectory import TrajectorySampler

CHUNK = 10


@pytest.fixture
def panda():
    return load_embodiment("panda")


def make_pipeline(embodiment, *, action_dt_s=None, supports_prefix=True, **config) -> ActionPipeline:
    features = PolicyFeatures(state_dim=32, action_dim=32, chunk_size=CHUNK,
                              action_dt_s=action_dt_s or embodiment.control_period_s, camera_keys=("front", "wrist"),
                              image_size=(64, 64))
    return ActionPipeline(embodiment, features, PipelineConfig(**config), supports_prefix=supports_prefix)


def observe(embodiment, positions, stamp) -> RobotObservation:
    return RobotObservation(stamp=stamp, joint_names=embodiment.joint_names, joint_positions=positions,
                            images={}, instruction="touch the red cube")


def test_delta_chunk_is_executed_relative_to_its_observation(panda):
    pipeline = make_pipeline(panda)
    home = panda.home
    pipeline.reset(home)
    period = panda.control_period_s
    assert pipeline.needs_chunk(0.0)
    batch, request = pipeline.prepare(observe(panda, home, 0.0))
    assert not pipeline.needs_chunk(0.0), "a chunk is being computed: no second request"
    # The policy asks each arm joint to move +0.002 rad per step relative to the observed state.
    actions = np.zeros((CHUNK, 32), dtype=np.float32)
    actions[:, :7] = 0.002 * np.arange(1, CHUNK + 1)[:, None]
    actions[:, 7] = 0.0  # gripper open
    receipt = pipeline.accept_chunk(actions, request, now=0.0)
    assert receipt.queued_steps == CHUNK and receipt.dropped_late_steps == 0
    for k in range(3):
        command = pipeline.step(k * period, measured=home, observation_stamp=k * period)
        np.testing.assert_allclose(command.positions[:7], home[:7] + 0.002 * (k + 1), atol=1e-9)
        assert command.positions[7] == pytest.approx(panda.grippers[0].open)
        assert command.send and not command.report.held
        assert command.trajectory.joint_names == panda.joint_names
        assert command.trajectory.points[0].time_from_start == pytest.approx(period)
        np.testing.assert_allclose(command.trajectory.points[0].positions, command.positions)


def test_late_chunk_drops_past_steps_and_does_not_jump(panda):
    pipeline = make_pipeline(panda)
    home = panda.home
    pipeline.reset(home)
    period = panda.control_period_s
    _, request = pipeline.prepare(observe(panda, home, 0.0))
    actions = np.zeros((CHUNK, 32), dtype=np.float32)
    actions[:, :7] = 0.01 * np.arange(CHUNK)[:, None]
    # The chunk arrives 4 periods after its observation: steps 0..3 are in the past.
    receipt = pipeline.accept_chunk(actions, request, now=4 * period)
    assert receipt.dropped_late_steps == 4
    command = pipeline.step(4 * period, measured=home, observation_stamp=4 * period)
    # Step 4 asks for +0.04 rad at once; the arm was at rest, so the acceleration limit allows far less.
    step = np.abs(command.positions - home)
    assert np.all(step <= panda.acceleration_limits * period**2 + 1e-9)
    assert "acceleration_limited" in command.report.interventions


def test_empty_queue_and_stale_observation_hold(panda):
    pipeline = make_pipeline(panda)
    home = panda.home
    pipeline.reset(home)
    period = panda.control_period_s
    command = pipeline.step(0.0, measured=home, observation_stamp=0.0)
    assert command.report.held and "no_action_hold" in command.report.interventions
    np.testing.assert_allclose(command.positions, home)
    _, request = pipeline.prepare(observe(panda, home, 0.0))
    pipeline.accept_chunk(np.ones((CHUNK, 32), dtype=np.float32) * 0.001, request, now=0.0)
    stale = pipeline.step(period, measured=home, observation_stamp=period - 1.0)
    assert stale.report.held and "stale_observation_hold" in stale.report.interventions


def test_failed_chunk_allows_a_new_request(panda):
    pipeline = make_pipeline(panda)
    pipeline.reset(panda.home)
    pipeline.prepare(observe(panda, panda.home, 0.0))
    assert not pipeline.needs_chunk(0.0)
    pipeline.chunk_failed()
    assert pipeline.needs_chunk(0.0)


def test_dry_run_computes_but_does_not_send(panda):
    pipeline = make_pipeline(panda, dry_run=True)
    pipeline.reset(panda.home)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0))
    actions = np.zeros((CHUNK, 32), dtype=np.float32)
    actions[:, :7] = 0.001
    pipeline.accept_chunk(actions, request, now=0.0)
    command = pipeline.step(0.0, measured=panda.home, observation_stamp=0.0)
    assert not command.send and command.report.dry_run
    assert np.abs(command.positions - panda.home).max() > 0


@pytest.mark.parametrize("merge", list(MergeStrategy))
def test_refill_requested_below_threshold(panda, merge):
    pipeline = make_pipeline(panda, merge=merge, refill_threshold_steps=3)
    pipeline.reset(panda.home)
    period = panda.control_period_s
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0))
    pipeline.accept_chunk(np.zeros((CHUNK, 32), dtype=np.float32), request, now=0.0)
    asked = []
    for k in range(CHUNK):
        asked.append(pipeline.needs_chunk(k * period))
        pipeline.step(k * period, measured=panda.home, observation_stamp=k * period)
    # 10 queued; a refill is due once 3 or fewer remain, i.e. from tick 7 on.
    assert asked == [False] * 7 + [True] * 3


# -- real-time chunking: the prefix a flow-matching policy continues ---------------------------------------------

POLICY_DT = 0.1  # two control periods of panda (20 Hz): the prefix is on the policy's grid, not the tick grid


def ramp_actions(panda) -> np.ndarray:
    """A chunk on POLICY_DT whose plan is linear in time from a stamp-0 observation at home:
    arm joints (delta actions) home + t rad, gripper (absolute, 0 open..1 closed) t."""
    actions = np.zeros((CHUNK, 32), dtype=np.float32)
    t = POLICY_DT * np.arange(CHUNK)
    actions[:, :7] = t[:, None]
    actions[:, 7] = t
    return actions


def run_ticks(pipeline, panda, times):
    for now in times:
        pipeline.step(now, measured=panda.home, observation_stamp=now)


def test_rtc_prefix_is_the_queued_plan_on_the_policy_grid_in_policy_units(panda):
    pipeline = make_pipeline(panda, merge=MergeStrategy.RTC, action_dt_s=POLICY_DT, refill_threshold_steps=4)
    pipeline.reset(panda.home)
    period = panda.control_period_s
    _, first = pipeline.prepare(observe(panda, panda.home, 0.0), now=0.0)
    assert first.prefix is None, "nothing queued: nothing to continue"
    pipeline.accept_chunk(ramp_actions(panda), first, now=0.0)  # plan on the tick grid 0, 0.05, ..., 0.9
    run_ticks(pipeline, panda, period * np.arange(7))  # executed 0 .. 0.30
    # The camera frame is 0.03 s old at the request, and the robot is 0.01 rad off the plan in every arm joint.
    state = panda.home.copy()
    state[:7] += 0.01
    batch, request = pipeline.prepare(observe(panda, state, 0.32), now=0.35)
    prefix = request.prefix
    # Policy steps at 0.32, 0.42, ..., 0.82 lie within the queue (last step 0.9); 0.92 does not.
    times = 0.32 + POLICY_DT * np.arange(6)
    assert prefix.actions.shape == (6, 32) and prefix.actions.dtype == np.float32
    np.testing.assert_allclose(prefix.actions[:, :7], np.repeat((times - 0.01)[:, None], 7, axis=1), atol=1e-6)
    np.testing.assert_allclose(prefix.actions[:, 7], times, atol=1e-6)  # the gripper's 0..1, absolute
    assert not prefix.actions[:, 8:].any(), "padding stays zero"
    # No latency measured yet (the first chunk came at once): only the frame's age, 0.03 s, rounds up to 1 step.
    assert prefix.inference_delay_steps == 1
    assert prefix.execution_horizon == CHUNK - 2  # the threshold, 4 ticks = 0.2 s, is 2 policy steps
    # The policy's units come back unchanged: the prefix, executed as a chunk, is the old plan in joint units.
    targets = pipeline.adapter.actions_to_robot(prefix.actions, request.state)
    np.testing.assert_allclose(targets[:, :7], panda.home[:7] + times[:, None], atol=1e-6)


def test_rtc_inference_delay_counts_the_measured_latency(panda):
    pipeline = make_pipeline(panda, merge=MergeStrategy.RTC, action_dt_s=POLICY_DT, refill_threshold_steps=4)
    pipeline.reset(panda.home)
    period = panda.control_period_s
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0), now=0.0)
    pipeline.accept_chunk(ramp_actions(panda), request, now=0.0)
    run_ticks(pipeline, panda, period * np.arange(7))
    _, request = pipeline.prepare(observe(panda, panda.home, 0.35), now=0.35)
    assert request.prefix.inference_delay_steps == 0
    # That chunk arrives 0.15 s after it was asked for; the next prefix expects as much.
    run_ticks(pipeline, panda, 0.35 + period * np.arange(3))
    pipeline.accept_chunk(ramp_actions(panda), request, now=0.5)
    assert pipeline.expected_latency_s == pytest.approx(0.15)
    run_ticks(pipeline, panda, [0.5, 0.55])
    _, request = pipeline.prepare(observe(panda, panda.home, 0.58), now=0.6)
    assert request.prefix.inference_delay_steps == math.ceil((0.6 - 0.58 + 0.15) / POLICY_DT) == 2


def test_rtc_chunk_replaces_the_queue_from_the_seam_without_blending(panda):
    queues = {}
    for merge in (MergeStrategy.RTC, MergeStrategy.REPLACE, MergeStrategy.BLEND):
        pipeline = make_pipeline(panda, merge=merge, action_dt_s=POLICY_DT)
        pipeline.reset(panda.home)
        _, request = pipeline.prepare(observe(panda, panda.home, 0.0), now=0.0)
        pipeline.accept_chunk(ramp_actions(panda), request, now=0.0)
        run_ticks(pipeline, panda, [0.0, 0.05, 0.1])
        _, request = pipeline.prepare(observe(panda, panda.home, 0.15), now=0.15)
        receipt = pipeline.accept_chunk(np.zeros((CHUNK, 32), dtype=np.float32), request, now=0.2)
        queues[merge] = pipeline.scheduler.queued(0.2)
        assert receipt.dropped_late_steps == 1 and (receipt.merged_steps == 0) == (merge is not MergeStrategy.BLEND)
    for rtc, replace in zip(queues[MergeStrategy.RTC], queues[MergeStrategy.REPLACE], strict=True):
        np.testing.assert_array_equal(rtc, replace)
    np.testing.assert_allclose(queues[MergeStrategy.RTC][1][:, :7], np.repeat(panda.home[None, :7], 18, axis=0))
    assert not np.allclose(queues[MergeStrategy.BLEND][1], queues[MergeStrategy.RTC][1])


def test_rtc_without_prefix_support_falls_back_to_replace_with_one_warning(panda):
    with pytest.warns(RuntimeWarning, match="merge 'rtc' needs a policy that continues"):
        pipeline = make_pipeline(panda, merge="rtc", supports_prefix=False)
    assert pipeline.merge is MergeStrategy.REPLACE
    pipeline.reset(panda.home)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0))
    pipeline.accept_chunk(ramp_actions(panda), request, now=0.0)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.05), now=0.05)
    assert request.prefix is None


@pytest.mark.parametrize("merge", [MergeStrategy.REPLACE, MergeStrategy.BLEND, MergeStrategy.ENSEMBLE])
def test_other_merges_never_build_a_prefix(panda, merge):
    pipeline = make_pipeline(panda, merge=merge)
    pipeline.reset(panda.home)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0))
    pipeline.accept_chunk(ramp_actions(panda), request, now=0.0)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.05), now=0.05)
    assert request.prefix is None and pipeline.merge is merge


def test_hold_brakes_and_leaves_the_queue_alone(panda):
    pipeline = make_pipeline(panda)
    pipeline.reset(panda.home)
    _, request = pipeline.prepare(observe(panda, panda.home, 0.0))
    pipeline.accept_chunk(ramp_actions(panda), request, now=0.0)
    before = pipeline.scheduler.queued(0.0)
    command = pipeline.step(0.0, measured=panda.home, observation_stamp=0.0, hold=True)
    assert command.report.held and "no_action_hold" in command.report.interventions
    np.testing.assert_allclose(command.positions, panda.home)
    for kept, queued in zip(before, pipeline.scheduler.queued(0.0), strict=True):
        np.testing.assert_array_equal(kept, queued)


# -- the stamped lookahead (PipelineConfig.lookahead_steps) -------------------------------------------------------


def _sine(times: np.ndarray, home: np.ndarray, start: float) -> np.ndarray:
    """0.3 rad, 0.5 Hz on the arm joints (all but the last), from rest offset."""
    out = np.tile(home, (len(times), 1))
    out[:, :-1] += 0.3 * np.sin(np.pi * (np.asarray(times)[:, None] - start))
    return out


def _stream(embodiment, *, jitter_s: float, gap_s: float, seconds: float = 4.0, start: float = 100.0):
    """Tick a lookahead pipeline along a sine (chunks of one second, refilled at half), with ticks late by up to
    `jitter_s` and a `gap_s` pause each second; yields (arrival time, command) per tick."""
    period = embodiment.control_period_s
    chunk = round(1 / period)
    features = PolicyFeatures(state_dim=len(embodiment.joint_names), action_dim=len(embodiment.joint_names),
                              chunk_size=chunk, action_dt_s=period, camera_keys=())
    pipeline = ActionPipeline(embodiment, features, PipelineConfig(lookahead_steps=10))
    pipeline.reset(_sine(np.array([start]), embodiment.home, start)[0])
    rng = np.random.default_rng(0)
    for tick in range(round(seconds / period)):
        nominal = start + tick * period
        if (nominal - start) % 1.0 < gap_s:
            continue
        now = nominal + rng.uniform(0, jitter_s)
        if pipeline.scheduler.needs_refill(now):
            times = now + np.arange(chunk) * period
            pipeline.scheduler.add_chunk(_sine(times, embodiment.home, start), observation_stamp=now, dt=period,
                                         now=now)
        yield now, pipeline.step(now, measured=pipeline.safety.last_command, observation_stamp=now), pipeline


def _follow(messages, times):
    """What JTC commands at `times`: the spline of the last message received (arrival = its tick + 1 ms)."""
    out, k, sampler = [], 0, None
    for t in times:
        while k < len(messages) and messages[k][0] + 0.001 <= t:
            trajectory = messages[k][1]
            sampler = TrajectorySampler(trajectory, start_time=trajectory.stamp,
                                        start_positions=trajectory.points[0].positions)
            k += 1
        out.append(sampler.sample(t)[0])
    return np.array(out)


@pytest.mark.parametrize(("jitter_s", "gap_s"), [(0.0, 0.0), (0.015, 0.1), (0.03, 0.1)])
def test_lookahead_stream_follows_the_plan_through_jitter_and_gaps(jitter_s, gap_s):
    so101 = load_embodiment("so101")
    messages = [(now, command.lookahead) for now, command, _ in _stream(so101, jitter_s=jitter_s, gap_s=gap_s)]
    for _, trajectory in messages:
        assert trajectory.stamp > 0 and np.all(trajectory.points[-1].velocities == 0.0)
    times = np.arange(101.0, 103.9, 0.002)  # a 500 Hz controller, after the first second
    followed = _follow(messages, times)
    error = np.abs(followed - _sine(times, so101.home, 100.0))
    # Linear resampling of a 30 Hz chunk costs ~0.4 mrad; jitter and gaps add little (without a lookahead they
    # cost 40-170 mrad: docs/ros2-control.md).
    assert error.max() < 0.004, error.max()
    speed = np.abs(np.diff(followed, axis=0)) / 0.002
    assert np.all(speed.max(axis=0) <= so101.velocity_limits)


def test_lookahead_spline_keeps_the_velocity_limit_when_the_filter_saturates():
    """A far jump: the filter runs at its (reduced) limit, and the cubic between its steps stays within the
    robot's velocity limit."""
    so101 = load_embodiment("so101")
    period = so101.control_period_s
    features = PolicyFeatures(state_dim=6, action_dim=6, chunk_size=30, action_dt_s=period, camera_keys=())
    pipeline = ActionPipeline(so101, features, PipelineConfig(lookahead_steps=10))
    home = so101.home
    pipeline.reset(home)
    target = home.copy()
    target[0] += 1.5
    pipeline.scheduler.add_chunk(np.tile(target, (30, 1)), observation_stamp=10.0, dt=period, now=10.0)
    messages = []
    for k in range(25):
        now = 10.0 + k * period
        messages.append((now, pipeline.step(now, measured=pipeline.safety.last_command, observation_stamp=now)
                         .lookahead))
    times = np.arange(10.002, 10.0 + 25 * period, 0.001)
    followed = _follow(messages, times)
    speed = np.abs(np.diff(followed[:, 0])) / 0.001
    assert speed.max() > 0.9 * so101.velocity_limits[0]  # it does run near the limit
    assert speed.max() <= so101.velocity_limits[0] + 1e-9


def test_hold_command_brakes_from_the_stream_to_rest_within_the_limits():
    so101 = load_embodiment("so101")
    period = so101.control_period_s
    ticks = list(_stream(so101, jitter_s=0.0, gap_s=0.0, seconds=1.5))
    now, command, pipeline = ticks[-1]
    hold = pipeline.hold_command(now + period, measured=command.positions)
    assert hold.report.held and hold.lookahead is not None
    rows = np.array([p.positions for p in hold.lookahead.points])
    # It starts where the last lookahead put the arm: its first row is that lookahead's row for the same time.
    last = command.lookahead
    np.testing.assert_allclose(rows[0], last.points[1].positions)
    velocities = np.diff(rows, axis=0) / period
    assert np.all(np.abs(velocities) <= so101.velocity_limits + 1e-9)
    assert np.all(np.abs(np.diff(velocities, axis=0)) <= so101.acceleration_limits * period + 1e-9)
    np.testing.assert_array_equal(velocities[-1], 0.0)
    np.testing.assert_array_equal(hold.positions, rows[-1])


def test_lookahead_steps_must_be_positive():
    with pytest.raises(VlaRosError, match="lookahead_steps"):
        PipelineConfig(lookahead_steps=0)
