"""ActionPipeline: the per-tick path adapter -> scheduler -> safety -> trajectory, on plain data."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.features import PolicyFeatures, RobotObservation
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy

CHUNK = 10


@pytest.fixture
def panda():
    return load_embodiment("panda")


def make_pipeline(embodiment, **config) -> ActionPipeline:
    features = PolicyFeatures(state_dim=32, action_dim=32, chunk_size=CHUNK, action_dt_s=embodiment.control_period_s,
                              camera_keys=("front", "wrist"), image_size=(64, 64))
    return ActionPipeline(embodiment, features, PipelineConfig(**config))


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
