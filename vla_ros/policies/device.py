"""Where and in what precision a torch policy runs: one rule for every backend."""

from __future__ import annotations

from vla_ros.core.errors import ConfigError, MissingDependencyError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # "cuda:N" also accepted
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def add_device_arguments(parser, *, dtype_help: str = "") -> None:
    """`--device` and `--dtype` for a command that loads a model (`parser` is an argparse parser)."""
    parser.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N "
                        "or mps")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help=dtype_help or "auto (default): bfloat16/float16 on GPUs, float32 on the CPU")


def import_torch():
    """torch, or an error saying how to install it without pulling the CUDA build by accident."""
    try:
        import torch
    except ImportError as exc:
        # Say torch first: `pip install vla_ros[policies]` alone would pull the multi-GB CUDA build.
        raise MissingDependencyError(
            "torch==2.13.0' first (or the build for your CUDA version), then 'transformers", "policies",
            "A learned policy",
        ) from exc
    return torch


def select_device(name: str = "auto"):
    """A torch.device: `auto` takes CUDA, then Apple's MPS, then the CPU; an unavailable choice is an error."""
    torch = import_torch()
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.split(":")[0] not in DEVICE_CHOICES[1:]:
        raise ConfigError(f"device '{name}' is not one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU: use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for, but Apple's Metal backend is not available: use --device cpu")
    return device


def select_dtype(device, name: str = "auto"):
    """Compute dtype: `auto` is bfloat16 on GPUs that support it, float16 on other GPUs, float32 on the CPU.

    The CPU stays in float32: bfloat16 matmuls are slower than float32 on most CPUs without AMX.
    """
    torch = import_torch()
    name = name.strip().lower()
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"dtype '{name}' is not one of {', '.join(DTYPE_CHOICES)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    return getattr(torch, name)
