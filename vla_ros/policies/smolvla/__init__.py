"""SmolVLA (LeRobot's checkpoints) on transformers' SmolVLM classes, our own implementation, fully offline.

config.py (LeRobot's config.json), modeling.py (the network, trainable), processor.py (normalization,
tokenization, images), checkpoint.py (LeRobot's directory layout, finding the VLM locally), rtc.py (real-time
chunking's guidance schedule), policy.py (the Policy), tiny.py (small backbones and tokenizers from scratch).
Nothing heavy is imported until a policy is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vla_ros.policies.device import import_torch, import_transformers

if TYPE_CHECKING:
    from vla_ros.core.embodiment import EmbodimentConfig
    from vla_ros.policies.base import Policy
    from vla_ros.policies.factory import PolicyOptions


def load_policy(path: str | Path, *, embodiment: EmbodimentConfig, options: PolicyOptions | None = None) -> Policy:
    """The factory's entry point for checkpoints whose config.json says `smolvla`."""
    from vla_ros.policies.factory import PolicyOptions

    options = options or PolicyOptions()
    import_torch()
    import_transformers("The SmolVLA policy")
    from vla_ros.policies.smolvla.policy import load_smolvla

    return load_smolvla(Path(path), embodiment=embodiment, device=options.device, dtype=options.dtype,
                        warmup=options.warmup, patch_positions=options.patch_positions,
                        image_resize=options.image_resize)
