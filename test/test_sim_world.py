"""SimWorld: construction errors, resets, cube layouts, time keeping and camera images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.core.trajectory import TrajectoryError, build_trajectory
from vla_ros.sim.palette import CUBE_COLORS
from vla_ros.sim.tasks import PickTask, TaskError, TouchTask
from vla_ros.sim.world import SimWorld

ROBOTS = ("so101", "panda")


@pytest.fixture(scope="module", params=ROBOTS)
def world(request) -> SimWorld:
    return SimWorld(request.param, render=False)


@pytest.fixture(scope="module", params=ROBOTS)
def rendering_world(request):
    with SimWorld(request.param, camera_size=(240, 320)) as world:
        world.reset(PickTask("red"), seed=0)
        yield world


def layout(world: SimWorld) -> dict[str, np.ndarray]:
    return {color: world.cube_pose(color)[0] for color in world.cube_colors}


def test_reset_puts_the_arm_home_at_time_zero(world):
    world.advance(0.3)
    world.reset(TouchTask("red"), seed=1)
    assert world.time == 0.0
    np.testing.assert_array_equal(world.joint_positions(), world.sim_robot.home)
    np.testing.assert_array_equal(world.joint_velocities(), np.zeros(len(world.joint_names)))


def test_the_same_seed_gives_the_same_layout_and_other_seeds_other_layouts(world):
    world.reset(TouchTask("red"), seed=7)
    first = layout(world)
    world.reset(PickTask("red"), seed=7)
    again = layout(world)
    world.reset(TouchTask("red"), seed=8)
    other = layout(world)
    for color in world.cube_colors:
        np.testing.assert_array_equal(first[color], again[color])
        assert not np.array_equal(first[color], other[color])


def test_cubes_rest_on_the_table_inside_the_workspace_and_apart(world):
    workspace = world.sim_robot.workspace
    for seed in range(20):
        world.reset(PickTask("green"), seed=seed)
        positions = layout(world)
        for position in positions.values():
            assert position[2] == pytest.approx(world.cube_size_m / 2)
            assert workspace.min_radius_m <= math.hypot(position[0], position[1]) <= workspace.max_radius_m
            assert abs(math.atan2(position[1], position[0])) <= workspace.max_azimuth_rad
        centres = list(positions.values())
        for i, a in enumerate(centres):
            for b in centres[i + 1 :]:
                assert np.linalg.norm(a[:2] - b[:2]) >= workspace.min_spacing_m


def test_the_arm_holds_home_and_the_cubes_stay_put(world):
    world.reset(PickTask("red"), seed=3)
    cubes_before = layout(world)
    world.advance(2.0)
    np.testing.assert_allclose(world.joint_positions(), world.sim_robot.home, atol=1e-3)
    for color, position in layout(world).items():
        np.testing.assert_allclose(position, cubes_before[color], atol=1e-3)


def test_repeated_short_advances_keep_time_without_drift(world):
    world.reset(TouchTask("red"), seed=0)
    for _ in range(90):
        world.advance(1 / 30)
    assert world.time == pytest.approx(3.0, abs=world.model.opt.timestep)


def test_every_palette_colour_can_be_a_cube_and_a_target():
    world = SimWorld("panda", render=False, colors=tuple(CUBE_COLORS))
    for seed, color in enumerate(CUBE_COLORS):
        world.reset(TouchTask(color), seed=seed)
        assert world.cube_pose(color)[0][2] == pytest.approx(world.cube_size_m / 2)


def test_unknown_repeated_or_missing_colours_are_rejected():
    with pytest.raises(ConfigError, match="no cube colour 'rde'.*Did you mean 'red'"):
        SimWorld("so101", render=False, colors=("rde", "green"))
    with pytest.raises(ConfigError, match="colours repeat"):
        SimWorld("so101", render=False, colors=("red", "red"))
    world = SimWorld("so101", render=False, colors=("red", "green"))
    with pytest.raises(TaskError, match="needs a blue cube, but the world has only"):
        world.reset(TouchTask("blue"), seed=0)
    with pytest.raises(ConfigError, match="no blue cube"):
        world.cube_pose("blue")


def test_trajectories_must_name_the_worlds_joints(world):
    names = ("elbow",) + world.joint_names[1:]
    with pytest.raises(TrajectoryError, match=r"unknown joints \['elbow'\]"):
        world.send_trajectory(build_trajectory(names, np.zeros(len(names)), 0.1))


def test_cameras_give_rgb_images_of_the_requested_size(rendering_world):
    images = rendering_world.render_cameras()
    assert set(images) == {"front", "wrist"}
    for image in images.values():
        assert image.shape == (240, 320, 3)
        assert image.dtype == np.uint8


def test_default_images_are_640_by_480():
    with SimWorld("so101") as world:
        assert all(image.shape == (480, 640, 3) for image in world.render_cameras().values())


def test_the_front_camera_sees_the_cubes_and_the_cameras_see_different_things(rendering_world):
    images = rendering_world.render_cameras()
    front = images["front"].astype(int)
    for channel in range(3):  # one cube per primary colour: strongly red, green and blue pixels
        others = [c for c in range(3) if c != channel]
        dominant = (front[..., channel] > 120) & (front[..., others] < 90).all(axis=-1)
        assert dominant.sum() >= 10, f"no cube of colour channel {channel} in the front image"
    assert images["front"].std() > 20
    assert np.abs(images["front"].astype(int) - images["wrist"]).mean() > 20


def test_the_wrist_camera_moves_with_the_arm(rendering_world):
    before = rendering_world.render_cameras()["wrist"]
    target = rendering_world.joint_positions()
    target[0] += 0.4  # turn the base
    rendering_world.send_trajectory(build_trajectory(rendering_world.joint_names, target, 0.5))
    rendering_world.advance(0.8)
    after = rendering_world.render_cameras()["wrist"]
    assert np.abs(after.astype(int) - before).mean() > 5


def test_a_world_without_rendering_refuses_images(world):
    with pytest.raises(ConfigError, match="render=False"):
        world.render_cameras()
