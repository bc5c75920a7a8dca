"""PiPolicy: LeRobot-format pi0 and pi0.5 checkpoints behind the vla_ros Policy interface."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, STATE, TASK, PolicyFeatures, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.device import select_device, select_dtype
from vla_ros.policies.lerobot_format import IMAGE_RESIZES
from vla_ros.policies.pi05.checkpoint import PiCheckpoint, load_checkpoint

logger = logging.getLogger(__name__)
WARMUP_INSTRUCTION = "warm up"
NAMES = {"pi0": "pi0", "pi05": "pi0.5"}


class PiPolicy(Policy):
    """pi0 / pi0.5 flow matching; inputs and outputs in policy units, normalized inside with the checkpoint's stats.

    A camera whose mask is False is fed as LeRobot feeds a missing camera (a -1 image, masked out). Noise comes
    from the policy's own generator: `reset(seed=...)` makes the following chunks reproducible.
    """

    def __init__(
        self,
        checkpoint: PiCheckpoint,
        *,
        action_dt_s: float,
        warmup: bool = True,
        load_started_s: float | None = None,
        image_resize: str = "exact",
    ):
        """`image_resize`: "exact" takes camera frames at their native size and resizes them as LeRobot's policy
        does; "fast" lets the adapter resize them with OpenCV first (cheaper, moves the actions)."""
        if image_resize not in IMAGE_RESIZES:
            raise ConfigError(f"image resize '{image_resize}' is not one of {', '.join(IMAGE_RESIZES)}")
        self._config = config = checkpoint.config
        self._model = checkpoint.model
        self._processor = checkpoint.processor
        parameter = next(self._model.parameters())
        self._device, self._dtype = parameter.device, parameter.dtype
        self._generator = torch.Generator(device="cpu")
        self._generator.seed()
        resolution = tuple(config.image_resolution)
        features = PolicyFeatures(
            state_dim=config.state_dim,
            action_dim=config.action_dim,
            chunk_size=config.chunk_size,
            action_dt_s=action_dt_s,
            camera_keys=config.camera_keys,
            image_size=resolution,
            image_padding="center",
            resizes_images=image_resize == "exact",
        )
        if warmup:
            self._warm_up(features)
        n_parameters = sum(p.numel() for p in self._model.parameters())
        dtype_name = str(self._dtype).removeprefix("torch.")
        name = NAMES[config.type]
        self.metadata = PolicyMetadata(
            name=config.type,
            features=features,
            description=(
                f"{name} in LeRobot's format ({n_parameters / 1e6:.1f}M parameters, "
                f"{config.num_inference_steps} flow steps, {dtype_name} on {self._device}, "
                f"{'exact' if features.resizes_images else 'OpenCV'} image resize) "
                f"from {checkpoint.directory}"
            ),
            normalization={
                STATE: self._processor.normalizer.mode(STATE),
                ACTION: self._processor.unnormalizer.mode(ACTION),
            },
            device=str(self._device),
            dtype=dtype_name,
            load_time_s=time.perf_counter() - load_started_s if load_started_s is not None else 0.0,
        )

    @property
    def model(self):
        return self._model

    @property
    def processor(self):
        return self._processor

    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self._generator.manual_seed(seed)

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        if self._model is None:
            raise PolicyError(f"{self._config.type}: the policy was closed")
        noise = torch.randn(
            (1, self._config.chunk_size, self._config.max_action_dim), generator=self._generator, dtype=torch.float32
        )
        return self.sample([observation], noise)[0]

    def sample(self, observations: list[PolicyObservation], noise: torch.Tensor) -> np.ndarray:
        """(B, chunk_size, action_dim) for a batch of observations and given noise (B, chunk_size, max_action_dim)."""
        batch = self._processor.preprocess(observations)
        dtype = self._dtype
        with torch.inference_mode():
            actions = self._model.sample_actions(
                [image.to(self._device, dtype) for image in batch["images"]],
                [mask.to(self._device) for mask in batch["image_masks"]],
                batch["tokens"].to(self._device),
                batch["token_masks"].to(self._device),
                None if batch["state"] is None else batch["state"].to(self._device, dtype),
                noise.to(self._device, torch.float32),  # the Euler steps integrate in float32
            )
        return self._processor.unnormalize_actions(actions)

    def close(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        self._model = None

    def _warm_up(self, features: PolicyFeatures) -> None:
        observation: PolicyObservation = {
            STATE: np.zeros(features.state_dim, dtype=np.float32),
            TASK: WARMUP_INSTRUCTION,
        }
        for key in features.camera_keys:
            observation[image_key(key)] = np.zeros((*features.image_size, 3), dtype=np.uint8)
            observation[image_mask_key(key)] = True
        self.sample([observation], torch.zeros(1, features.chunk_size, self._config.max_action_dim))


def _check_cameras_fed(embodiment: EmbodimentConfig, checkpoint: PiCheckpoint) -> None:
    camera_keys = checkpoint.config.camera_keys
    fed = [c.name for c in embodiment.cameras if c.policy_key in camera_keys]
    if not fed:
        given = ", ".join(f"{c.name} -> {c.policy_key}" for c in embodiment.cameras) or "none"
        raise ConfigError(
            f"no camera of robot '{embodiment.robot}' feeds the {checkpoint.config.type} checkpoint "
            f"{checkpoint.directory}, which reads {', '.join(camera_keys)} (cameras: {given}): set the cameras' "
            "policy_key to these names",
            source=embodiment.source,
            key="cameras",
        )
    unfed = [key for key in camera_keys if key not in {c.policy_key for c in embodiment.cameras}]
    if unfed:
        logger.warning(
            "%s reads cameras %s that robot '%s' does not have: they are fed as missing (masked out)",
            checkpoint.directory,
            ", ".join(unfed),
            embodiment.robot,
        )


def load_pi(
    path: Path,
    *,
    embodiment: EmbodimentConfig,
    device: str = "auto",
    dtype: str = "auto",
    warmup: bool = True,
    image_resize: str = "exact",
) -> PiPolicy:
    started = time.perf_counter()
    torch_device = select_device(device)
    torch_dtype = select_dtype(torch_device, dtype)
    checkpoint = load_checkpoint(path, device=torch_device, dtype=torch_dtype)
    if checkpoint.config.dtype != str(torch_dtype).removeprefix("torch."):
        # LeRobot computes in the config's dtype; vla_ros in the device's (--dtype). float32 is the exact reference.
        logger.info(
            "%s: config.json asks for %s, running in %s (set --dtype to choose)",
            path,
            checkpoint.config.dtype,
            torch_dtype,
        )
    _check_cameras_fed(embodiment, checkpoint)
    return PiPolicy(
        checkpoint,
        action_dt_s=embodiment.control_period_s,
        warmup=warmup,
        load_started_s=started,
        image_resize=image_resize,
    )
