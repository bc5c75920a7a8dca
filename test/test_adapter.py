"""The adapter: joint order by name, units both ways, delta actions against the right state, padding, cameras."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import ConfigError, ObservationError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyFeatures, RobotObservation, image_key, image_mask_key


def features(embodiment, *, width=32, chunk=4, cameras=("front", "wrist"), image_size=None) -> PolicyFeatures:
    return PolicyFeatures(state_dim=width, action_dim=width, chunk_size=chunk,
                          action_dt_s=embodiment.control_period_s, camera_keys=cameras, image_size=image_size)


@pytest.fixture(scope="module")
def so101():
    return load_embodiment("so101")


@pytest.fixture(scope="module")
def panda():
    return load_embodiment("panda")


def test_joint_order_follows_names_whatever_the_reported_order(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    reported = ("panda_finger_joint2",) + tuple(reversed(panda.joint_names))
    values = np.array([0.5] + [float(i) for i in reversed(range(8))])
    assert adapter.select_joints(reported, values).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_missing_joint_is_named(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    with pytest.raises(ObservationError, match=r"\['panda_joint3'\].*missing"):
        adapter.select_joints(tuple(n for n in panda.joint_names if n != "panda_joint3"), np.zeros(7))


def test_names_and_positions_must_agree(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    with pytest.raises(ObservationError, match="8 joint names but positions of shape"):
        adapter.select_joints(panda.joint_names, np.zeros(7))


def test_so101_units_match_lerobot_normalisation(so101):
    adapter = EmbodimentAdapter(so101, features(so101))
    lower, upper = so101.lower_limits, so101.upper_limits
    state = np.array([lower[0], upper[1], (lower[2] + upper[2]) / 2, 0.0, lower[4], so101.grippers[0].open])
    policy = adapter.state_to_policy(state)
    assert policy.dtype == np.float32 and policy.shape == (32,)
    np.testing.assert_allclose(policy[:3], [-100.0, 100.0, 0.0], atol=1e-4)
    assert policy[4] == pytest.approx(-100.0, abs=1e-4)
    assert policy[5] == pytest.approx(0.0, abs=1e-6)  # gripper open -> 0
    closed = adapter.state_to_policy(np.append(state[:5], so101.grippers[0].closed))
    assert closed[5] == pytest.approx(1.0)  # gripper closed -> 1
    assert not policy[6:].any()  # zero padding


def test_deg_unit():
    embodiment = load_embodiment("so101")
    from dataclasses import replace

    from vla_ros.core.embodiment import PolicyUnit

    joints = tuple(replace(j, policy_unit=PolicyUnit.DEG) if j.name != "gripper" else j for j in embodiment.joints)
    adapter = EmbodimentAdapter(replace(embodiment, joints=joints), features(embodiment))
    assert adapter.state_to_policy(np.array([math.pi / 2, 0, 0, 0, 0, 0]))[0] == pytest.approx(90.0)


def test_delta_actions_use_the_state_captured_with_the_observation(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    state_at_observation = panda.home.copy()
    actions = np.zeros((2, 32), dtype=np.float32)
    actions[0, :7] = 0.1  # +0.1 rad on every arm joint
    actions[1, :7] = 0.2
    actions[:, 7] = [0.0, 1.0]  # gripper absolute: open, then closed
    targets = adapter.actions_to_robot(actions, state_at_observation)
    np.testing.assert_allclose(targets[0, :7], state_at_observation[:7] + 0.1, atol=1e-6)
    np.testing.assert_allclose(targets[1, :7], state_at_observation[:7] + 0.2, atol=1e-6)
    assert targets[:, 7].tolist() == pytest.approx([0.04, 0.0])
    # A different captured state moves the delta joints, never the absolute gripper.
    moved = adapter.actions_to_robot(actions, state_at_observation + 0.5)
    np.testing.assert_allclose(moved[:, :7], targets[:, :7] + 0.5, atol=1e-6)
    np.testing.assert_allclose(moved[:, 7], targets[:, 7])


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["so101", "panda"]), st.integers(0, 2**32 - 1))
def test_robot_to_actions_is_the_inverse_of_actions_to_robot(robot, seed):
    embodiment = load_embodiment(robot)
    adapter = EmbodimentAdapter(embodiment, features(embodiment))
    rng = np.random.default_rng(seed)
    state = rng.uniform(embodiment.lower_limits, embodiment.upper_limits)
    targets = rng.uniform(embodiment.lower_limits, embodiment.upper_limits, size=(5, len(embodiment.joints)))
    actions = adapter.robot_to_actions(targets, state)
    assert actions.shape == (5, 32) and not actions[:, len(embodiment.joints):].any()
    np.testing.assert_allclose(adapter.actions_to_robot(actions, state), targets, atol=1e-4)
    np.testing.assert_allclose(adapter.state_from_policy(adapter.state_to_policy(state)), state, atol=1e-4)


def test_policy_narrower_than_robot_fails_at_start(panda):
    with pytest.raises(ConfigError, match="action_dim is 6, but robot 'panda' has 8 joints"):
        EmbodimentAdapter(panda, PolicyFeatures(state_dim=32, action_dim=6, chunk_size=4, action_dt_s=0.05,
                                                camera_keys=()))


def test_wrong_action_shape_is_refused(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    with pytest.raises(PolicyError, match=r"shape \(4, 8\), expected \(H >= 1, 32\)"):
        adapter.actions_to_robot(np.zeros((4, 8)), panda.home)


def test_observation_images_resized_and_missing_camera_masked(so101):
    adapter = EmbodimentAdapter(so101, features(so101, cameras=("front", "wrist", "top"), image_size=(96, 128)))
    front = np.full((480, 640, 3), 200, dtype=np.uint8)
    observation = RobotObservation(stamp=1.0, joint_names=so101.joint_names, joint_positions=so101.home,
                                   images={"front": front}, instruction="touch the red cube")
    batch, state = adapter.to_policy_observation(observation)
    np.testing.assert_allclose(state, so101.home)
    assert batch[TASK] == "touch the red cube"
    assert batch[STATE].shape == (32,)
    assert batch[image_key("front")].shape == (96, 128, 3) and batch[image_mask_key("front")] is True
    assert (batch[image_key("front")] == 200).all()  # 4:3 into 4:3: no padding
    for missing in ("wrist", "top"):  # wrist: configured but absent; top: robot has no such camera
        assert batch[image_mask_key(missing)] is False
        assert batch[image_key(missing)].shape == (96, 128, 3) and not batch[image_key(missing)].any()


def test_a_policy_that_resizes_frames_itself_gets_them_at_their_native_size(so101):
    """LeRobot checkpoints: the model must see LeRobot's resize of the frame, so the adapter leaves it alone."""
    exact = replace(features(so101, image_size=(32, 32)), image_padding="top_left", resizes_images=True)
    front = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    observation = RobotObservation(stamp=1.0, joint_names=so101.joint_names, joint_positions=so101.home,
                                   images={"front": front}, instruction="touch the red cube")
    batch, _ = EmbodimentAdapter(so101, exact).to_policy_observation(observation)
    assert batch[image_key("front")] is front
    assert batch[image_key("wrist")].shape == (32, 32, 3) and batch[image_mask_key("wrist")] is False
    fast, _ = EmbodimentAdapter(so101, replace(exact, resizes_images=False)).to_policy_observation(observation)
    assert fast[image_key("front")].shape == (32, 32, 3)


def test_bad_image_names_the_camera(so101):
    adapter = EmbodimentAdapter(so101, features(so101))
    observation = RobotObservation(stamp=0.0, joint_names=so101.joint_names, joint_positions=so101.home,
                                   images={"front": np.zeros((3, 480, 640), dtype=np.uint8)})
    with pytest.raises(ObservationError, match=r"camera 'front': expected an \(H, W, 3\) uint8"):
        adapter.to_policy_observation(observation)


def test_inputs_are_not_modified(panda):
    adapter = EmbodimentAdapter(panda, features(panda))
    state = panda.home.copy()
    actions = np.ones((3, 32), dtype=np.float32)
    adapter.actions_to_robot(actions, state)
    assert (actions == 1).all() and np.array_equal(state, panda.home)
