"""SmolVLA backend: LeRobot's checkpoint layout, offline loading, parity with LeRobot, training and RTC.

Every model here is a tiny random one built by the test; nothing is downloaded (run with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SmolVLA backend needs torch")
pytest.importorskip("transformers", reason="the SmolVLA backend needs transformers")

from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, PolicyError  # noqa: E402
from vla_ros.core.features import STATE, TASK, image_key, image_mask_key  # noqa: E402
from vla_ros.policies.base import ChunkPrefix  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.smolvla.checkpoint import VLA_ROS_FILE, VLM_ENV, load_checkpoint, save_checkpoint  # noqa: E402
from vla_ros.policies.smolvla.config import SmolVLAConfig  # noqa: E402
from vla_ros.policies.smolvla.modeling import SmolVLAModel  # noqa: E402
from vla_ros.policies.smolvla.policy import RELATIVE_ACTIONS_KEY  # noqa: E402
from vla_ros.policies.smolvla.processor import RelativeActions, SmolVLAProcessor  # noqa: E402
from vla_ros.policies.smolvla.rtc import guidance_weight, prefix_weights  # noqa: E402
from vla_ros.policies.smolvla.tiny import build_word_tokenizer, tiny_smolvla_config, tiny_vlm_config  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "smolvla_lerobot_0.4.4" / "two_cameras"  # tools/parity/
WORDS = ["touch", "pick", "up", "the", "red", "green", "blue", "cube"]
CHUNK = 10
STATE_DIM = ACTION_DIM = 6  # so101's joints
IMAGE = 32
OPTIONS = PolicyOptions(device="cpu", dtype="float32", warmup=False)


def _stats(offset: float = 0.0, scale: float = 1.0) -> dict[str, np.ndarray]:
    ramp = np.linspace(0.5, 2.0, ACTION_DIM, dtype=np.float32)
    return {"observation.state.mean": np.linspace(-1, 1, STATE_DIM, dtype=np.float32),
            "observation.state.std": ramp.copy(),
            "action.mean": np.full(ACTION_DIM, offset, dtype=np.float32) + np.arange(ACTION_DIM, dtype=np.float32),
            "action.std": ramp * scale}


def _build(tmp: Path, *, seed: int = 0, **overrides):
    tokenizer = build_word_tokenizer(WORDS, tmp / "tokenizer")
    vlm_config = tiny_vlm_config(vocab_size=len(tokenizer), text_layers=2)
    config = tiny_smolvla_config(state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_keys=("front", "wrist"),
                                 image_size=IMAGE, text_layers=2, chunk_size=CHUNK, num_steps=5, **overrides)
    torch.manual_seed(seed)
    model = SmolVLAModel(config, vlm_config)
    processor = SmolVLAProcessor(config, _stats(), tokenizer, tokenizer_dir=tmp / "tokenizer")
    return config, model, processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny checkpoint with per-robot stats for 'panda' only, and the model it was saved from."""
    tmp = tmp_path_factory.mktemp("smolvla")
    config, model, processor = _build(tmp)
    directory = save_checkpoint(tmp / "checkpoint", config, model, processor,
                                robot_stats={"panda": _stats(offset=3.0, scale=2.0)})
    return directory, config, model.eval(), processor


def _observation(seed: int = 0, *, wrist: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    return {STATE: rng.normal(size=STATE_DIM).astype(np.float32), TASK: "touch the red cube",
            image_key("front"): rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8),
            image_mask_key("front"): True,
            image_key("wrist"): rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) if wrist
            else np.zeros((IMAGE, IMAGE, 3), dtype=np.uint8),
            image_mask_key("wrist"): wrist}


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, CHUNK, 32, generator=torch.Generator().manual_seed(seed))


# -- config ------------------------------------------------------------------------------------------------------


def test_config_round_trips_lerobot_json_and_keeps_unknown_keys():
    data = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    config = SmolVLAConfig.from_dict(data)
    assert config.to_dict() == data
    assert config.extra["optimizer_lr"] == data["optimizer_lr"]
    assert config.camera_keys == tuple(k.removeprefix("observation.images.") for k in data["input_features"]
                                       if data["input_features"][k]["type"] == "VISUAL")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("chunk_size", 0, "must be >= 1"),
    ("n_action_steps", 99, "more than chunk_size"),
    ("max_state_dim", 2, "smaller than the state width"),
    ("attention_mode", "sideways", "not one of cross_attn, self_attn"),
    ("num_steps", "ten", "expected an integer"),
    ("normalization_mapping", {"STATE": "MEAN"}, "mode 'MEAN' is not one of"),
    ("type", "pi0", "not 'smolvla'"),
])
def test_config_refuses_bad_values_naming_the_key(key, value, message):
    data = tiny_smolvla_config(state_dim=6, action_dim=6, camera_keys=("front",), image_size=IMAGE,
                               text_layers=2).to_dict()
    data[key] = value
    with pytest.raises(ConfigError, match=message):
        SmolVLAConfig.from_dict(data, source="ckpt/config.json")


# -- loading through the factory ---------------------------------------------------------------------------------


def test_checkpoint_loads_offline_and_passes_check_policy(tiny, monkeypatch):
    directory = tiny[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embodiment = load_embodiment("so101")
    policy = make_policy(str(directory), embodiment=embodiment,
                         options=PolicyOptions(device="cpu", dtype="float32", warmup=True))
    check_policy(policy, embodiment)
    meta = policy.metadata
    assert meta.name == "smolvla" and meta.supports_prefix and meta.learned
    assert meta.features.camera_keys == ("front", "wrist") and meta.features.image_size == (IMAGE, IMAGE)
    assert meta.features.chunk_size == CHUNK and meta.features.action_dt_s == embodiment.control_period_s
    assert meta.normalization == {"observation.state": "MEAN_STD", "action": "MEAN_STD"}
    assert (meta.device, meta.dtype) == ("cpu", "float32") and meta.load_time_s > 0


def test_same_noise_gives_same_actions_after_save_and_load(tiny):
    directory, _, model, processor = tiny
    policy = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    observation = _observation()
    with torch.no_grad():
        expected = processor.unnormalize_actions(
            model.sample_actions(**processor.preprocess([observation]), noise=_noise()))[0]
    np.testing.assert_allclose(policy.sample(observation, _noise()), expected, atol=1e-5)
    policy.reset(seed=3)
    first = policy.predict_chunk(observation)
    policy.reset(seed=3)
    np.testing.assert_array_equal(policy.predict_chunk(observation), first)


def test_missing_camera_is_masked_out(tiny):
    directory = tiny[0]
    policy = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    without_wrist = _observation(wrist=False)
    other_zeros = dict(without_wrist, **{image_key("wrist"): np.full((IMAGE, IMAGE, 3), 255, dtype=np.uint8)})
    # A masked camera's pixels must not matter; a real one's must.
    np.testing.assert_allclose(policy.sample(without_wrist, _noise()), policy.sample(other_zeros, _noise()),
                               atol=1e-6)
    assert not np.allclose(policy.sample(_observation(wrist=True), _noise()),
                           policy.sample(without_wrist, _noise()), atol=1e-3)


def test_per_robot_normalization_stats_replace_the_checkpoint_stats(tiny):
    directory = tiny[0]
    observation = _observation()
    default = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    panda_stats = _stats(offset=3.0, scale=2.0)
    panda = make_policy(str(directory), embodiment=load_embodiment("panda"), options=OPTIONS)
    assert panda.metadata.features.action_dt_s == load_embodiment("panda").control_period_s
    # State stats are equal, so the normalized chunk is the same; only the action unnormalization differs.
    base = _stats()
    normalized = (default.sample(observation, _noise()) - base["action.mean"]) / base["action.std"]
    np.testing.assert_allclose(panda.sample(observation, _noise()),
                               normalized * panda_stats["action.std"] + panda_stats["action.mean"], atol=1e-4)
    assert "norm_stats/panda.safetensors" in panda.metadata.description


def _relative_copy(directory: Path, destination: Path, mode: str | dict = "arm_joints", *, legacy: bool = False
                   ) -> Path:
    """A copy whose vla_ros.json (or, `legacy`, config.json as vla_ros wrote it before) names relative actions."""
    shutil.copytree(directory, destination)
    name, key = ("config.json", f"vla_ros_{RELATIVE_ACTIONS_KEY}") if legacy else (VLA_ROS_FILE, RELATIVE_ACTIONS_KEY)
    settings = json.loads((destination / name).read_text())
    settings[key] = mode
    (destination / name).write_text(json.dumps(settings))
    return destination


def test_relative_actions_shift_arm_joints_by_the_state_and_leave_grippers_and_padding_alone():
    relative = RelativeActions(load_embodiment("so101"))  # 5 arm joints, then the gripper
    state = np.arange(1, 9, dtype=np.float32)  # padded to 8 like the built-in policy's state
    actions = np.full((2, 4, 8), 10.0, dtype=np.float32)
    model_actions = relative.to_model(actions, np.stack([state, 2 * state]))
    np.testing.assert_array_equal(model_actions[0, :, :5], np.broadcast_to(10.0 - state[:5], (4, 5)))
    np.testing.assert_array_equal(model_actions[1, :, :5], np.broadcast_to(10.0 - 2 * state[:5], (4, 5)))
    np.testing.assert_array_equal(model_actions[..., 5:], 10.0)  # gripper and padding
    np.testing.assert_allclose(relative.from_model(model_actions, np.stack([state, 2 * state])), actions)
    assert actions[0, 0, 0] == 10.0  # the input is not modified
    # The panda's config already makes its arm joints deltas (the adapter adds the state): no second shift.
    panda = RelativeActions(load_embodiment("panda"))
    np.testing.assert_array_equal(panda.to_model(actions, np.stack([state, 2 * state])), actions)


@pytest.mark.parametrize(("mode", "legacy"), [("arm_joints", False), ({"so101": "arm_joints"}, False),
                                             ({"so101": "arm_joints"}, True)])
def test_relative_action_checkpoint_returns_absolute_actions_and_pulls_rtc_prefixes_in_its_frame(tiny, tmp_path, mode,
                                                                                                  legacy):
    directory = _relative_copy(tiny[0], tmp_path / "relative", mode, legacy=legacy)
    so101 = load_embodiment("so101")
    absolute = make_policy(str(tiny[0]), embodiment=so101, options=OPTIONS)
    relative = make_policy(str(directory), embodiment=so101, options=OPTIONS)
    observation = _observation()
    arm = np.r_[observation[STATE][:5], 0.0]  # the gripper (last joint) stays absolute
    np.testing.assert_allclose(relative.sample(observation, _noise()), absolute.sample(observation, _noise()) + arm,
                               atol=1e-5)
    assert "arm actions relative to the state" in relative.metadata.description
    # The same guidance in absolute units: the frozen steps land on the old chunk as they do without the shift.
    old = relative.sample(observation, _noise(1))[3:]
    guided = relative.sample(observation, _noise(0), ChunkPrefix(actions=old, inference_delay_steps=3,
                                                                 execution_horizon=3))
    free = relative.sample(observation, _noise(0))
    assert np.abs(guided[:3] - old[:3]).mean() < 0.2 * np.abs(free[:3] - old[:3]).mean()


def test_robots_a_checkpoint_does_not_name_as_relative_get_absolute_actions(tiny, tmp_path):
    directory = _relative_copy(tiny[0], tmp_path / "relative", {"so101": "arm_joints"})
    panda = load_embodiment("panda")
    relative = make_policy(str(directory), embodiment=panda, options=OPTIONS)
    absolute = make_policy(str(tiny[0]), embodiment=panda, options=OPTIONS)
    np.testing.assert_array_equal(relative.sample(_observation(), _noise()), absolute.sample(_observation(), _noise()))


def test_relative_action_checkpoint_needs_a_robot_and_a_known_mode(tiny, tmp_path):
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    directory = _relative_copy(tiny[0], tmp_path / "relative")
    with pytest.raises(ConfigError, match=f"key '{RELATIVE_ACTIONS_KEY}'.*which of its joints are grippers"):
        SmolVLAPolicy(load_checkpoint(directory), action_dt_s=0.1, warmup=False)
    unknown = _relative_copy(tiny[0], tmp_path / "unknown", mode={"panda": "everything"})  # even another robot's
    with pytest.raises(ConfigError, match="'everything' is not a relative-action mode .* \\(arm_joints\\)"):
        make_policy(str(unknown), embodiment=load_embodiment("so101"), options=OPTIONS)


# -- errors ------------------------------------------------------------------------------------------------------


def test_missing_vlm_says_what_to_download_and_env_var_or_hub_cache_finds_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants", reason="the hub cache lookup needs it")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))  # read when a lookup runs
    monkeypatch.delenv(VLM_ENV, raising=False)
    directory = shutil.copytree(tiny[0], tmp_path / "checkpoint")
    shutil.move(directory / "vlm", tmp_path / "elsewhere")
    config = json.loads((directory / "config.json").read_text())
    config["vlm_model_name"] = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"SmolVLM2-500M-Video-Instruct.*hf download.*VLA_ROS_SMOLVLA"):
        make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    expected = make_policy(str(tiny[0]), embodiment=load_embodiment("so101"), options=OPTIONS).sample(
        _observation(), _noise())
    monkeypatch.setenv(VLM_ENV, str(tmp_path / "elsewhere"))
    policy = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    np.testing.assert_allclose(policy.sample(_observation(), _noise()), expected)
    # Without the variable, a copy in the Hugging Face cache (the hub's layout) is found by the config's hub id.
    monkeypatch.delenv(VLM_ENV)
    repo = tmp_path / "empty_cache" / "models--HuggingFaceTB--SmolVLM2-500M-Video-Instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tmp_path / "elsewhere", repo / "snapshots" / ("0" * 40))
    policy = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    np.testing.assert_allclose(policy.sample(_observation(), _noise()), expected)


def _edit_weights(directory: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(directory / "model.safetensors"))
    edit(weights)
    save_file(weights, str(directory / "model.safetensors"))


def test_missing_weight_is_named(tiny, tmp_path):
    directory = shutil.copytree(tiny[0], tmp_path / "checkpoint")
    _edit_weights(directory, lambda w: w.pop("model.action_out_proj.bias"))
    with pytest.raises(PolicyError, match=r"1 missing \(model\.action_out_proj\.bias\)"):
        load_checkpoint(directory)


def test_unexpected_weight_is_named(tiny, tmp_path):
    directory = shutil.copytree(tiny[0], tmp_path / "checkpoint")
    _edit_weights(directory, lambda w: w.update({"model.extra_head.weight": torch.zeros(2)}))
    with pytest.raises(PolicyError, match=r"1 unexpected \(model\.extra_head\.weight\)"):
        load_checkpoint(directory)


def test_wrong_weight_shape_is_named(tiny, tmp_path):
    directory = shutil.copytree(tiny[0], tmp_path / "checkpoint")
    _edit_weights(directory, lambda w: w.update({"model.state_proj.weight": torch.zeros(64, 8)}))
    with pytest.raises(PolicyError, match=r"model\.state_proj\.weight \(64, 8\) \(expected \(64, 32\)\)"):
        load_checkpoint(directory)


def test_missing_normalization_stats_are_named(tiny, tmp_path):
    from safetensors.numpy import save_file

    directory = shutil.copytree(tiny[0], tmp_path / "checkpoint")
    stats = _stats()
    del stats["action.std"]
    save_file(stats, str(directory / "policy_preprocessor_step_5_normalizer_processor.safetensors"))
    with pytest.raises(ConfigError, match="needs 'action.std'"):
        load_checkpoint(directory)


# -- training ----------------------------------------------------------------------------------------------------


def test_optimizer_steps_on_a_fixed_batch_reduce_the_flow_matching_loss(tmp_path):
    config, model, processor = _build(tmp_path, seed=1)
    model.train()
    observations = [_observation(seed) for seed in range(4)]
    batch = processor.preprocess(observations)
    rng = np.random.default_rng(0)
    actions = processor.normalize_actions(rng.normal(size=(4, CHUNK, ACTION_DIM)))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(actions.shape, generator=generator)
    time = model.sample_time(4, "cpu", generator=generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(list(model.parameters()))  # tiny configs train every part
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)

    def loss() -> torch.Tensor:
        return model.flow_matching_loss(**batch, actions=actions, noise=noise, time=time)[..., :ACTION_DIM].mean()

    initial = loss().item()
    for _ in range(15):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < 0.5 * initial


def test_training_times_follow_beta_1_5_1():
    model_time = SmolVLAModel.sample_time(20_000, "cpu", generator=torch.Generator().manual_seed(0))
    assert model_time.min() >= 0.001 and model_time.max() <= 1.0
    # Beta(1.5, 1) has mean 0.6, scaled by 0.999 and shifted by 0.001.
    assert abs(model_time.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01


# -- real-time chunking ------------------------------------------------------------------------------------------


def test_prefix_weights_follow_the_papers_soft_mask():
    # H=10, s=3, d=2, n=7=H-s: W = 1, 1, then c(e^c - 1)/(e - 1) with c = (7 - i)/6 for i = 2..6, then 0.
    weights = prefix_weights(10, 7, 2, 3)
    c = (7 - np.arange(2, 7)) / 6
    np.testing.assert_allclose(weights, [1, 1, *(c * (np.exp(c) - 1) / (math.e - 1)), 0, 0, 0])
    assert prefix_weights(10, 4, 2, 3)[4:].sum() == 0  # nothing to follow past the old chunk's end
    np.testing.assert_array_equal(prefix_weights(10, 2, 5, 3), [1, 1] + [0] * 8)


def test_guidance_weight_is_capped_and_symmetric():
    assert guidance_weight(0.0, 5.0) == 5.0 and guidance_weight(1.0, 5.0) == 5.0
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert guidance_weight(0.3, 5.0) == pytest.approx(guidance_weight(0.7, 5.0))


def test_rtc_prefix_pulls_the_frozen_steps_onto_the_old_chunk(tiny):
    directory = tiny[0]
    policy = make_policy(str(directory), embodiment=load_embodiment("so101"), options=OPTIONS)
    observation = _observation()
    free = policy.sample(observation, _noise(0))
    old = policy.sample(observation, _noise(1))[3:]  # an old chunk that has run 3 steps
    delay = 3
    prefix = ChunkPrefix(actions=old, inference_delay_steps=delay, execution_horizon=3)
    guided = policy.sample(observation, _noise(0), prefix)
    unguided_error = np.abs(free[:delay] - old[:delay]).mean()
    guided_error = np.abs(guided[:delay] - old[:delay]).mean()
    assert guided_error < 0.2 * unguided_error
    # Past the old chunk's end the pull stops, so the tail stays near the unguided chunk.
    assert np.abs(guided[-1] - free[-1]).mean() < unguided_error
    empty = ChunkPrefix(actions=np.zeros((0, ACTION_DIM), dtype=np.float32), inference_delay_steps=0,
                        execution_horizon=3)
    np.testing.assert_array_equal(policy.sample(observation, _noise(0), empty), free)
    with pytest.raises(PolicyError, match=r"chunk prefix of shape \(4, 5\)"):
        policy.sample(observation, _noise(0), ChunkPrefix(np.zeros((4, 5)), 1, 3))


# -- parity with LeRobot beyond test_policy_parity.py: batching, training losses, image special tokens ----------


def _lerobot_case():
    from safetensors.torch import load_file

    io = load_file(str(FIXTURE / "io.safetensors"))
    cases = json.loads((FIXTURE / "case.json").read_text())
    observations = []
    for i, task in enumerate(cases["tasks"]):
        observation = {STATE: io["state"][i].numpy(), TASK: task}
        for camera in cases["fed"]:
            observation[image_key(camera)] = io[f"image_{camera}"][i].numpy()
            observation[image_mask_key(camera)] = True
        observations.append(observation)
    return io, observations


def _fixture_policy(directory: Path = FIXTURE / "checkpoint"):
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    # LeRobot 0.4.4 ran transformers 4's patch positions; its config.json cannot say so.
    return SmolVLAPolicy(load_checkpoint(directory, patch_positions="transformers4"), action_dt_s=0.1, warmup=False)


def test_a_batch_with_padded_instructions_matches_lerobot(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    io, observations = _lerobot_case()
    policy = _fixture_policy()
    assert policy.metadata.features.camera_keys == ("front", "wrist")
    batch = policy.processor.preprocess(observations)  # instructions of different lengths: padded, as in LeRobot
    assert not batch["lang_masks"].all()
    with torch.no_grad():
        actions = policy.model.sample_actions(**batch, noise=io["noise"])
    np.testing.assert_allclose(policy.processor.unnormalize_actions(actions), io["actions"].numpy(), atol=1e-4,
                               rtol=1e-4)


def test_training_losses_match_lerobot():
    io, observations = _lerobot_case()
    policy = _fixture_policy()
    processor = policy.processor
    with torch.no_grad():
        losses = policy.model.flow_matching_loss(**processor.preprocess(observations),
                                                 actions=processor.normalize_actions(io["train_actions"].numpy()),
                                                 noise=io["train_noise"], time=io["train_time"])
    np.testing.assert_allclose(losses.numpy(), io["train_losses"].numpy(), atol=1e-4, rtol=1e-4)


def test_image_special_tokens_match_lerobot(tmp_path):
    io, observations = _lerobot_case()
    directory = shutil.copytree(FIXTURE / "checkpoint", tmp_path / "checkpoint")
    config = json.loads((directory / "config.json").read_text())
    config["add_image_special_tokens"] = True
    (directory / "config.json").write_text(json.dumps(config))
    policy = _fixture_policy(directory)
    np.testing.assert_allclose(policy.sample(observations[0], io["noise"][:1]),
                               io["actions_with_image_special_tokens"][0].numpy(), atol=1e-4, rtol=1e-4)
