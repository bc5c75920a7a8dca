"""SmolVLA checkpoint directories in LeRobot's layout, read and written without network access.

    config.json                                                   LeRobot's SmolVLAConfig, "type": "smolvla"
    model.safetensors                                             the policy's weights, keys "model.<parameter>"
    policy_preprocessor.json                                      LeRobot's processor pipeline description
    policy_preprocessor_step_5_normalizer_processor.safetensors   normalization stats ("observation.state.mean", ...)
    policy_postprocessor.json
    policy_postprocessor_step_0_unnormalizer_processor.safetensors
    vlm/                                                          (ours) the VLM's config.json and tokenizer files
    vla_ros.json                                                  (ours) settings LeRobot must not see (below)
    norm_stats/<robot>.safetensors                                (ours) per-robot stats, same keys as the above

vla_ros.json holds `relative_actions`, `image_padding` and `vision_patch_positions` (see policy.py and
modeling.py); LeRobot refuses config.json keys it does not know, so ours stay out of it.

LeRobot names the VLM by hub id (`vlm_model_name`) and builds it from that id's config and tokenizer; the
weights themselves are all in model.safetensors. `resolve_vlm_dir` finds that config and tokenizer locally.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.policies.device import import_transformers
from vla_ros.policies.lerobot_format import (
    NORMALIZATION_EPS,
    WEIGHTS_FILE,
    _hub_cache_dir,
    _read_stats,
    _read_weights,
    _skipped_initialization,
)
from vla_ros.policies.smolvla.config import NORMALIZATION_MODES, SmolVLAConfig
from vla_ros.policies.smolvla.modeling import PATCH_POSITIONS
from vla_ros.policies.smolvla.processor import Normalization, SmolVLAProcessor

VLM_ENV = "VLA_ROS_SMOLVLA_VLM"
VLM_DIR_NAME = "vlm"
NORM_STATS_DIR = "norm_stats"
WEIGHT_PREFIX = "model."  # LeRobot saves the policy, whose `model` attribute is the network
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
NORMALIZER_STEP = 5  # index of the normalizer in LeRobot's SmolVLA preprocessor pipeline
NORMALIZER_STATE_FILE = f"policy_preprocessor_step_{NORMALIZER_STEP}_normalizer_processor.safetensors"
UNNORMALIZER_STATE_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
VLA_ROS_FILE = "vla_ros.json"
PATCH_POSITIONS_KEY = "vision_patch_positions"
NEWEST_PATCH_POSITIONS = "transformers5"
EMBED_KEY = "vlm_with_expert.vlm.model.text_model.embed_tokens.weight"
LM_HEAD_KEY = "vlm_with_expert.vlm.lm_head.weight"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.json", "chat_template.jinja")


@dataclass
class SmolVLACheckpoint:
    config: SmolVLAConfig
    model: object  # SmolVLAModel, in eval mode on the requested device and dtype
    processor: SmolVLAProcessor
    directory: Path
    vlm_dir: Path
    patch_positions_reason: str = ""  # why the model numbers patch positions as it does (logged at load)


# -- finding the VLM -------------------------------------------------------------------------------------------


def resolve_vlm_dir(checkpoint_dir: Path, name: str) -> Path:
    """A local directory with the VLM's config.json and tokenizer, found without network access.

    Tried in order: `name` as a path inside the checkpoint, `name` as an absolute path, the directory in
    $VLA_ROS_SMOLVLA_VLM, the Hugging Face cache (name as a hub id).
    """
    path = Path(name).expanduser()
    local = path if path.is_absolute() else checkpoint_dir / path
    if (local / "config.json").is_file():
        return local
    env = os.environ.get(VLM_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"${VLM_ENV}={env} has no config.json: point it at a local copy of {name} (its "
                              "config.json and tokenizer files)")
        return path
    cached = _hub_cache_dir(name)
    if cached is not None:
        return cached
    raise ConfigError(
        f"{checkpoint_dir}: this SmolVLA checkpoint is built on the VLM '{name}', whose config and tokenizer are "
        f"not on this machine (looked in {local}, in ${VLM_ENV} and in the Hugging Face cache). Download them once "
        f"with `hf download {name}` (the weights come from the checkpoint: config.json and the "
        f"tokenizer files are enough), then run again, or set {VLM_ENV} to a directory holding them",
        source=str(checkpoint_dir / "config.json"), key="vlm_model_name")


# -- normalization files ---------------------------------------------------------------------------------------


# Steps of LeRobot's SmolVLA pipelines and what vla_ros does for each; any other step is refused by name.
PREPROCESSOR_STEPS = ("rename_observations_processor", "to_batch_processor", "smolvla_new_line_processor",
                      "tokenizer_processor", "device_processor", "normalizer_processor")
POSTPROCESSOR_STEPS = ("unnormalizer_processor", "device_processor")


def _read_pipeline(directory: Path, name: str, known: tuple[str, ...]) -> list[dict]:
    path = directory / name
    if not path.is_file():
        raise ConfigError(f"{directory} has no {name}: SmolVLA checkpoints from LeRobot >= 0.4 keep their "
                          "processing (and normalization stats) in it; re-save older checkpoints with LeRobot's "
                          "migrate_policy_normalization script")
    try:
        pipeline = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from exc
    steps = pipeline.get("steps") if isinstance(pipeline, dict) else None
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise ConfigError("expected an object with a list of steps", source=str(path), key="steps")
    for step in steps:
        registry_name = step.get("registry_name")
        if registry_name not in known:
            raise ConfigError(f"step '{registry_name or step.get('class')}' is not one vla_ros implements (it runs "
                              f"{', '.join(known)}); refusing rather than running the checkpoint differently",
                              source=str(path), key="steps")
        _check_step(registry_name, step.get("config") or {}, str(path))
    return steps


def _check_step(registry_name: str, config: dict, source: str) -> None:
    """Refuse step settings vla_ros does not implement, naming the key and value."""
    def refuse(key: str, value, why: str) -> None:
        raise ConfigError(f"{registry_name}: {key} = {value!r}: {why}", source=source, key=key)

    if registry_name == "rename_observations_processor" and config.get("rename_map"):
        refuse("rename_map", config["rename_map"], "vla_ros names features by the robot config's policy_key; set "
               "those to the checkpoint's feature names instead")
    if registry_name == "device_processor" and config.get("float_dtype") not in (None, "float32"):
        refuse("float_dtype", config["float_dtype"], "use --dtype to choose the model's precision")
    if registry_name == "tokenizer_processor":
        expected = {"task_key": "task", "padding_side": "right", "truncation": True}
        for key, value in expected.items():
            if key in config and config[key] != value:
                refuse(key, config[key], f"vla_ros tokenizes as LeRobot's SmolVLA does ({key} = {value!r})")


def _step_normalization(directory: Path, step: dict, *, source: str) -> Normalization:
    """A normalizer or unnormalizer step's modes, features, eps and statistics."""
    config = step.get("config") or {}
    state_file = step.get("state_file")
    path = directory / state_file if state_file else None
    if path is None or not path.is_file():
        raise ConfigError(f"the {step.get('registry_name')} step's state file {state_file!r} is missing: the "
                          "checkpoint carries no normalization stats", source=source)
    features = {key: spec.get("type") for key, spec in (config.get("features") or {}).items()
                if isinstance(spec, dict)}
    return Normalization(config.get("norm_map") or {}, features, _read_stats(path),
                         eps=config.get("eps", NORMALIZATION_EPS), source=str(path),
                         only_keys=config.get("normalize_observation_keys"))


def _normalizations(directory: Path) -> tuple[Normalization, Normalization, dict]:
    """(preprocessor's normalizer, postprocessor's unnormalizer, tokenizer step config) of a checkpoint."""
    pre_source, post_source = str(directory / PREPROCESSOR_FILE), str(directory / POSTPROCESSOR_FILE)
    pre = _read_pipeline(directory, PREPROCESSOR_FILE, PREPROCESSOR_STEPS)
    post = _read_pipeline(directory, POSTPROCESSOR_FILE, POSTPROCESSOR_STEPS)
    normalizers = [step for step in pre if step.get("registry_name") == "normalizer_processor"]
    unnormalizers = [step for step in post if step.get("registry_name") == "unnormalizer_processor"]
    tokenizers = [step for step in pre if step.get("registry_name") == "tokenizer_processor"]
    for steps, source, what in ((normalizers, pre_source, "normalizer_processor"),
                                (unnormalizers, post_source, "unnormalizer_processor")):
        if len(steps) != 1:
            raise ConfigError(f"expected one {what} step, found {len(steps)}", source=source, key="steps")
    for step, source in ((normalizers[0], pre_source), (unnormalizers[0], post_source)):
        for name in ("norm_map", "features"):
            if not isinstance((step.get("config") or {}).get(name), dict):
                raise ConfigError(f"the {step['registry_name']} step has no {name}", source=source, key=name)
        for feature_type, mode in step["config"]["norm_map"].items():
            if mode not in NORMALIZATION_MODES:
                raise ConfigError(f"{step['registry_name']}: {feature_type} normalization '{mode}' is not one vla_ros "
                                  f"implements ({', '.join(NORMALIZATION_MODES)})", source=source, key="norm_map")
    tokenizer = tokenizers[0].get("config") or {} if tokenizers else {}
    return (_step_normalization(directory, normalizers[0], source=pre_source),
            _step_normalization(directory, unnormalizers[0], source=post_source), tokenizer)


def robot_stats_path(directory: Path, robot: str) -> Path:
    return Path(directory) / NORM_STATS_DIR / f"{robot}.safetensors"


def load_robot_stats(directory: Path, robot: str) -> dict[str, np.ndarray] | None:
    """Per-robot normalization stats saved with the checkpoint, or None when the robot has none."""
    path = robot_stats_path(directory, robot)
    return _read_stats(path) if path.is_file() else None


# -- loading ---------------------------------------------------------------------------------------------------


def read_config(directory: Path) -> SmolVLAConfig:
    """config.json, with vla_ros.json's settings (if any) in `vla_ros` (over old vla_ros_* keys in config.json)."""
    path = Path(directory) / "config.json"
    config = SmolVLAConfig.from_dict(_read_json(path), source=str(path))
    ours = Path(directory) / VLA_ROS_FILE
    if ours.is_file():
        settings = _read_json(ours)
        if not isinstance(settings, dict):
            raise ConfigError("expected a JSON object", source=str(ours))
        config.vla_ros.update(settings)
    return config


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from exc


def patch_positions_for(config: SmolVLAConfig, override: str | None = None) -> tuple[str, str]:
    """(how the checkpoint's vision model numbers patch positions, why), see modeling.PATCH_POSITIONS.

    In order: an explicit `override`; vla_ros.json (what vla_ros trained it with); LeRobot's config.json, where
    `pretrained_revision` marks LeRobot >= 0.6 (transformers 5); else the newest behaviour, as nothing tells.
    """
    if override not in (None, "auto"):
        if override not in PATCH_POSITIONS:
            raise ConfigError(f"patch positions '{override}' is not one of auto, {', '.join(PATCH_POSITIONS)}",
                              key=PATCH_POSITIONS_KEY)
        return override, "set explicitly"
    recorded = config.vla_ros.get(PATCH_POSITIONS_KEY)
    if recorded is not None:
        if recorded not in PATCH_POSITIONS:
            raise ConfigError(f"'{recorded}' is not one of {', '.join(PATCH_POSITIONS)}", key=PATCH_POSITIONS_KEY,
                              source=config.source.replace("config.json", VLA_ROS_FILE))
        return recorded, f"recorded in {VLA_ROS_FILE} by the vla_ros training that wrote the checkpoint"
    if "pretrained_revision" in config.extra:
        return "transformers5", "config.json has pretrained_revision, which LeRobot >= 0.6 (transformers 5) writes"
    return NEWEST_PATCH_POSITIONS, (
        "nothing in the checkpoint says which LeRobot wrote it, so the newest behaviour (LeRobot >= 0.5, "
        "transformers 5) runs; for a checkpoint saved by LeRobot <= 0.4 pass patch positions transformers4")


def load_checkpoint(directory: str | os.PathLike, *, device="cpu", dtype=None,
                    patch_positions: str | None = None) -> SmolVLACheckpoint:
    """Config, model (eval mode, on `device` in `dtype`) and processor of a SmolVLA checkpoint directory.

    `patch_positions`: "transformers4" or "transformers5" overrides what `patch_positions_for` finds."""
    import torch

    from vla_ros.policies.smolvla.modeling import SmolVLAModel

    transformers = import_transformers("The SmolVLA policy")
    directory = Path(directory)
    config = read_config(directory)
    vlm_dir = resolve_vlm_dir(directory, config.vlm_model_name)
    try:
        vlm_config = transformers.AutoConfig.from_pretrained(str(vlm_dir), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(vlm_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the VLM config or tokenizer from {vlm_dir}: {exc}") from exc
    if getattr(vlm_config, "model_type", None) != "smolvlm":
        raise ConfigError(f"{vlm_dir / 'config.json'} describes a '{getattr(vlm_config, 'model_type', None)}' "
                          "model; SmolVLA needs a SmolVLM config", source=str(vlm_dir / "config.json"))
    normalizer, unnormalizer, tokenizer_step = _normalizations(directory)
    _check_tokenizer_step(tokenizer_step, config, str(directory / PREPROCESSOR_FILE))
    processor = SmolVLAProcessor(config, normalizer, tokenizer, tokenizer_dir=vlm_dir, unnormalizer=unnormalizer)
    positions, reason = patch_positions_for(config, patch_positions)

    weights, weights_path = _read_weights(directory)
    special_tokens = None
    if config.add_image_special_tokens:
        special_tokens = (tokenizer.fake_image_token_id, tokenizer.global_image_token_id)
    with _skipped_initialization():
        model = SmolVLAModel(config, vlm_config, image_special_tokens=special_tokens, patch_positions=positions)
    load_weights(model, weights, source=str(weights_path))
    model.to(device=device, dtype=dtype if dtype is not None else torch.float32)
    model.eval()
    return SmolVLACheckpoint(config, model, processor, directory, vlm_dir, patch_positions_reason=reason)


def _check_tokenizer_step(step: dict, config: SmolVLAConfig, source: str) -> None:
    """The tokenizer step must tokenize as config.json says (vla_ros reads the length and padding from there)."""
    for key, ours in (("max_length", config.tokenizer_max_length), ("padding", config.pad_language_to)):
        if key in step and step[key] != ours:
            raise ConfigError(f"tokenizer_processor: {key} = {step[key]!r}, but config.json says {ours!r}; vla_ros "
                              "cannot tell which one LeRobot's training used", source=source, key=key)


def load_weights(model, weights: Mapping, *, source: str) -> None:
    """Load LeRobot-named `weights` into `model`; every key must match by name and shape (PolicyError if not)."""
    expected = model.state_dict()
    ours = {key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else key: value
            for key, value in weights.items()}
    # A VLM with tied word embeddings shares one matrix; LeRobot then saves only one of the two names.
    tied = (EMBED_KEY in ours) != (LM_HEAD_KEY in ours) and EMBED_KEY in expected and LM_HEAD_KEY in expected
    if tied:
        ours.setdefault(EMBED_KEY, ours.get(LM_HEAD_KEY))
        ours.setdefault(LM_HEAD_KEY, ours[EMBED_KEY])
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            return ", ".join(WEIGHT_PREFIX + k for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5
                                                                      else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({few(unexpected)})")
        raise PolicyError(f"{source}: the weights do not match the architecture in config.json and the VLM config: "
                          f"{'; '.join(parts)}. Check num_vlm_layers, num_expert_layers and that the VLM is the one "
                          "the checkpoint was trained on")
    wrong = [f"{WEIGHT_PREFIX}{key} {tuple(ours[key].shape)} (expected {tuple(value.shape)})"
             for key, value in expected.items() if tuple(ours[key].shape) != tuple(value.shape)]
    if wrong:
        raise PolicyError(f"{source}: {len(wrong)} weights have the wrong shape: {', '.join(wrong[:5])}. Check "
                          "expert_width_multiplier, max_state_dim/max_action_dim and the VLM config")
    model.load_state_dict(ours, strict=True)
    if tied:
        model.tie_word_embeddings()


# -- saving ----------------------------------------------------------------------------------------------------


def _pipeline_json(config: SmolVLAConfig, processor: SmolVLAProcessor) -> tuple[dict, dict]:
    """LeRobot's pipeline descriptions for `processor`'s normalizer and unnormalizer (modes and features)."""
    shapes = {key: list(f.shape) for key, f in {**config.input_features, **config.output_features}.items()}

    def step_config(normalization: Normalization) -> dict:
        out = {"eps": normalization.eps,
               "features": {key: {"type": kind, "shape": shapes[key]} for key, kind in normalization.features.items()
                            if key in shapes},
               "norm_map": dict(normalization.modes)}
        if normalization.only_keys is not None:
            out["normalize_observation_keys"] = sorted(normalization.only_keys)
        return out

    device_step = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    preprocessor = {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "smolvla_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": {
            "max_length": config.tokenizer_max_length, "task_key": "task", "padding_side": "right",
            "padding": config.pad_language_to, "truncation": True, "tokenizer_name": config.vlm_model_name}},
        device_step,
        {"registry_name": "normalizer_processor", "config": step_config(processor.normalizer),
         "state_file": NORMALIZER_STATE_FILE},
    ]}
    postprocessor = {"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor", "config": step_config(processor.unnormalizer),
         "state_file": UNNORMALIZER_STATE_FILE},
        device_step,
    ]}
    return preprocessor, postprocessor


def _write_stats(path: Path, stats: Mapping) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: np.ascontiguousarray(np.asarray(value, dtype=np.float32)) for key, value in stats.items()},
              str(path))


def save_checkpoint(directory: str | os.PathLike, config: SmolVLAConfig, model, processor: SmolVLAProcessor, *,
                    robot_stats: Mapping[str, Mapping] | None = None, vlm_dir_name: str | None = VLM_DIR_NAME) -> Path:
    """Write `model` as a LeRobot-layout SmolVLA checkpoint; returns the directory.

    `vlm_dir_name` (default "vlm"): also write the VLM's config and tokenizer into that subfolder and point
    config.json's vlm_model_name at it, so the checkpoint loads with no download; None keeps vlm_model_name
    (a hub id) as it is. `robot_stats`: {robot: LeRobot-keyed stats} written to norm_stats/<robot>.safetensors,
    used instead of the processor's stats when driving that robot.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if vlm_dir_name is not None:
        vlm_dir = directory / vlm_dir_name
        vlm_dir.mkdir(parents=True, exist_ok=True)
        model.vlm_config.save_pretrained(str(vlm_dir))
        source = processor.tokenizer_dir
        if source is not None and (Path(source) / "tokenizer_config.json").is_file():
            if Path(source).resolve() != vlm_dir.resolve():
                for name in TOKENIZER_FILES:
                    if (Path(source) / name).is_file():
                        shutil.copyfile(Path(source) / name, vlm_dir / name)
        else:
            processor.tokenizer.save_pretrained(str(vlm_dir))
        config = replace(config, vlm_model_name=vlm_dir_name)
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=4) + "\n", encoding="utf-8")
    # Our settings, and the patch positions the weights were trained with, where LeRobot does not look.
    settings = {**config.vla_ros, PATCH_POSITIONS_KEY: model.vlm_with_expert.patch_positions}
    (directory / VLA_ROS_FILE).write_text(json.dumps(settings, indent=4) + "\n", encoding="utf-8")
    weights = {WEIGHT_PREFIX + key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()
               if not (key == EMBED_KEY and model.tied_word_embeddings)}  # LeRobot keeps only the head's name
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    preprocessor, postprocessor = _pipeline_json(config, processor)
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8")
    (directory / POSTPROCESSOR_FILE).write_text(json.dumps(postprocessor, indent=2) + "\n", encoding="utf-8")
    _write_stats(directory / NORMALIZER_STATE_FILE, {key: v.numpy() for key, v in processor.normalizer.stats.items()})
    _write_stats(directory / UNNORMALIZER_STATE_FILE,
                 {key: v.numpy() for key, v in processor.unnormalizer.stats.items()})
    for robot, robot_stat in (robot_stats or {}).items():
        processor.with_stats(robot_stat, source=f"stats for robot '{robot}'")  # refuse bad stats before writing
        _write_stats(robot_stats_path(directory, robot), robot_stat)
    return directory
