"""PolicyRunner: the policy node's logic without ROS, closed around the MuJoCo world with inference in a thread."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.observation import AssemblerConfig
from vla_ros.core.pipeline import PipelineConfig
from vla_ros.core.runner import PolicyRunner
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.factory import make_policy
from vla_ros.sim.tasks import parse_instruction
from vla_ros.sim.world import SimWorld

TOPIC = "/joint_states"


class FailingFirst:
    """Wraps a policy so that its first `failures` calls raise, as a crashed model server would."""

    def __init__(self, policy, failures: int):
        self._policy, self._failures = policy, failures
        self.metadata = policy.metadata

    def reset(self, *, seed=None):
        self._policy.reset()

    def predict_chunk(self, observation, prefix=None):
        if self._failures > 0:
            self._failures -= 1
            raise RuntimeError("model server unreachable")
        return self._policy.predict_chunk(observation, prefix)


class PrefixRecorder:
    """Wraps a policy as one that accepts a real-time-chunking prefix, and records each prefix and chunk."""

    def __init__(self, policy):
        self._policy = policy
        self.metadata = replace(policy.metadata, supports_prefix=True)
        self.calls = []  # (prefix, returned actions)

    def reset(self, *, seed=None):
        self._policy.reset()

    def predict_chunk(self, observation, prefix=None):
        actions = self._policy.predict_chunk(observation, prefix)
        self.calls.append((prefix, actions))
        return actions


def wait_idle(runner: PolicyRunner, timeout_s: float = 10.0) -> None:
    # The simulated clock stands still while the worker thinks, as if inference took no simulated time.
    deadline = time.monotonic() + timeout_s
    while runner.inference_in_flight and time.monotonic() < deadline:
        time.sleep(0.001)


def closed_loop(runner: PolicyRunner, world: SimWorld, task, *, ticks: int):
    period = runner.embodiment.control_period_s
    reasons = []
    for _ in range(ticks):
        now = world.time + 1.0  # stamps start at 1 s: a ROS clock never reads 0 once running
        assert runner.add_joint_state(TOPIC, now, world.joint_names, world.joint_positions()) is None
        result = runner.tick(now)
        wait_idle(runner)
        reasons.append(result.hold_reason)
        if result.command is not None and result.command.send:
            world.send_trajectory(result.command.trajectory)
        world.advance(period)
        if task.is_success(world):
            return True, reasons
    return False, reasons


@pytest.fixture
def setup():
    embodiment = load_embodiment("so101")
    world = SimWorld("so101", render=False)
    task = parse_instruction("touch the green cube")
    world.reset(task, seed=3)
    # No cameras: the expert plans from ground truth, and the adapter fills the policy's images with masked zeros.
    assembler = AssemblerConfig.from_embodiment(embodiment, cameras=())
    return embodiment, world, task, assembler


def test_runner_closes_the_loop_with_inference_in_a_thread(setup):
    embodiment, world, task, assembler = setup
    runner = PolicyRunner(embodiment, make_policy("expert", embodiment=embodiment, world=world),
                          assembler_config=assembler, instruction=task.instruction)
    try:
        success, reasons = closed_loop(runner, world, task, ticks=int(task.max_duration_s * embodiment.control_rate_hz))
    finally:
        runner.close()
    assert success
    assert runner.stats.chunks_received >= 2 and runner.stats.policy_errors == 0
    assert reasons[0] == "waiting for the policy" and "" in reasons  # held until the first chunk, then drove


def test_policy_errors_hold_and_recover(setup):
    embodiment, world, task, assembler = setup
    policy = FailingFirst(make_policy("expert", embodiment=embodiment, world=world), failures=3)
    runner = PolicyRunner(embodiment, policy, assembler_config=assembler, instruction=task.instruction)
    try:
        start = world.joint_positions()
        success, _ = closed_loop(runner, world, task, ticks=4)  # a result is merged at the tick after it arrives
        np.testing.assert_allclose(world.joint_positions(), start, atol=1e-3)  # held still while failing
        assert runner.stats.policy_errors == 3 and "model server unreachable" in runner.last_error
        success, _ = closed_loop(runner, world, task, ticks=int(task.max_duration_s * embodiment.control_rate_hz))
    finally:
        runner.close()
    assert success and runner.stats.chunks_received >= 1


def test_pause_holds_and_resume_continues(setup):
    embodiment, world, task, assembler = setup
    runner = PolicyRunner(embodiment, make_policy("expert", embodiment=embodiment, world=world),
                          assembler_config=assembler, instruction=task.instruction)
    try:
        closed_loop(runner, world, task, ticks=20)
        runner.pause()
        _, reasons = closed_loop(runner, world, task, ticks=30)
        assert set(reasons) == {"paused"}
        velocity = world.joint_velocities()
        assert np.abs(velocity).max() < 0.05, "the arm must come to rest while paused"
        runner.resume()
        success, _ = closed_loop(runner, world, task, ticks=int(task.max_duration_s * embodiment.control_rate_hz))
    finally:
        runner.close()
    assert success


def test_dropped_joint_state_is_reported(setup):
    embodiment, world, task, assembler = setup
    runner = PolicyRunner(embodiment, make_policy("expert", embodiment=embodiment, world=world),
                          assembler_config=assembler)
    try:
        drop = runner.add_joint_state(TOPIC, 1.0, ("elbow",), [np.nan])
        assert drop is not None and drop.reason == "unknown_joint_names"
        assert runner.dropped_messages == 1
        result = runner.tick(1.0)
        assert result.command is None and "waiting" in result.hold_reason
    finally:
        runner.close()


def test_rtc_prefix_reaches_the_policy_aligned_and_in_policy_units(setup):
    embodiment, world, task, assembler = setup
    policy = PrefixRecorder(make_policy("expert", embodiment=embodiment, world=world))
    runner = PolicyRunner(embodiment, policy, pipeline_config=PipelineConfig(merge=MergeStrategy.RTC),
                          assembler_config=assembler, instruction=task.instruction)
    try:
        success, _ = closed_loop(runner, world, task, ticks=int(task.max_duration_s * embodiment.control_rate_hz))
    finally:
        runner.close()
    assert success and runner.pipeline.merge is MergeStrategy.RTC
    assert policy.calls[0][0] is None, "the first chunk has nothing to continue"
    prefixes = policy.calls[1:]
    assert prefixes and all(prefix is not None for prefix, _ in prefixes)
    features = policy.metadata.features
    threshold = features.chunk_size // 2
    for prefix, _ in prefixes:
        # Requested with `threshold` steps left; a result is merged one tick after it was asked for, a tick being
        # 1/30 s give or take a physics step (2 ms): one step of delay, or two when the tick ran long.
        assert len(prefix.actions) == threshold and prefix.actions.shape[1] == features.action_dim
        assert prefix.execution_horizon == features.chunk_size - threshold
        assert prefix.inference_delay_steps in (1, 2)
    # The scripted expert follows one script, so its next chunk continues the old one: the prefix must match it
    # step for step (a prefix off by one step, or in joint units, would be off by a step's motion or more).
    errors = [np.abs(prefix.actions - actions[: len(prefix.actions)]).max() for prefix, actions in prefixes]
    assert np.median(errors) < 1e-3, errors
