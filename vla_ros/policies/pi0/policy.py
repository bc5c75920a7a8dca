"""Pi0Policy: transformers' PI0ForConditionalGeneration behind the vla_ros Policy interface."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PI0ForConditionalGeneration, PI0Processor

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyFeatures, PolicyObservation, image_key, image_mask_key
from vla_ros.core.images import resize_with_pad
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.device import select_device, select_dtype
from vla_ros.policies.pi0.checkpoint import (
    PROCESSOR_CONFIG,
    camera_keys_of,
    check_processor_files,
    check_transformers_format,
    read_json,
    read_stats,
)
from vla_ros.policies.pi0.processing import build_processor, unnormalize_actions

logger = logging.getLogger(__name__)

WARMUP_INSTRUCTION = "warm up"


class Pi0Policy(Policy):
    """pi0 flow-matching policy; inputs and outputs in policy units, normalized inside with the checkpoint's stats.

    Cameras whose mask is False (missing, or no image arrived) are left out of the prompt, which is what
    openpi's attention mask does with them. Noise comes from the policy's own generator: `reset(seed=...)`
    makes the following chunks reproducible.
    """

    def __init__(self, model: PI0ForConditionalGeneration, processor: PI0Processor, *,
                 camera_keys: Sequence[str], action_dt_s: float, source: str = "<in memory>", warmup: bool = True,
                 load_started_s: float | None = None):
        """`load_started_s`: time.perf_counter() when loading began; metadata.load_time_s runs from it to the
        end of the warm-up."""
        config = model.config
        self._model = model.eval()
        self._processor = processor
        processor_source = f"{source}/{PROCESSOR_CONFIG}"
        self._stats = read_stats({key: getattr(processor, key) for key in ("state_mean", "state_std", "actions_mean",
                                                                           "actions_std")},
                                 source=processor_source, max_state_dim=config.max_state_dim,
                                 max_action_dim=config.max_action_dim)
        self._image_size = image_size = _check_model_matches_processor(model, processor, source=source)
        parameter = next(model.parameters())
        self._device, self._dtype = parameter.device, parameter.dtype
        self._noise_shape = (1, config.chunk_size, config.max_action_dim)
        self._generator = torch.Generator(device="cpu")
        self._generator.seed()
        self._camera_keys = tuple(camera_keys)
        features = PolicyFeatures(state_dim=self._stats.state_dim, action_dim=self._stats.action_dim,
                                  chunk_size=config.chunk_size, action_dt_s=action_dt_s,
                                  camera_keys=self._camera_keys, image_size=image_size)
        if warmup:
            self._warm_up()
        n_parameters = sum(p.numel() for p in model.parameters())
        dtype_name = str(self._dtype).removeprefix("torch.")
        self.metadata = PolicyMetadata(
            name="pi0", features=features,
            description=(f"pi0 ({_count(n_parameters)} parameters, {config.num_inference_steps} flow steps, "
                         f"{dtype_name} on {self._device}) from {source}"),
            normalization={STATE: "MEAN_STD", "action": "MEAN_STD"},
            device=str(self._device), dtype=dtype_name,
            load_time_s=time.perf_counter() - load_started_s if load_started_s is not None else 0.0,
        )

    def reset(self, *, seed: int | None = None) -> None:
        """Start an episode; with `seed`, the noise of the following chunks is reproducible."""
        if seed is not None:
            self._generator.manual_seed(seed)

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        if self._model is None:
            raise PolicyError("pi0: the policy was closed")
        state = np.asarray(observation[STATE], dtype=np.float32)
        if state.shape != (self._stats.state_dim,):
            raise PolicyError(f"pi0: {STATE} has shape {state.shape}, the checkpoint's statistics are for "
                              f"({self._stats.state_dim},)")
        images = self._real_images(observation)
        if not images:
            raise PolicyError(f"pi0: no image from any of its cameras ({', '.join(self._camera_keys)}); check "
                              "that the camera topics publish")
        noise = torch.randn(self._noise_shape, generator=self._generator, dtype=torch.float32)
        return self._sample(images, observation.get(TASK) or "", state, noise)

    def close(self) -> None:
        self._model = None
        self._processor = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # -- internals -----------------------------------------------------------------------------------------------

    def _real_images(self, observation: PolicyObservation) -> list[np.ndarray]:
        """The images of cameras that delivered one, in the model's camera order, at the model's image size."""
        images = []
        for key in self._camera_keys:
            image = observation.get(image_key(key))
            if image is None or not observation.get(image_mask_key(key), True):
                continue
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise PolicyError(f"pi0: {image_key(key)} must be (H, W, 3) uint8 RGB, got {image.shape} "
                                  f"{image.dtype}")
            # The adapter already resized with padding; this covers callers that pass camera frames directly.
            images.append(resize_with_pad(image, self._image_size))
        return images

    def _sample(self, images: list[np.ndarray], instruction: str, state: np.ndarray, noise: torch.Tensor
                ) -> np.ndarray:
        inputs = self._processor(images=[images], text=instruction, state=state[None], return_tensors="pt",
                                 input_data_format="channels_last")
        with torch.inference_mode():
            actions = self._model.sample_actions(
                state=inputs["state"].to(self._device, self._dtype),
                input_ids=inputs["input_ids"].to(self._device),
                attention_mask=inputs["attention_mask"].to(self._device),
                pixel_values=inputs["pixel_values"].to(self._device, self._dtype),
                pixel_attention_mask=inputs["pixel_attention_mask"].to(self._device),
                noise=noise.to(self._device, self._dtype),
            )
        return unnormalize_actions(actions[0], self._stats)

    def _warm_up(self) -> None:
        # Every camera present, so that the first real chunk meets no longer prompt than the warm-up's.
        images = [np.zeros((*self._image_size, 3), dtype=np.uint8) for _ in self._camera_keys]
        self._sample(images, WARMUP_INSTRUCTION, self._stats.state_mean, torch.zeros(self._noise_shape))


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _check_model_matches_processor(model: PI0ForConditionalGeneration, processor: PI0Processor, *, source: str
                                   ) -> tuple[int, int]:
    """The model's (H, W) image size, after checking that processor and model agree on tokens and shapes."""
    config = model.config
    processor_source = f"{source}/{PROCESSOR_CONFIG}"
    vision = config.vlm_config.vision_config
    tokens_per_image = (vision.image_size // vision.patch_size) ** 2
    if processor.image_seq_length != tokens_per_image:
        raise ConfigError(f"image_seq_length is {processor.image_seq_length}, but the vision encoder makes "
                          f"{tokens_per_image} tokens per {vision.image_size}x{vision.image_size} image",
                          source=processor_source, key="image_processor.image_seq_length")
    pad_size = processor.image_processor.pad_size
    if processor.image_processor.do_pad and (pad_size.height, pad_size.width) != (vision.image_size,) * 2:
        raise ConfigError(f"images are padded to {pad_size.height}x{pad_size.width}, but the vision encoder takes "
                          f"{vision.image_size}x{vision.image_size}", source=processor_source,
                          key="image_processor.pad_size")
    if processor.image_token_id != config.vlm_config.image_token_id:
        raise ConfigError(f"the tokenizer's <image> token is {processor.image_token_id}, the model's "
                          f"image_token_id is {config.vlm_config.image_token_id}: model and tokenizer do not belong "
                          "together", source=f"{source}/config.json", key="vlm_config.image_token_id")
    vocab_size = config.vlm_config.text_config.vocab_size
    if len(processor.tokenizer) > vocab_size:
        raise ConfigError(f"the tokenizer has {len(processor.tokenizer)} tokens, the model's vocabulary only "
                          f"{vocab_size}", source=f"{source}/config.json", key="vlm_config.text_config.vocab_size")
    if processor.max_state_dim != config.max_state_dim:
        raise ConfigError(f"the processor pads the state to {processor.max_state_dim}, the model takes "
                          f"{config.max_state_dim}", source=processor_source, key="max_state_dim")
    return vision.image_size, vision.image_size


def _check_cameras_fed(embodiment: EmbodimentConfig, camera_keys: Sequence[str], source: str) -> None:
    """At least one of the robot's cameras must feed the model; list the names that would."""
    fed = [c.name for c in embodiment.cameras if c.policy_key in camera_keys]
    if not fed:
        given = ", ".join(f"{c.name} -> {c.policy_key}" for c in embodiment.cameras) or "none"
        raise ConfigError(
            f"no camera of robot '{embodiment.robot}' feeds the pi0 checkpoint {source}, which reads "
            f"{', '.join(camera_keys)} (cameras: {given}): set the cameras' policy_key to these names",
            source=embodiment.source, key="cameras")
    unused = [c.name for c in embodiment.cameras if c.policy_key not in camera_keys]
    if unused:
        logger.warning("pi0 checkpoint %s reads cameras %s; robot cameras %s feed none of them", source,
                       ", ".join(camera_keys), ", ".join(unused))


def load_pi0(path: Path, *, embodiment: EmbodimentConfig, device: str = "auto", dtype: str = "auto",
             warmup: bool = True) -> Pi0Policy:
    """Load a transformers-format pi0 checkpoint directory, offline."""
    started = time.perf_counter()
    config_json = read_json(path / "config.json")
    check_transformers_format(path, config_json)
    camera_keys = camera_keys_of(path, config_json)
    _check_cameras_fed(embodiment, camera_keys, str(path))
    processor = build_processor(path, check_processor_files(path))
    torch_device = select_device(device)
    torch_dtype = select_dtype(torch_device, dtype)
    try:
        model, info = PI0ForConditionalGeneration.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise PolicyError(f"cannot load the pi0 model from {path} (do its weights and config.json belong "
                          f"together?): {exc}") from exc
    # transformers fills missing weights with random ones and only warns: on a robot that must be an error.
    missing = [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]
    if missing:
        shown = ", ".join(str(k) for k in list(missing)[:5])
        raise PolicyError(f"the pi0 weights in {path} do not match its config.json: {len(missing)} tensors missing "
                          f"or of another shape ({shown}{', ...' if len(missing) > 5 else ''})")
    model.to(torch_device)
    return Pi0Policy(model, processor, camera_keys=camera_keys, action_dt_s=embodiment.control_period_s,
                     source=str(path), warmup=warmup, load_started_s=started)
