"""Where and in what precision a torch policy runs: one rule for every backend."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from vla_ros.core.errors import ConfigError, MissingDependencyError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # "cuda:N" also accepted
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def add_device_arguments(parser, *, dtype_help: str = "") -> None:
    """`--device` and `--dtype` for a command that loads a model (`parser` is an argparse parser)."""
    parser.add_argument(
        "--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help=dtype_help or "auto (default): bfloat16/float16 on GPUs, float32 on the CPU",
    )
    parser.add_argument(
        "--threads",
        type=parse_threads,
        default=None,
        metavar="N|auto",
        help="CPU threads of the model's operations (default auto: 1 for small models such as the "
        "built-in VLA, else all cores but one; the log says what was chosen and why)",
    )


def parse_threads(text: str) -> int | None:
    """`--threads`: a number of threads >= 1, or `auto` (None)."""
    import argparse

    if text.strip().lower() == "auto":
        return None
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of threads: give 1 or more, or auto")
    return threads


def import_torch():
    """torch, or an error saying how to install it without pulling the CUDA build by accident."""
    try:
        import torch
    except ImportError as exc:
        # Say torch first: `pip install vla_ros[policies]` alone would pull the multi-GB CUDA build.
        raise MissingDependencyError(
            "torch==2.13.0' first (or the build for your CUDA version), then 'transformers",
            "policies",
            "A learned policy",
        ) from exc
    return torch


def import_transformers(what: str):
    """transformers, or an error saying that `what` (e.g. "The SmolVLA policy") needs it and how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "policies", what) from exc
    return transformers


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


# Below this much weight data a model's matrix products are too small to gain from splitting across cores, and the
# threads mostly wait for each other: in the demo's closed loop on a shared 2-core machine the built-in VLA (4 MB)
# took 133 ms per chunk on 1 thread and 4.4 s on 2 (docs/benchmarks.md, "Inference threads"). 64 MB is a judgement,
# not a measured crossover: SmolVLA-size models (about 900 MB) are far above it.
SMALL_MODEL_BYTES = 64 * 2**20
THREADS_ENV = "OMP_NUM_THREADS"


@dataclass(frozen=True)
class ThreadPlan:
    """How many CPU threads a model's operations use (torch intra-op, OpenCV), and why, for the log."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} inference thread{'s' if self.threads != 1 else ''} ({self.reason})"


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def plan_threads(
    requested: int | None,
    *,
    device_type: str,
    weights_bytes: int,
    cpus: int | None = None,
    environment: dict[str, str] | None = None,
) -> ThreadPlan:
    """The threads a model runs with: `requested` if given, else chosen so that inference leaves room for the
    control loop and rendering (an oversubscribed core makes every thread of a parallel operation wait for the
    slowest, which turns a busy machine's slowdown of 1.5x into 10x and more).

    `device_type`: where the model runs ("cpu", "cuda", "mps"); `weights_bytes`: size of its weights on disk.
    """
    environment = os.environ if environment is None else environment
    cpus = cpus or available_cpus()
    if requested is not None:
        if requested < 1:
            raise ConfigError(
                f"inference threads must be 1 or more, got {requested}: give a number of threads, or leave it "
                "out (node parameter inference_threads: -1) to have it chosen from the model's size and the cores"
            )
        return ThreadPlan(requested, f"as asked; {cpus} cores available")
    if environment.get(THREADS_ENV, "").strip().isdigit() and int(environment[THREADS_ENV]) >= 1:
        return ThreadPlan(int(environment[THREADS_ENV]), f"from ${THREADS_ENV}")
    megabytes = weights_bytes / 2**20
    if device_type != "cpu":
        return ThreadPlan(1, f"the model runs on {device_type}; the CPU only prepares its inputs")
    if weights_bytes < SMALL_MODEL_BYTES:
        return ThreadPlan(
            1,
            f"a {megabytes:.0f} MB model is too small to gain from more threads; the other "
            f"{cpus - 1} of {cpus} cores stay free for rendering and the control loop",
        )
    threads = max(1, cpus - 1)
    return ThreadPlan(
        threads, f"a {megabytes:.0f} MB model on {cpus} cores: one core stays free for the control loop and rendering"
    )


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's and OpenCV's thread pools to `plan.threads`; call before the model's first forward pass.

    The inter-op pool (parallel independent operations) is set to one thread: inference runs its operations in
    sequence. torch accepts that only before its first parallel work; a later call keeps what was set first.
    """
    torch = import_torch()
    torch.set_num_threads(plan.threads)
    if torch.get_num_interop_threads() != 1:
        # Fails once parallel work has run in this process: the pool keeps its size then.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(plan.threads)  # image resizing on the inference path


def weights_bytes(checkpoint: Path) -> int:
    """Size of the weight files (*.safetensors, *.bin, *.pt) directly in a checkpoint directory."""
    return sum(
        path.stat().st_size
        for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth")
        for path in checkpoint.glob(pattern)
        if path.is_file()
    )
