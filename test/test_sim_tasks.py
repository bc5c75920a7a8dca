"""Instructions parse into tasks; success detectors fire exactly when the task is done."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.core.trajectory import build_trajectory
from vla_ros.sim.experts import ScriptedExpert
from vla_ros.sim.palette import CUBE_COLORS
from vla_ros.sim.tasks import TASK_TYPES, PickTask, TaskError, TouchTask, parse_instruction
from vla_ros.sim.world import SimWorld


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pick up the red cube", PickTask("red")),
        ("Touch the Blue cube.", TouchTask("blue")),
        ("  touch   the green block! ", TouchTask("green")),
    ],
)
def test_instructions_parse_into_tasks(text, expected):
    assert parse_instruction(text) == expected


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize("color", CUBE_COLORS)
def test_every_task_parses_back_from_its_own_instruction(task_type, color):
    task = task_type(color)
    assert parse_instruction(task.instruction) == task


def test_unknown_instructions_list_the_known_ones():
    with pytest.raises(TaskError, match=r"no task for the instruction 'stack the red cube'.*'touch the <colour> cube'"):
        parse_instruction("stack the red cube")


def test_unknown_colours_list_the_palette():
    with pytest.raises(TaskError, match=r"no cube colour 'rde'.*blue.*Did you mean 'red'"):
        parse_instruction("touch the rde cube")


def test_timeouts_leave_room_for_the_longer_task():
    assert 0 < TouchTask.max_duration_s < PickTask.max_duration_s <= 60


@pytest.fixture(scope="module")
def world() -> SimWorld:
    """SO-101 at home: its jaws (gripper 0) are closer together than its 2.8 cm cubes are wide."""
    return SimWorld("so101", render=False)


def cube_at_the_jaws(world: SimWorld, color: str) -> None:
    """Put the cube between the SO-101's jaws, pressing into both."""
    tcp_position, tcp_rotation = world.tcp_pose()
    # The fixed jaw's face is 18 mm from the TCP along -y: shift the cube 5 mm its way, 1 mm into it.
    world.place_cube(color, tcp_position - 0.005 * tcp_rotation[:, 1])


def test_nothing_succeeds_after_a_reset(world):
    for seed in range(5):
        world.reset(TouchTask("red"), seed=seed)
        assert not TouchTask("red").is_success(world)
        assert not PickTask("red").is_success(world)


def test_touch_succeeds_when_the_target_touches_the_gripper(world):
    world.reset(TouchTask("red"), seed=0)
    cube_at_the_jaws(world, "red")
    assert TouchTask("red").is_success(world)


def test_touching_a_distractor_is_not_touching_the_target(world):
    world.reset(TouchTask("red"), seed=0)
    cube_at_the_jaws(world, "green")
    assert TouchTask("green").is_success(world)
    assert not TouchTask("red").is_success(world)


def test_pick_succeeds_when_the_target_is_held_above_the_table(world):
    world.reset(PickTask("red"), seed=0)
    cube_at_the_jaws(world, "red")
    assert world.cube_height_above_rest("red") >= PickTask.LIFT_HEIGHT_M
    assert world.gripper_holds("red")
    assert PickTask("red").is_success(world)


def test_pick_fails_for_a_cube_in_the_air_that_the_gripper_does_not_touch(world):
    world.reset(PickTask("red"), seed=0)
    world.place_cube("red", np.array([0.2, -0.15, 0.2]))
    assert world.cube_height_above_rest("red") > PickTask.LIFT_HEIGHT_M
    assert not PickTask("red").is_success(world)


def test_pick_fails_for_a_touched_cube_on_the_table(world):
    touch = TouchTask("red")
    world.reset(touch, seed=0)
    expert = ScriptedExpert(world, touch)
    dt = 1 / 30
    while not touch.is_success(world) and world.time < touch.max_duration_s:
        world.send_trajectory(build_trajectory(world.joint_names, expert.plan(1, dt), dt))
        world.advance(dt)
    assert world.gripper_touches("red")
    assert world.cube_height_above_rest("red") < 0.005
    assert not PickTask("red").is_success(world)
