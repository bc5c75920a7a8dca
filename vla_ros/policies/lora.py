"""Low-rank adapters (LoRA) for parameter-efficient fine-tuning of the large policies.

`add_lora(model)` wraps the attention projections in `LoRALinear` and freezes everything else: only
r * (in + out) parameters per projection train. `merge_lora(model)` folds the adapters back into plain
`nn.Linear` weights, so the fine-tuned checkpoint has the original architecture and loads anywhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections of the VLM and the expert


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A x, with W, b frozen; B starts at zero, so training starts at the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initializes its weight
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight: code that reads a projection's dtype or device keeps working."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the adapter folded into its weight."""
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        self.base.weight.requires_grad_(True)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(True)
        return self.base


def add_lora(model: nn.Module, *, rank: int = 8, alpha: float = 16.0,
             targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
    """Freeze `model` and wrap every nn.Linear named in `targets`; returns how many layers were wrapped."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped += 1
    if wrapped == 0:
        raise ValueError(f"no nn.Linear layers named {list(targets)} in {type(model).__name__}: nothing to adapt")
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by its merged nn.Linear; returns how many were merged."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                merged += 1
    return merged
