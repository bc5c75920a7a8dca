"""pi0 through transformers' PI0 classes (transformers >= 5.4), loaded from a local checkpoint directory.

pi0.5 has no transformers implementation: its checkpoints are refused with the way to serve them.
Camera naming, checkpoint layout and normalization: see `checkpoint.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vla_ros.policies.device import import_torch
from vla_ros.policies.pi0.checkpoint import require_transformers

if TYPE_CHECKING:
    from vla_ros.core.embodiment import EmbodimentConfig
    from vla_ros.policies.base import Policy
    from vla_ros.policies.factory import PolicyOptions


def load_policy(path: str | Path, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    """The factory's entry point for checkpoints whose config.json says `pi0` or `pi05`."""
    import_torch()
    require_transformers()  # before importing PI0 classes, so that an old transformers gets a clear message
    from vla_ros.policies.pi0.policy import load_pi0

    return load_pi0(Path(path), embodiment=embodiment, device=options.device, dtype=options.dtype,
                    warmup=options.warmup)
