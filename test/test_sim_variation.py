"""SceneVariation: each change reaches the MuJoCo scene by the stated amount, and no variation changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.sim.tasks import TaskError, TouchTask
from vla_ros.sim.variation import Distractor, SceneVariation
from vla_ros.sim.world import SimWorld

SIZE = (96, 128)
ROBOTS = ("so101", "panda")


def _front_pose(world: SimWorld) -> tuple[np.ndarray, np.ndarray]:
    camera = world.model.camera("front").id
    return world.data.cam_xpos[camera].copy(), world.data.cam_xmat[camera].reshape(3, 3).copy()


def _azimuth_elevation_deg(rotation: np.ndarray) -> tuple[float, float]:
    """Where the camera looks (its -z axis): azimuth about the vertical and elevation above the horizontal."""
    look = -rotation[:, 2]
    return math.degrees(math.atan2(look[1], look[0])), math.degrees(math.asin(look[2]))


def _images(world: SimWorld, seed: int = 3) -> dict[str, np.ndarray]:
    world.reset(TouchTask("red"), seed=seed)
    return world.render_cameras()


@pytest.mark.parametrize("robot", ROBOTS)
def test_a_default_variation_renders_and_simulates_exactly_as_none(robot):
    with SimWorld(robot, camera_size=SIZE) as plain, SimWorld(robot, camera_size=SIZE,
                                                              variation=SceneVariation()) as varied:
        for name, image in _images(plain).items():
            np.testing.assert_array_equal(image, _images(varied)[name])
        plain.advance(0.3)
        varied.advance(0.3)
        np.testing.assert_array_equal(plain.data.qpos, varied.data.qpos)
        for field in ("light_pos", "light_dir", "light_diffuse", "light_specular", "cam_pos", "cam_quat"):
            np.testing.assert_array_equal(getattr(plain.model, field), getattr(varied.model, field))


def test_without_a_variation_the_lights_and_camera_are_the_mjcf_s():
    import mujoco

    from vla_ros.sim.world import ASSETS_DIR

    bare = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "so101.xml"))
    with SimWorld("so101", render=False) as world:
        assert world.variation is None
        for field in ("light_pos", "light_dir", "light_diffuse", "cam_pos", "cam_quat"):
            np.testing.assert_array_equal(getattr(world.model, field), getattr(bare, field))
        np.testing.assert_array_equal(world.model.vis.headlight.diffuse, bare.vis.headlight.diffuse)


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_front_camera_moves_and_turns_by_the_stated_amounts(robot):
    variation = SceneVariation(camera_shift_m=(0.02, -0.02, 0.01), camera_pan_deg=3.0, camera_tilt_deg=4.0)
    with SimWorld(robot, camera_size=SIZE) as plain, SimWorld(robot, camera_size=SIZE, variation=variation) as moved:
        plain.reset(TouchTask("red"), seed=0)
        moved.reset(TouchTask("red"), seed=0)
        (position, rotation), (new_position, new_rotation) = _front_pose(plain), _front_pose(moved)
        np.testing.assert_allclose(new_position - position, [0.02, -0.02, 0.01], atol=1e-12)
        assert variation.camera_shift_cm == pytest.approx(3.0)
        azimuth, elevation = _azimuth_elevation_deg(rotation)
        new_azimuth, new_elevation = _azimuth_elevation_deg(new_rotation)
        assert new_azimuth - azimuth == pytest.approx(3.0, abs=1e-6)  # panned left
        assert new_elevation - elevation == pytest.approx(-4.0, abs=1e-6)  # looks further down
        assert abs(new_rotation[2, 0]) < 1e-9  # the image's x axis stays horizontal: no roll
        front, wrist = _images(plain), _images(moved)
        assert np.abs(front["front"].astype(int) - wrist["front"].astype(int)).mean() > 2.0
        np.testing.assert_array_equal(front["wrist"], wrist["wrist"])  # the wrist camera is left as built


def test_lighting_changes_the_lights_by_the_stated_factors_and_darkens_the_image():
    variation = SceneVariation(key_light_scale=0.5, key_light_position_m=(0.6, 0.8, 2.0),
                               key_light_direction=(0.0, 0.0, -2.0), light_tint=(1.0, 0.8, 0.6))
    with SimWorld("panda", camera_size=SIZE) as plain, SimWorld("panda", camera_size=SIZE, variation=variation) as lit:
        key, fill = plain.model.light("key").id, plain.model.light("fill").id
        np.testing.assert_allclose(lit.model.light_diffuse[key], plain.model.light_diffuse[key] * [0.5, 0.4, 0.3],
                                   rtol=1e-6)
        np.testing.assert_allclose(lit.model.light_diffuse[fill], plain.model.light_diffuse[fill] * [1.0, 0.8, 0.6],
                                   rtol=1e-6)
        np.testing.assert_allclose(lit.model.light_pos[key], [0.6, 0.8, 2.0])
        np.testing.assert_allclose(lit.model.light_dir[key], [0.0, 0.0, -1.0])  # normalised
        np.testing.assert_allclose(lit.model.vis.headlight.diffuse, np.asarray(plain.model.vis.headlight.diffuse)
                                   * [1.0, 0.8, 0.6], rtol=1e-6)
        before, after = _images(plain)["front"].astype(float), _images(lit)["front"].astype(float)
        # Blue is tinted most and red least: the image gets darker and warmer.
        assert after[..., 2].mean() < 0.8 * before[..., 2].mean()
        assert after[..., 2].mean() / after[..., 0].mean() < 0.9 * before[..., 2].mean() / before[..., 0].mean()


@pytest.mark.parametrize("robot", ROBOTS)
def test_distractors_rest_on_the_table_apart_from_the_cubes_which_stay_where_the_seed_puts_them(robot):
    variation = SceneVariation(distractors=(Distractor("cylinder", "orange"), Distractor("sphere", "purple"),
                                            Distractor("cube", "purple")))
    with SimWorld(robot, render=False) as plain, SimWorld(robot, render=False, variation=variation) as cluttered:
        spacing = plain.sim_robot.workspace.min_spacing_m
        for seed in range(10):
            plain.reset(TouchTask("green"), seed=seed)
            cluttered.reset(TouchTask("green"), seed=seed)
            cubes = [cluttered.cube_pose(color)[0] for color in cluttered.cube_colors]
            for color, cube in zip(cluttered.cube_colors, cubes, strict=True):
                np.testing.assert_array_equal(cube, plain.cube_pose(color)[0])
            others = [cluttered.distractor_position(i) for i in range(3)]
            points = [p[:2] for p in cubes + others]
            assert min(np.linalg.norm(a - b) for i, a in enumerate(points) for b in points[i + 1:]) >= spacing - 1e-9
            cluttered.advance(0.3)  # at rest on the table: nothing falls or rolls away
            for before, index in zip(others, range(3), strict=True):
                np.testing.assert_allclose(cluttered.distractor_position(index), before, atol=2e-3)
                assert cluttered.distractor_position(index)[2] > 0


def test_distractors_show_in_the_image():
    variation = SceneVariation(distractors=(Distractor("cube", "purple", size_factor=1.5),))
    with SimWorld("panda", camera_size=SIZE) as plain, SimWorld("panda", camera_size=SIZE,
                                                                variation=variation) as cluttered:
        difference = np.abs(_images(plain)["front"].astype(int) - _images(cluttered)["front"].astype(int))
        assert (difference.max(axis=-1) > 40).sum() >= 4  # the purple cube's pixels, where there was table


def test_bad_variations_are_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="shape"):
        Distractor("pyramid", "red")
    with pytest.raises(ConfigError, match="colour 'teal'"):
        Distractor("cube", "teal")
    with pytest.raises(ConfigError, match="a few centimetres"):
        SceneVariation(camera_shift_m=(0.5, 0.0, 0.0))
    with pytest.raises(ConfigError, match="key_light_scale"):
        SceneVariation(key_light_scale=-1.0)
    with SimWorld("so101", render=False, variation=SceneVariation(distractors=(Distractor("cube", "red"),) * 6)
                  ) as crowded, pytest.raises(TaskError, match="cannot place 6 more objects"):
        crowded.reset(TouchTask("red"), seed=0)
