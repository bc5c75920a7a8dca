"""pi0 and pi0.5 checkpoints in LeRobot's format (`"type": "pi0"` / `"pi05"`), our own implementation, offline.

config.py (LeRobot's config.json and the Gemma variants), modeling.py (the network on transformers' SigLIP,
PaliGemma projector and Gemma), processor.py (normalization, prompts, images), checkpoint.py (LeRobot's directory
layout and processor files), policy.py (the Policy). Transformers-format pi0 checkpoints (`"model_type": "pi0"`)
load through vla_ros.policies.pi0 instead. Nothing heavy is imported until a policy is loaded.
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
    """The factory's entry point for LeRobot checkpoints whose config.json says `pi0` or `pi05`."""
    from vla_ros.policies.factory import PolicyOptions

    options = options or PolicyOptions()
    import_torch()
    import_transformers("The pi0/pi0.5 policy")
    from vla_ros.policies.pi05.policy import load_pi

    return load_pi(
        Path(path),
        embodiment=embodiment,
        device=options.device,
        dtype=options.dtype,
        warmup=options.warmup,
        image_resize=options.image_resize,
    )
