"""The scripted experts solve their tasks in closed loop, smoothly, deterministically, and recover from upsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_ros.core.trajectory import build_trajectory
from vla_ros.sim.experts import ScriptedExpert
from vla_ros.sim.tasks import PickTask, Task, TouchTask
from vla_ros.sim.world import SimWorld

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "robots"
ROBOTS = ("so101", "panda")
HORIZON = 30
LIMIT_FRACTION = 0.6  # of the YAML limits: what a downstream safety filter must never have to clamp


def control_period_s(robot: str) -> float:
    config = yaml.safe_load((CONFIG_DIR / f"{robot}.yaml").read_text(encoding="utf-8"))
    return 1.0 / config["control_rate_hz"]


@dataclass
class Episode:
    success: bool = False
    commands: list[np.ndarray] = field(default_factory=list)  # (D,) each, one per control tick


def run_episode(
    world: SimWorld,
    task: Task,
    seed: int,
    *,
    whole_chunks: bool = False,
    expert: ScriptedExpert | None = None,
    reset: bool = True,
) -> Episode:
    """Closed loop: re-plan every HORIZON/2 ticks and send either each tick's target or the whole chunk."""
    if reset:
        world.reset(task, seed)
    expert = expert or ScriptedExpert(world, task)
    dt = control_period_s(world.robot)
    replan_every = HORIZON // 2
    episode = Episode()
    start = world.time
    for step in range(round(task.max_duration_s / dt)):
        if step % replan_every == 0:
            chunk = expert.plan(HORIZON, dt)
            if whole_chunks:
                world.send_trajectory(build_trajectory(world.joint_names, chunk, dt))
        target = chunk[step % replan_every]
        if not whole_chunks:
            world.send_trajectory(build_trajectory(world.joint_names, target, dt))
        episode.commands.append(target)
        world.advance(dt)
        if task.is_success(world):
            episode.success = True
            break
    assert world.time - start <= task.max_duration_s + dt
    return episode


@pytest.fixture(scope="module", params=ROBOTS)
def world(request) -> SimWorld:
    return SimWorld(request.param, render=False)


@pytest.mark.parametrize("task", [TouchTask("red"), PickTask("green")], ids=lambda task: task.instruction)
@pytest.mark.parametrize("seed", range(5))
def test_the_expert_succeeds_streaming_one_target_per_tick(world, task, seed):
    assert run_episode(world, task, seed).success


@pytest.mark.parametrize("task", [TouchTask("blue"), PickTask("red")], ids=lambda task: task.instruction)
def test_the_expert_succeeds_sending_whole_chunks(world, task):
    assert run_episode(world, task, seed=5, whole_chunks=True).success


def test_expert_motion_stays_within_60_percent_of_the_limits(world):
    dt = control_period_s(world.robot)
    velocity_limits = np.array(world.sim_robot.velocity_limits)
    acceleration_limits = np.array(world.sim_robot.acceleration_limits)
    for seed in range(3):
        commands = np.array(run_episode(world, PickTask("blue"), seed).commands)
        velocities = np.diff(commands, axis=0) / dt
        accelerations = np.diff(velocities, axis=0) / dt
        assert np.all(np.abs(velocities) <= LIMIT_FRACTION * velocity_limits)
        assert np.all(np.abs(accelerations) <= LIMIT_FRACTION * acceleration_limits)


def test_targets_stay_inside_the_joint_ranges(world):
    lower, upper = np.array([world.model.joint(name).range for name in world.joint_names]).T
    commands = np.array(run_episode(world, PickTask("red"), seed=4).commands)
    assert np.all((commands >= lower) & (commands <= upper))


def test_the_same_seed_gives_the_same_episode(world):
    first = run_episode(world, PickTask("green"), seed=9)
    second = run_episode(world, PickTask("green"), seed=9)
    np.testing.assert_array_equal(np.array(first.commands), np.array(second.commands))


def test_plans_are_consistent_across_replanning(world):
    task = PickTask("red")
    world.reset(task, seed=0)
    expert = ScriptedExpert(world, task)
    dt = 0.05  # a whole number of physics steps, so that the world's clock lands exactly on the ticks
    first = expert.plan(HORIZON, dt)
    assert first.shape == (HORIZON, len(world.joint_names))
    for target in first[:10]:
        world.send_trajectory(build_trajectory(world.joint_names, target, dt))
        world.advance(dt)
    # Row i of a plan is the target for (i + 1) ticks ahead, so after 10 ticks the plans line up 10 rows apart.
    np.testing.assert_allclose(expert.plan(HORIZON - 10, dt), first[10:], atol=1e-9)


def test_the_expert_picks_the_cube_up_again_after_it_is_dropped(world):
    task = PickTask("blue")
    world.reset(task, seed=3)
    expert = ScriptedExpert(world, task)
    assert run_episode(world, task, seed=3, expert=expert, reset=False).success
    world.place_cube("blue", np.array([*world.cube_pose("blue")[0][:2], world.cube_size_m / 2]))
    assert not task.is_success(world)
    assert run_episode(world, task, seed=3, expert=expert, reset=False).success


def test_the_expert_recovers_when_something_else_moved_the_arm(world):
    task = TouchTask("green")
    world.reset(task, seed=6)
    expert = ScriptedExpert(world, task)
    dt = control_period_s(world.robot)
    expert.plan(HORIZON, dt)
    elsewhere = world.joint_positions()
    elsewhere[0] += 0.6  # turn the base away, as another controller or a person might
    world.send_trajectory(build_trajectory(world.joint_names, elsewhere, 1.0))
    world.advance(1.5)
    assert run_episode(world, task, seed=6, expert=expert, reset=False).success


def test_a_new_expert_per_episode_and_a_reused_one_act_alike(world):
    task = TouchTask("red")
    expert = ScriptedExpert(world, task)
    run_episode(world, task, seed=1, expert=expert)
    expert.reset()
    reused = run_episode(world, task, seed=2, expert=expert)
    fresh = run_episode(world, task, seed=2)
    np.testing.assert_array_equal(np.array(reused.commands), np.array(fresh.commands))


def test_experts_work_with_every_palette_colour_as_target():
    world = SimWorld("so101", render=False, colors=("yellow", "orange", "purple", "red"))
    for seed, color in enumerate(("yellow", "orange", "purple")):
        assert run_episode(world, TouchTask(color), seed).success
