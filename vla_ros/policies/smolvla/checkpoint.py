"""SmolVLA checkpoint directories in LeRobot's layout, read and written without network access.

    config.json                                                   LeRobot's SmolVLAConfig, "type": "smolvla"
    model.safetensors                                             the policy's weights, keys "model.<parameter>"
    policy_preprocessor.json                                      LeRobot's processor pipeline description
    policy_preprocessor_step_5_normalizer_processor.safetensors   normalization stats ("observation.state.mean", ...)
    policy_postprocessor.json
    policy_postprocessor_step_0_unnormalizer_processor.safetensors
    vlm/                                                          (ours) the VLM's config.json and tokenizer files
    norm_stats/<robot>.safetensors                                (ours) per-robot stats, same keys as the above

LeRobot names the VLM by hub id (`vlm_model_name`) and builds it from that id's config and tokenizer; the
weights themselves are all in model.safetensors. `resolve_vlm_dir` finds that config and tokenizer locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.core.errors import ConfigError, MissingDependencyError, PolicyError
from vla_ros.policies.smolvla.config import SmolVLAConfig
from vla_ros.policies.smolvla.processor import NORMALIZATION_EPS, SmolVLAProcessor

VLM_ENV = "VLA_ROS_SMOLVLA_VLM"
VLM_DIR_NAME = "vlm"
NORM_STATS_DIR = "norm_stats"
WEIGHTS_FILE = "model.safetensors"
WEIGHT_PREFIX = "model."  # LeRobot saves the policy, whose `model` attribute is the network
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
NORMALIZER_STEP = 5  # index of the normalizer in LeRobot's SmolVLA preprocessor pipeline
NORMALIZER_STATE_FILE = f"policy_preprocessor_step_{NORMALIZER_STEP}_normalizer_processor.safetensors"
UNNORMALIZER_STATE_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.json", "chat_template.jinja")


@dataclass
class SmolVLACheckpoint:
    config: SmolVLAConfig
    model: object  # SmolVLAModel, in eval mode on the requested device and dtype
    processor: SmolVLAProcessor
    directory: Path
    vlm_dir: Path


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "policies", "The SmolVLA policy") from exc
    return transformers


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


def _hub_cache_dir(name: str) -> Path | None:
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - every failure means "not cached"; the caller says what to do
        return None
    return path if (path / "config.json").is_file() else None


# -- normalization files ---------------------------------------------------------------------------------------


def _read_stats(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ConfigError(f"cannot read normalization stats: {exc}", source=str(path)) from exc


def _normalizer_file(directory: Path) -> tuple[Path, float]:
    """The preprocessor's normalizer state file and its eps, from policy_preprocessor.json."""
    pipeline_path = directory / PREPROCESSOR_FILE
    if not pipeline_path.is_file():
        raise ConfigError(f"{directory} has no {PREPROCESSOR_FILE}: SmolVLA checkpoints from LeRobot >= 0.4 keep "
                          "their normalization stats beside it; re-save older checkpoints with LeRobot's "
                          "migrate_policy_normalization script")
    try:
        pipeline = json.loads(pipeline_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(pipeline_path)) from exc
    for step in pipeline.get("steps", []) if isinstance(pipeline, dict) else []:
        if isinstance(step, dict) and step.get("registry_name") == "normalizer_processor" and step.get("state_file"):
            eps = step.get("config", {}).get("eps", NORMALIZATION_EPS)
            path = directory / step["state_file"]
            if not path.is_file():
                raise ConfigError(f"the normalizer's state file {step['state_file']} is missing",
                                  source=str(pipeline_path))
            return path, float(eps)
    raise ConfigError("no normalizer_processor step with a state_file: the checkpoint carries no normalization "
                      "stats", source=str(pipeline_path))


def robot_stats_path(directory: Path, robot: str) -> Path:
    return Path(directory) / NORM_STATS_DIR / f"{robot}.safetensors"


def load_robot_stats(directory: Path, robot: str) -> dict[str, np.ndarray] | None:
    """Per-robot normalization stats saved with the checkpoint, or None when the robot has none."""
    path = robot_stats_path(directory, robot)
    return _read_stats(path) if path.is_file() else None


# -- loading ---------------------------------------------------------------------------------------------------


def read_config(directory: Path) -> SmolVLAConfig:
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from exc
    return SmolVLAConfig.from_dict(data, source=str(path))


def load_checkpoint(directory: str | os.PathLike, *, device="cpu", dtype=None) -> SmolVLACheckpoint:
    """Config, model (eval mode, on `device` in `dtype`) and processor of a SmolVLA checkpoint directory."""
    import torch
    from safetensors.torch import load_file

    from vla_ros.policies.smolvla.modeling import SmolVLAModel

    transformers = _transformers()
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
    stats_path, eps = _normalizer_file(directory)
    processor = SmolVLAProcessor(config, _read_stats(stats_path), tokenizer, eps=eps, stats_source=str(stats_path),
                                 tokenizer_dir=vlm_dir)

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ConfigError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise PolicyError(f"cannot read {weights_path}: {exc}") from exc
    special_tokens = None
    if config.add_image_special_tokens:
        special_tokens = (tokenizer.fake_image_token_id, tokenizer.global_image_token_id)
    with _skipped_initialization():
        model = SmolVLAModel(config, vlm_config, image_special_tokens=special_tokens)
    load_weights(model, weights, source=str(weights_path))
    model.to(device=device, dtype=dtype if dtype is not None else torch.float32)
    model.eval()
    return SmolVLACheckpoint(config, model, processor, directory, vlm_dir)


def _skipped_initialization():
    """Skip random initialization of weights that the checkpoint overwrites (seconds for the full-size model)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x: initialize, only slower
        return contextlib.nullcontext()
    return no_init_weights()


def load_weights(model, weights: Mapping, *, source: str) -> None:
    """Load LeRobot-named `weights` into `model`; every key must match by name and shape (PolicyError if not)."""
    expected = model.state_dict()
    ours = {key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else key: value
            for key, value in weights.items()}
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


# -- saving ----------------------------------------------------------------------------------------------------


def _pipeline_json(config: SmolVLAConfig, tokenizer_name: str, eps: float) -> tuple[dict, dict]:
    norm_map = dict(config.normalization_mapping)
    features = {key: {"type": f.type, "shape": list(f.shape)}
                for key, f in {**config.input_features, **config.output_features}.items()}
    action_features = {key: {"type": f.type, "shape": list(f.shape)} for key, f in config.output_features.items()}
    device_step = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    preprocessor = {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "smolvla_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": {
            "max_length": config.tokenizer_max_length, "task_key": "task", "padding_side": "right",
            "padding": config.pad_language_to, "truncation": True, "tokenizer_name": tokenizer_name}},
        device_step,
        {"registry_name": "normalizer_processor",
         "config": {"eps": eps, "features": features, "norm_map": norm_map},
         "state_file": NORMALIZER_STATE_FILE},
    ]}
    postprocessor = {"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor",
         "config": {"eps": eps, "features": action_features, "norm_map": norm_map},
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
    weights = {WEIGHT_PREFIX + key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    preprocessor, postprocessor = _pipeline_json(config, config.vlm_model_name, processor.eps)
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8")
    (directory / POSTPROCESSOR_FILE).write_text(json.dumps(postprocessor, indent=2) + "\n", encoding="utf-8")
    stats = {key: value.numpy() for key, value in processor.stats.items()}
    _write_stats(directory / NORMALIZER_STATE_FILE, stats)
    _write_stats(directory / UNNORMALIZER_STATE_FILE, stats)
    for robot, robot_stat in (robot_stats or {}).items():
        processor.with_stats(robot_stat, source=f"stats for robot '{robot}'")  # refuse bad stats before writing
        _write_stats(robot_stats_path(directory, robot), robot_stat)
    return directory
