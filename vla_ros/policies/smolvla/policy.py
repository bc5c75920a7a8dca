"""SmolVLAPolicy: our SmolVLA network behind the vla_ros Policy interface, with real-time chunking."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyFeatures, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.device import select_device, select_dtype
from vla_ros.policies.lerobot_format import IMAGE_RESIZES
from vla_ros.policies.smolvla.checkpoint import (
    VLA_ROS_FILE,
    SmolVLACheckpoint,
    load_checkpoint,
    load_robot_stats,
    robot_stats_path,
)
from vla_ros.policies.smolvla.modeling import RTCGuidance
from vla_ros.policies.smolvla.processor import RelativeActions, batch_to

WARMUP_INSTRUCTION = "warm up"
# vla_ros.json keys (older checkpoints: config.json keys vla_ros_<key>, still read).
# image_padding: "center" where the model was trained by vla_ros on the adapter's OpenCV resize with centred
# padding (the built-in one): the adapter then resizes, as in its training. Absent: a LeRobot checkpoint, which
# sees each camera frame exactly as LeRobot's robot pipeline prepares it (policy-side resize, top-left padding).
IMAGE_PADDING_KEY = "image_padding"
# relative_actions: "arm_joints" where the network predicts the arm joints' actions as offsets from the
# observation's state (grippers stay absolute), or {robot: "arm_joints"} for the robots where it does; the others'
# are absolute. LeRobot's SmolVLA predicts absolute actions: in LeRobot such a checkpoint's arm actions are offsets.
RELATIVE_ACTIONS_KEY = "relative_actions"
RELATIVE_ACTION_MODES = ("arm_joints",)
LOGGER = logging.getLogger("vla_ros.policies.smolvla")
MAX_GUIDANCE_WEIGHT = 5.0  # beta of the RTC paper: caps the guidance early and late in the flow


class SmolVLAPolicy(Policy):
    """SmolVLA flow-matching policy; inputs and outputs in policy units, normalized inside.

    A camera whose mask is False (missing, or no image arrived) is masked out of attention, as LeRobot does
    with its empty cameras. Noise comes from the policy's own generator: `reset(seed=...)` makes the following
    chunks reproducible. With a ChunkPrefix, sampling is guided toward the old chunk (real-time chunking).
    """

    def __init__(self, checkpoint: SmolVLACheckpoint, *, action_dt_s: float, embodiment: EmbodimentConfig | None = None,
                 warmup: bool = True, load_started_s: float | None = None, image_resize: str = "exact"):
        """`embodiment`: the robot driven; its `<checkpoint>/norm_stats/<robot>.safetensors` replace the checkpoint's
        stats if they exist, and its grippers are what a relative-action checkpoint keeps absolute.
        `load_started_s`: time.perf_counter() when loading began, for metadata.load_time_s. `image_resize`: one
        of IMAGE_RESIZES (checkpoints vla_ros trained with centred padding always resize as in training)."""
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
        if image_resize not in IMAGE_RESIZES:
            raise ConfigError(f"image resize '{image_resize}' is not one of {', '.join(IMAGE_RESIZES)}")
        padding = config.vla_ros.get(IMAGE_PADDING_KEY, "top_left")
        features = PolicyFeatures(state_dim=config.state_dim, action_dim=config.action_dim,
                                  chunk_size=config.chunk_size, action_dt_s=action_dt_s,
                                  camera_keys=config.camera_keys, image_size=config.image_size,
                                  image_padding=padding,
                                  resizes_images=image_resize == "exact" and padding == "top_left")
        self.patch_positions = checkpoint.model.vlm_with_expert.patch_positions
        self.patch_positions_reason = checkpoint.patch_positions_reason
        if warmup:
            self._warm_up(features)
        n_parameters = sum(p.numel() for p in self._model.parameters())
        dtype_name = str(self._dtype).removeprefix("torch.")
        self.metadata = PolicyMetadata(
            name="smolvla", features=features,
            description=(f"SmolVLA ({n_parameters / 1e6:.1f}M parameters, {config.num_steps} flow steps, "
                         f"{dtype_name} on {self._device}, stats from {stats_source}"
                         f"{', arm actions relative to the state' if self.relative_actions else ''}, "
                         f"{self.patch_positions} patch positions ({self.patch_positions_reason}), "
                         f"{'exact' if features.resizes_images else 'OpenCV'} image resize) "
                         f"from {checkpoint.directory}"),
            normalization=self._processor.modes(),
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
                 warmup: bool = True, patch_positions: str | None = None, image_resize: str = "exact"
                 ) -> SmolVLAPolicy:
    """`patch_positions`: None/"auto" (found from the checkpoint, checkpoint.patch_positions_for), "transformers4"
    or "transformers5"; which one runs, and why, is logged and in the policy's description."""
    started = time.perf_counter()
    torch_device = select_device(device)
    torch_dtype = select_dtype(torch_device, dtype)
    checkpoint = load_checkpoint(path, device=torch_device, dtype=torch_dtype, patch_positions=patch_positions)
    LOGGER.info("SmolVLA %s: %s patch positions (%s)", path, checkpoint.model.vlm_with_expert.patch_positions,
                checkpoint.patch_positions_reason)
    return SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s, embodiment=embodiment,
                         warmup=warmup, load_started_s=started, image_resize=image_resize)


def _relative_actions(checkpoint: SmolVLACheckpoint, embodiment: EmbodimentConfig | None) -> RelativeActions | None:
    """The checkpoint's relative-action transform for this robot; None where it predicts absolute actions."""
    mode = checkpoint.config.vla_ros.get(RELATIVE_ACTIONS_KEY)
    if mode is None or mode == {}:
        return None
    source = str(checkpoint.directory / VLA_ROS_FILE)
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
