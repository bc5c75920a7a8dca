"""pi0's pre- and post-processing through transformers' PI0Processor, and the mirror of its normalization.

PI0Processor builds the prompt (image tokens, then the instruction), tokenizes it and normalizes the
state; it does not unnormalize actions, which `unnormalize_actions` does with the same statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PI0Processor
from transformers.image_processing_backends import PilBackend
from transformers.models.pi0.image_processing_pi0 import PI0ImageProcessor

from vla_ros.core.errors import ConfigError
from vla_ros.policies.pi0.checkpoint import PROCESSOR_CONFIG, NormalizationStats

NORMALIZATION_EPS = 1e-8  # PI0Processor divides by std + 1e-8

# PI0ImageProcessor runs on torchvision, whose PyPI wheels pull the CUDA build of torch; the PIL backend
# performs the same steps (resize within max size, pad, rescale, normalize) with the same defaults.
Pi0PilImageProcessor = type("Pi0PilImageProcessor", (PilBackend,), {
    name: getattr(PI0ImageProcessor, name)
    for name in ("resample", "image_mean", "image_std", "size", "default_to_square", "do_resize", "do_rescale",
                 "do_normalize", "do_convert_rgb", "image_seq_length", "pad_size", "do_pad")
})


def build_processor(path: Path | None, processor_config: dict, *, tokenizer=None) -> PI0Processor:
    """A PI0Processor from a checkpoint's processor_config.json and tokenizer (loaded offline from `path`)."""
    source = str(path / PROCESSOR_CONFIG) if path is not None else "processor config"
    image_settings = dict(processor_config.get("image_processor") or {})
    image_settings.pop("image_processor_type", None)
    try:
        image_processor = Pi0PilImageProcessor(**image_settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid image processor settings: {exc}", source=source, key="image_processor") from exc
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the tokenizer: {exc}", source=str(path)) from exc
    kwargs = {key: processor_config[key] for key in ("state_mean", "state_std", "actions_mean", "actions_std",
                                                      "max_state_dim", "chunk_size") if key in processor_config}
    return PI0Processor(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def unnormalize_actions(actions: torch.Tensor, stats: NormalizationStats) -> np.ndarray:
    """(chunk, max_action_dim) normalized model output -> (chunk, action_dim) float32 policy units."""
    normalized = actions[:, : stats.action_dim].float().cpu().numpy()
    return (normalized * (stats.action_std + NORMALIZATION_EPS) + stats.action_mean).astype(np.float32)
