"""The pi0 backends: transformers' format on a tiny random PI0 checkpoint built and saved here (no download, no
network); LeRobot's format against LeRobot's own actions (fixtures made by each LeRobot release, see
test/pi_lerobot_fixtures.py)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any attempt to reach the Hub fails instead of downloading
pytest.importorskip("torch", reason="the pi0 backend needs torch")
pytest.importorskip("transformers", minversion="5.4", reason="the pi0 backend needs transformers>=5.4")

import pi_lerobot_fixtures as fixtures  # noqa: E402

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import CameraSpec, load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, PolicyError  # noqa: E402
from vla_ros.core.features import STATE, image_key, image_mask_key  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.pi0.random_model import random_pi0, save_checkpoint  # noqa: E402

CHUNK = 10


@pytest.fixture(scope="module")
def so101():
    return load_embodiment("so101")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, processor = random_pi0(tiny=True, chunk_size=CHUNK, num_inference_steps=3, camera_keys=("front", "wrist"))
    return save_checkpoint(tmp_path_factory.mktemp("pi0") / "tiny", model, processor)


@pytest.fixture(scope="module")
def policy(checkpoint, so101):
    return make_policy(str(checkpoint), embodiment=so101)


@pytest.fixture(scope="module")
def observation(policy, so101):
    adapter = EmbodimentAdapter(so101, policy.metadata.features)
    batch, _ = adapter.to_policy_observation(so101.example_observation(seed=4, instruction="touch the red cube"))
    return batch


def copy_checkpoint(checkpoint, tmp_path, *, processor_changes=None, config_changes=None, drop=()):
    target = tmp_path / "copy"
    shutil.copytree(checkpoint, target)
    for name, changes in (("processor_config.json", processor_changes), ("config.json", config_changes)):
        if changes:
            path = target / name
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    for name in drop:
        (target / name).unlink()
    return target


def predict(policy, observation, seed=7):
    policy.reset(seed=seed)
    return policy.predict_chunk(observation)


def test_tiny_checkpoint_loads_through_the_factory_and_conforms(policy, so101):
    check_policy(policy, so101)
    meta = policy.metadata
    assert meta.name == "pi0" and meta.learned and not meta.supports_prefix
    features = meta.features
    assert (features.state_dim, features.action_dim, features.chunk_size) == (6, 6, CHUNK)
    assert features.camera_keys == ("front", "wrist") and features.image_size == (32, 32)
    assert features.action_dt_s == pytest.approx(so101.control_period_s)
    assert meta.normalization == {STATE: "MEAN_STD", "action": "MEAN_STD"}
    assert (meta.device, meta.dtype) == ("cpu", "float32") and meta.load_time_s > 0


def test_a_fixed_seed_gives_the_same_chunk(policy, observation):
    first, again = predict(policy, observation, seed=3), predict(policy, observation, seed=3)
    other = predict(policy, observation, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_the_checkpoint_statistics_normalize_state_and_unnormalize_actions(policy, observation, checkpoint, tmp_path,
                                                                           so101):
    state_mean, state_std = np.linspace(-40, 40, 6), np.full(6, 3.0)
    edited = make_policy(str(copy_checkpoint(checkpoint, tmp_path, processor_changes={
        "state_mean": state_mean.tolist(), "state_std": state_std.tolist(),
        "actions_mean": [5.0] * 6, "actions_std": [2.0] * 6})), embodiment=so101,
        options=PolicyOptions(warmup=False))
    state = observation[STATE]
    shifted = {**observation, STATE: (state_mean + state_std * state).astype(np.float32)}
    # Same normalized input and noise, so the model's output is the same: only the unnormalization differs.
    np.testing.assert_allclose(predict(edited, shifted), 2.0 * predict(policy, observation) + 5.0, atol=1e-4)
    # And the state does reach the model (otherwise the check above would prove nothing about the state).
    assert not np.allclose(predict(policy, observation), predict(policy, {**observation, STATE: state + 1.0}))


def test_a_masked_camera_is_left_out(policy, observation):
    noise_image = np.random.default_rng(0).integers(0, 256, observation[image_key("wrist")].shape, dtype=np.uint8)
    masked = {**observation, image_mask_key("wrist"): False}
    masked_other_pixels = {**masked, image_key("wrist"): noise_image}
    np.testing.assert_array_equal(predict(policy, masked), predict(policy, masked_other_pixels))
    assert not np.allclose(predict(policy, masked), predict(policy, observation))


def test_no_camera_at_all_is_a_policy_error(policy, observation):
    blind = {**observation, image_mask_key("front"): False, image_mask_key("wrist"): False}
    with pytest.raises(PolicyError, match="no image from any of its cameras"):
        policy.predict_chunk(blind)


def test_wrong_state_width_is_a_policy_error(policy, observation):
    with pytest.raises(PolicyError, match=r"shape \(7,\).*\(6,\)"):
        policy.predict_chunk({**observation, STATE: np.zeros(7, dtype=np.float32)})


def test_bfloat16_runs_and_is_reported(checkpoint, so101):
    policy = make_policy(str(checkpoint), embodiment=so101, options=PolicyOptions(dtype="bfloat16", warmup=False))
    assert policy.metadata.dtype == "bfloat16"
    check_policy(policy, so101)
    policy.close()
    with pytest.raises(PolicyError, match="closed"):
        check_policy(policy, so101)


def test_robot_whose_cameras_feed_none_of_the_model_inputs_is_refused(checkpoint, so101):
    robot = replace(so101, cameras=(CameraSpec(name="top", policy_key="top", width=640, height=480),))
    with pytest.raises(ConfigError, match=r"key 'cameras'.*reads front, wrist.*policy_key"):
        make_policy(str(checkpoint), embodiment=robot)


def test_checkpoint_without_processor_or_tokenizer_is_refused(checkpoint, tmp_path, so101):
    no_processor = copy_checkpoint(checkpoint, tmp_path, drop=("processor_config.json",))
    with pytest.raises(ConfigError, match="no processor_config.json.*save_pretrained"):
        make_policy(str(no_processor), embodiment=so101)
    (no_processor / "processor_config.json").write_text((checkpoint / "processor_config.json").read_text())
    (no_processor / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="no tokenizer"):
        make_policy(str(no_processor), embodiment=so101)


def test_checkpoint_without_statistics_is_refused(checkpoint, tmp_path, so101):
    target = copy_checkpoint(checkpoint, tmp_path, processor_changes={"state_mean": None})
    with pytest.raises(ConfigError, match=r"processor_config.json, key 'state_mean'.*statistics"):
        make_policy(str(target), embodiment=so101)


def test_weights_that_do_not_fit_the_config_are_refused(checkpoint, tmp_path, so101):
    config = json.loads((checkpoint / "config.json").read_text())
    config["dit_config"]["intermediate_size"] = 48
    target = copy_checkpoint(checkpoint, tmp_path, config_changes={"dit_config": config["dit_config"]})
    with pytest.raises(PolicyError, match="cannot load the pi0 model.*weights and config.json"):
        make_policy(str(target), embodiment=so101)


def test_lerobot_format_checkpoints_go_to_the_lerobot_backend(tmp_path, so101):
    """`"type": "pi0"` without a vlm_config is LeRobot's layout: read by vla_ros.policies.pi05, which names its key."""
    (tmp_path / "config.json").write_text('{"type": "pi0", "use_relative_actions": false, "paligemma_variant": "x"}')
    with pytest.raises(ConfigError, match="key 'paligemma_variant'.*'x' is not one of gemma_300m, gemma_2b"):
        make_policy(str(tmp_path), embodiment=so101)


LEROBOT_FIXTURES = fixtures.fixture_dirs("pi0")
LEROBOT_CASES = [(d, case) for d in LEROBOT_FIXTURES for case in fixtures.read_cases(d)["cases"]]


def test_there_is_a_lerobot_fixture_per_release_that_runs_pi0():
    assert {fixtures.release(directory) for directory in LEROBOT_FIXTURES} >= {"0.5.0", "0.5.1", "0.6.0", "0.6.1"}


@pytest.mark.parametrize(("directory", "case"), LEROBOT_CASES, ids=[f"{d.name}-{c}" for d, c in LEROBOT_CASES])
def test_lerobot_checkpoint_actions_equal_lerobots(directory, case, monkeypatch, tmp_path):
    fixtures.tiny_sizes(monkeypatch, directory)
    assert fixtures.max_difference(directory, case, tmp_path) <= fixtures.TOLERANCE


def test_lerobot_checkpoint_loads_through_the_factory(monkeypatch, so101):
    directory = LEROBOT_FIXTURES[-1]
    fixtures.tiny_sizes(monkeypatch, directory)
    policy = make_policy(str(directory / "checkpoint"), embodiment=so101)
    check_policy(policy, so101)
    assert policy.metadata.name == "pi0" and "LeRobot's format" in policy.metadata.description
    assert policy.metadata.normalization == {STATE: "MEAN_STD", "action": "MEAN_STD"}


def test_too_old_transformers_names_the_version_to_install(checkpoint, so101, monkeypatch):
    monkeypatch.setattr("transformers.__version__", "5.3.1")
    with pytest.raises(PolicyError, match=r"transformers >= 5.4.*5.3.1 is installed: pip install 'transformers>=5.4'"):
        make_policy(str(checkpoint), embodiment=so101)


@pytest.mark.parametrize("directory", LEROBOT_FIXTURES, ids=[d.name for d in LEROBOT_FIXTURES])
def test_full_size_weights_of_lerobot_fit_vla_ros(directory):
    """LeRobot's real sizes (gemma_2b VLM, gemma_300m expert, SigLIP so400m): every weight name and shape fits."""
    parameters = fixtures.check_full_size_architecture(directory)
    assert 3.2e9 < parameters < 3.3e9  # without the two unused output heads of 257,152 tokens
