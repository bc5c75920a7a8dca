"""pi0.5 checkpoints in LeRobot's format against LeRobot's own actions (fixtures made by each LeRobot release).

No LeRobot here: test/fixtures/pi05_lerobot_<release>/ holds a tiny checkpoint saved by that release, the inputs
and noise, and the actions LeRobot gave (tools/parity/pi0_fixtures.py). Refusals: what vla_ros does not
implement is named with its key and value.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch", reason="the pi0.5 backend needs torch")
pytest.importorskip("transformers", reason="the pi0.5 backend needs transformers")

import pi_lerobot_fixtures as fixtures  # noqa: E402

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, PolicyError  # noqa: E402
from vla_ros.core.features import STATE, image_key  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402

FIXTURES = fixtures.fixture_dirs("pi05")
CASES = [(directory, case) for directory in FIXTURES for case in fixtures.read_cases(directory)["cases"]]


def test_there_is_a_fixture_per_release_that_runs_pi05():
    assert {fixtures.release(directory) for directory in FIXTURES} >= {"0.5.0", "0.5.1", "0.6.0", "0.6.1"}


@pytest.mark.parametrize(("directory", "case"), CASES, ids=[f"{d.name}-{c}" for d, c in CASES])
def test_actions_equal_lerobots(directory, case, monkeypatch, tmp_path):
    fixtures.tiny_sizes(monkeypatch, directory)
    assert fixtures.max_difference(directory, case, tmp_path) <= fixtures.TOLERANCE


@pytest.fixture
def fixture_dir(monkeypatch):
    directory = FIXTURES[-1]
    fixtures.tiny_sizes(monkeypatch, directory)
    return directory


def edited_copy(directory, tmp_path, *, config=None, preprocessor=None, drop=()):
    """The fixture's checkpoint with config.json keys replaced and preprocessor steps edited by `preprocessor`."""
    target = tmp_path / "edited"
    shutil.copytree(directory / "checkpoint", target)
    if config:
        path = target / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if preprocessor:
        path = target / "policy_preprocessor.json"
        pipeline = json.loads(path.read_text())
        preprocessor(pipeline["steps"])
        path.write_text(json.dumps(pipeline))
    for name in drop:
        path = target / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return target


def step(steps, name):
    return next(s for s in steps if s["registry_name"] == name)


def test_loads_through_the_factory_and_conforms(fixture_dir):
    so101 = load_embodiment("so101")
    policy = make_policy(str(fixture_dir / "checkpoint"), embodiment=so101)
    check_policy(policy, so101)
    meta = policy.metadata
    assert meta.name == "pi05" and not meta.supports_prefix
    assert (meta.features.state_dim, meta.features.action_dim, meta.features.chunk_size) == (7, 6, 5)
    assert meta.features.camera_keys == ("front", "wrist") and meta.features.image_size == (32, 32)
    assert meta.normalization == {STATE: "QUANTILES", "action": "QUANTILES"}
    assert meta.features.resizes_images  # camera frames arrive at native size and are resized as LeRobot does
    adapter = EmbodimentAdapter(so101, meta.features)
    observation, _ = adapter.to_policy_observation(so101.example_observation(seed=1, instruction="touch the cube"))
    policy.reset(seed=3)
    first = policy.predict_chunk(observation)
    policy.reset(seed=3)
    assert np.array_equal(first, policy.predict_chunk(observation)) and first.shape == (5, 6)


def test_the_opencv_fast_path_is_an_option_whose_frames_arrive_resized(fixture_dir):
    so101 = load_embodiment("so101")
    exact = make_policy(str(fixture_dir / "checkpoint"), embodiment=so101)
    fast = make_policy(str(fixture_dir / "checkpoint"), embodiment=so101, options=PolicyOptions(image_resize="fast"))
    assert not fast.metadata.features.resizes_images and "OpenCV image resize" in fast.metadata.description
    observations = []
    for policy in (exact, fast):
        adapter = EmbodimentAdapter(so101, policy.metadata.features)
        observation, _ = adapter.to_policy_observation(so101.example_observation(seed=1, instruction="touch it"))
        observations.append(observation)
    assert observations[0][image_key("front")].shape != (32, 32, 3) == observations[1][image_key("front")].shape
    with pytest.raises(ConfigError, match="image resize 'slow' is not one of exact, fast"):
        make_policy(str(fixture_dir / "checkpoint"), embodiment=so101, options=PolicyOptions(image_resize="slow"))


def test_the_state_is_in_the_prompt(fixture_dir, tmp_path):
    """pi0.5 has no state token: a different state must change the prompt's tokens and the actions."""
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(fixture_dir / "checkpoint")
    processor = checkpoint.processor
    import torch

    prompts = processor.prompts(["pick_up the cube\n"], torch.tensor([[-1.0, -0.999, 0.0, 0.5, 0.99, 1.5]]))
    assert prompts == ["Task: pick up the cube, State: 0 0 128 192 254 255;\nAction: "]


def test_a_checkpoint_without_release_marker_runs_newest_behaviour_and_says_so(fixture_dir, tmp_path, caplog):
    target = edited_copy(fixture_dir, tmp_path)
    config = json.loads((target / "config.json").read_text())
    del config["use_relative_actions"]
    (target / "config.json").write_text(json.dumps(config))
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    with caplog.at_level(logging.WARNING):
        load_checkpoint(target)
    assert "LeRobot 0.4.x or 0.5.0" in caplog.text and "use_relative_actions" in caplog.text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("paligemma_variant", "gemma_7b", "'gemma_7b' is not one of"),
        ("dtype", "float16", "'float16' is not one of float32, bfloat16"),
        ("use_relative_actions", True, "relative actions"),
        ("image_resolution", [32, 48], "square"),
        ("n_obs_steps", 2, "one observation per chunk"),
        ("max_action_dim", 5, "smaller than the action width 6"),
    ],
)
def test_config_values_vla_ros_does_not_implement_are_refused_by_name(fixture_dir, tmp_path, key, value, message):
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    with pytest.raises(ConfigError, match=f"key '{key}'.*{message}"):
        load_checkpoint(edited_copy(fixture_dir, tmp_path, config={key: value}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda steps: steps.insert(1, {"registry_name": "image_crop_processor", "config": {}}),
            "'image_crop_processor' is not one vla_ros reproduces",
        ),
        (
            lambda steps: step(steps, "normalizer_processor")["config"]["norm_map"].update(VISUAL="MEAN_STD"),
            "VISUAL: MEAN_STD: normalized images are not supported",
        ),
        (
            lambda steps: step(steps, "tokenizer_processor")["config"].update(padding="longest"),
            "'longest'.*padding 'max_length'",
        ),
        (
            lambda steps: step(steps, "rename_observations_processor")["config"].update(rename_map={"a": "b"}),
            "rename_map",
        ),
        (lambda steps: steps.reverse(), "reordered"),
    ],
    ids=["unknown step", "image normalization", "tokenizer padding", "rename", "order"],
)
def test_processor_steps_vla_ros_does_not_reproduce_are_refused_by_name(fixture_dir, tmp_path, edit, message):
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    with pytest.raises(ConfigError, match=message):
        load_checkpoint(edited_copy(fixture_dir, tmp_path, preprocessor=edit))


def test_missing_tokenizer_and_stats_are_refused_with_what_to_do(fixture_dir, tmp_path, monkeypatch):
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    monkeypatch.delenv("VLA_ROS_PALIGEMMA_TOKENIZER", raising=False)
    with pytest.raises(ConfigError, match="tokenizer 'tokenizer' is not on this machine.*huggingface-cli download"):
        load_checkpoint(edited_copy(fixture_dir, tmp_path, drop=["tokenizer"]))
    stats_file = step(
        json.loads((fixture_dir / "checkpoint" / "policy_preprocessor.json").read_text())["steps"],
        "normalizer_processor",
    )["state_file"]
    with pytest.raises(ConfigError, match=f"state file {stats_file} is missing"):
        load_checkpoint(edited_copy(fixture_dir, tmp_path / "b", drop=[stats_file]))


def test_weights_of_another_size_are_refused(fixture_dir, tmp_path):
    from vla_ros.policies.pi05.checkpoint import load_checkpoint

    target = edited_copy(fixture_dir, tmp_path, config={"action_expert_variant": "gemma_2b"})
    with pytest.raises(PolicyError, match="wrong shape for config.json.s variants"):
        load_checkpoint(target)


def test_tied_embeddings_saved_as_the_output_head_only_load(fixture_dir, tmp_path):
    """A checkpoint that keeps only PaliGemma's lm_head (tied to the token embeddings) loads, as LeRobot loads it."""
    from safetensors.numpy import load_file, save_file

    target = edited_copy(fixture_dir, tmp_path)
    weights = load_file(str(target / "model.safetensors"))
    prefix = "model.paligemma_with_expert.paligemma."
    weights[prefix + "lm_head.weight"] = weights.pop(prefix + "model.language_model.embed_tokens.weight")
    save_file(weights, str(target / "model.safetensors"))
    io = fixtures.load_io(fixture_dir)
    import torch

    from vla_ros.policies.pi05.checkpoint import load_checkpoint
    from vla_ros.policies.pi05.policy import PiPolicy

    policy = PiPolicy(load_checkpoint(target), action_dt_s=0.1, warmup=False)
    batch = fixtures.observations(io, fixtures.read_cases(fixture_dir)["tasks"], "two_cameras")
    actions = policy.sample(batch, torch.from_numpy(io["noise"]))
    assert np.abs(actions - io["actions_two_cameras"]).max() <= fixtures.TOLERANCE


def test_bfloat16_runs_near_the_float32_actions(fixture_dir):
    """bfloat16 is not a parity claim (LeRobot's bfloat16 keeps other layers in float32): it runs, close by."""
    import torch

    from vla_ros.policies.pi05.checkpoint import load_checkpoint
    from vla_ros.policies.pi05.policy import PiPolicy

    io = fixtures.load_io(fixture_dir)
    batch = fixtures.observations(io, fixtures.read_cases(fixture_dir)["tasks"], "two_cameras")
    checkpoint = load_checkpoint(fixture_dir / "checkpoint", dtype=torch.bfloat16)
    policy = PiPolicy(checkpoint, action_dt_s=0.1, warmup=False)
    assert policy.metadata.dtype == "bfloat16"
    actions = policy.sample(batch, torch.from_numpy(io["noise"]))
    assert actions.dtype == np.float32 and np.isfinite(actions).all()
    assert np.abs(actions - io["actions_two_cameras"]).max() < 0.5


@pytest.mark.parametrize("directory", FIXTURES, ids=[d.name for d in FIXTURES])
def test_full_size_weights_of_lerobot_fit_vla_ros(directory):
    """LeRobot's real sizes (gemma_2b VLM, gemma_300m expert, SigLIP so400m): every weight name and shape fits."""
    parameters = fixtures.check_full_size_architecture(directory)
    assert 3.3e9 < parameters < 3.4e9  # without the two unused output heads of 257,152 tokens
