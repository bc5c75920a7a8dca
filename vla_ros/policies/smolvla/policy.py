"""SmolVLAPolicy: our SmolVLA network behind the vla_ros Policy interface, with real-time chunking."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, STATE, TASK, PolicyFeatures, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.device import select_device, select_dtype
from vla_ros.policies.smolvla.checkpoint import SmolVLACheckpoint, load_checkpoint, load_robot_stats, robot_stats_path
from vla_ros.policies.smolvla.modeling import RTCGuidance
from vla_ros.policies.smolvla.processor import RelativeActions, batch_to

WARMUP_INSTRUCTION = "warm up"
# config.json key of ours: where the adapter pads resized images. LeRobot pads top and left; the built-in
# model was trained on vla_ros's centred padding and says so.
IMAGE_PADDING_KEY = "vla_ros_image_padding"
# config.json key of ours: "arm_joints" where the network predicts the arm joints' actions as offsets from the
# observation's state (grippers stay absolute), or {robot: "arm_joints"} for the robots where it does; the others'
# are absolute. LeRobot's SmolVLA predicts absolute actions and ignores the key.
RELATIVE_ACTIONS_KEY = "vla_ros_relative_actions"
RELATIVE_ACTION_MODES = ("arm_joints",)
MAX_GUIDANCE_WEIGHT = 5.0  # beta of the RTC paper: caps the guidance early and late in the flow


class SmolVLAPolicy(Policy):
    """SmolVLA flow-matching policy; inputs and outputs in policy units, normalized inside.

    A camera whose mask is False (missing, or no image arrived) is masked out of attention, as LeRobot does
    with its empty cameras. Noise comes from the policy's own generator: `reset(seed=...)` makes the following
    chunks reproducible. With a ChunkPrefix, sampling is guided toward the old chunk (real-time chunking).
    """

    def __init__(self, checkpoint: SmolVLACheckpoint, *, action_dt_s: float, embodiment: EmbodimentConfig | None = None,
                 warmup: bool = True, load_started_s: float | None = None):
        """`embodiment`: the robot driven; its `<checkpoint>/norm_stats/<robot>.safetensors` replace the checkpoint's
        stats if they exist, and its grippers are what a relative-action checkpoint keeps absolute.
        `load_started_s`: time.perf_counter() when loading began, for metadata.load_time_s."""
        self._config = config = checkpoint.config
        self._model = checkpoint.model
        self._processor = checkpoint.processor
        stats_source = "the checkpoint's normalizer"
        if embodiment is not None:
            robot_stats = load_robot_stats(checkpoint.directory, embodiment.robot)
            if robot_stats is not None:
                stats_source = str(robot_stats_path(checkpoint.directory, embodiment.robot))
                self._processor = self._processor.with_stats(robot_stats, source=stats_source)
        self.relative_actions = _relative_actions(checkpoint, embodiment)
        self._device, self._dtype = self._model.device, self._model.dtype
        self._generator = torch.Generator(device="cpu")
        self._generator.seed()
        features = PolicyFeatures(state_dim=config.state_dim, action_dim=config.action_dim,
                                  chunk_size=config.chunk_size, action_dt_s=action_dt_s,
                                  camera_keys=config.camera_keys, image_size=config.image_size,
                                  image_padding=config.extra.get(IMAGE_PADDING_KEY, "top_left"))
        if warmup:
            self._warm_up(features)
        n_parameters = sum(p.numel() for p in self._model.parameters())
        dtype_name = str(self._dtype).removeprefix("torch.")
        self.metadata = PolicyMetadata(
            name="smolvla", features=features,
            description=(f"SmolVLA ({n_parameters / 1e6:.1f}M parameters, {config.num_steps} flow steps, "
                         f"{dtype_name} on {self._device}, stats from {stats_source}"
                         f"{', arm actions relative to the state' if self.relative_actions else ''}) "
                         f"from {checkpoint.directory}"),
            normalization={STATE: config.normalization_mode("STATE"), ACTION: config.normalization_mode("ACTION")},
            device=str(self._device), dtype=dtype_name,
            load_time_s=time.perf_counter() - load_started_s if load_started_s is not None else 0.0,
            supports_prefix=True,
        )

    @property
    def model(self):
        """The SmolVLAModel (for fine-tuning or inspection)."""
        return self._model

    @property
    def processor(self):
        return self._processor

    def reset(self, *, seed: int | None = None) -> None:
        """Start an episode; with `seed`, the noise of the following chunks is reproducible."""
        if seed is not None:
            self._generator.manual_seed(seed)

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        if self._model is None:
            raise PolicyError("smolvla: the policy was closed")
        noise = torch.randn((1, self._config.chunk_size, self._config.max_action_dim), generator=self._generator,
                            dtype=torch.float32)
        return self.sample(observation, noise, prefix)

    def predict_chunks(self, observations: Sequence[PolicyObservation]) -> np.ndarray:
        """(B, chunk_size, action_dim): `predict_chunk` of each observation (no prefix), in one forward pass.

        A policy server batches concurrent requests through this (vla_ros.policies.remote.batching)."""
        if self._model is None:
            raise PolicyError("smolvla: the policy was closed")
        noise = torch.randn((len(observations), self._config.chunk_size, self._config.max_action_dim),
                            generator=self._generator, dtype=torch.float32)
        batch = batch_to(self._processor.preprocess(list(observations)), self._device, self._dtype)
        with torch.inference_mode():
            actions = self._processor.unnormalize_actions(self._model.sample_actions(**batch, noise=noise.to(
                self._device)))
        if self.relative_actions is not None:
            actions = np.stack([self.relative_actions.from_model(chunk, observation[STATE])
                                for chunk, observation in zip(actions, observations, strict=True)])
        return actions

    def sample(self, observation: PolicyObservation, noise: torch.Tensor, prefix: ChunkPrefix | None = None
               ) -> np.ndarray:
        """`predict_chunk` with given noise (1, chunk_size, max_action_dim): same noise, same actions."""
        batch = batch_to(self._processor.preprocess([observation]), self._device, self._dtype)
        guidance = self._guidance(prefix, observation[STATE])
        # Guidance differentiates through the expert, which inference_mode forbids.
        with torch.no_grad() if guidance is not None else torch.inference_mode():
            actions = self._model.sample_actions(**batch, noise=noise.to(self._device), prefix=guidance)
        actions = self._processor.unnormalize_actions(actions)[0]
        if self.relative_actions is not None:
            actions = self.relative_actions.from_model(actions, observation[STATE])
        return actions

    def close(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        self._model = None

    # -- internals -------------------------------------------------------------------------------------------------

    def _guidance(self, prefix: ChunkPrefix | None, state: np.ndarray) -> RTCGuidance | None:
        if prefix is None or len(prefix.actions) == 0:
            return None
        actions = np.asarray(prefix.actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self._config.action_dim:
            raise PolicyError(f"smolvla: chunk prefix of shape {actions.shape}, expected (n, "
                              f"{self._config.action_dim})")
        if self.relative_actions is not None:
            actions = self.relative_actions.to_model(actions, state)
        return RTCGuidance(
            actions=self._processor.normalize_actions(actions[None]).to(self._device),
            inference_delay_steps=prefix.inference_delay_steps,
            execution_horizon=prefix.execution_horizon,
            action_dim=self._config.action_dim,
            max_guidance_weight=MAX_GUIDANCE_WEIGHT,
        )

    def _warm_up(self, features: PolicyFeatures) -> None:
        size = features.image_size or (224, 224)
        observation: PolicyObservation = {STATE: np.zeros(features.state_dim, dtype=np.float32),
                                          TASK: WARMUP_INSTRUCTION}
        for key in features.camera_keys:
            observation[image_key(key)] = np.zeros((*size, 3), dtype=np.uint8)
            observation[image_mask_key(key)] = True
        self.sample(observation, torch.zeros(1, features.chunk_size, self._config.max_action_dim))


def load_smolvla(path: Path, *, embodiment: EmbodimentConfig, device: str = "auto", dtype: str = "auto",
                 warmup: bool = True) -> SmolVLAPolicy:
    started = time.perf_counter()
    torch_device = select_device(device)
    torch_dtype = select_dtype(torch_device, dtype)
    checkpoint = load_checkpoint(path, device=torch_device, dtype=torch_dtype)
    return SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s, embodiment=embodiment,
                         warmup=warmup, load_started_s=started)


def _relative_actions(checkpoint: SmolVLACheckpoint, embodiment: EmbodimentConfig | None) -> RelativeActions | None:
    """The checkpoint's relative-action transform for this robot; None where it predicts absolute actions."""
    mode = checkpoint.config.extra.get(RELATIVE_ACTIONS_KEY)
    if mode is None or mode == {}:
        return None
    source = str(checkpoint.directory / "config.json")
    if embodiment is None:
        raise ConfigError("this checkpoint predicts arm joints relative to the state and must know the robot and "
                          "which of its joints are grippers: load it for a robot (an embodiment config)",
                          source=source, key=RELATIVE_ACTIONS_KEY)
    unknown = [m for m in (mode.values() if isinstance(mode, dict) else [mode]) if m not in RELATIVE_ACTION_MODES]
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a relative-action mode this version of vla_ros knows "
                          f"({', '.join(RELATIVE_ACTION_MODES)})", source=source, key=RELATIVE_ACTIONS_KEY)
    if isinstance(mode, dict) and embodiment.robot not in mode:
        return None
    return RelativeActions(embodiment)
