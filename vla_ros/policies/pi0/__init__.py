"""pi0 through transformers' PI0 classes (transformers >= 5.4), loaded from a local checkpoint directory.

LeRobot-format pi0 checkpoints (`"type": "pi0"`, with LeRobot's processor files) load through
vla_ros.policies.pi05, which implements LeRobot's pi0 and pi0.5. Camera naming, checkpoint layout and
normalization of the transformers format: see `checkpoint.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vla_ros.policies.device import import_torch
from vla_ros.policies.pi0.checkpoint import read_json, require_transformers

if TYPE_CHECKING:
    from vla_ros.core.embodiment import EmbodimentConfig
    from vla_ros.policies.base import Policy
    from vla_ros.policies.factory import PolicyOptions


def load_policy(path: str | Path, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    """The factory's entry point for checkpoints whose config.json says `pi0`: LeRobot's format or transformers'."""
    if _is_lerobot_format(Path(path)):
        from vla_ros.policies.pi05 import load_policy as load_lerobot_policy

        return load_lerobot_policy(path, embodiment=embodiment, options=options)
    import_torch()
    require_transformers()  # before importing PI0 classes, so that an old transformers gets a clear message
    from vla_ros.policies.pi0.policy import load_pi0

    return load_pi0(Path(path), embodiment=embodiment, device=options.device, dtype=options.dtype,
                    warmup=options.warmup)


def _is_lerobot_format(path: Path) -> bool:
    """LeRobot writes `"type"`; transformers writes `"model_type"` and a `vlm_config`."""
    config = read_json(path / "config.json")
    return config.get("type") is not None and "vlm_config" not in config
