"""The one policy interface used by the CLI, the nodes and the policy server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vla_ros.core.chunks import ChunkPrefix
from vla_ros.core.features import PolicyFeatures, PolicyObservation

__all__ = ["ChunkPrefix", "Policy", "PolicyMetadata"]  # ChunkPrefix lives in core; importable from here too


@dataclass(frozen=True)
class PolicyMetadata:
    name: str  # e.g. "expert", "builtin", "smolvla", "pi0", "remote"
    features: PolicyFeatures
    description: str = ""  # one line for logs and the demo's output
    learned: bool = True  # False for scripted experts: never present one as a VLA
    # How the policy normalizes each feature inside its own pre/post-processing, e.g.
    # {"observation.state": "MEAN_STD", "action": "MEAN_STD"}; callers always pass and get raw policy units.
    normalization: Mapping[str, str] = field(default_factory=dict)
    device: str = "cpu"  # where inference runs ("cpu", "cuda:0", "mps", or the server's address)
    dtype: str = "float32"  # compute precision of the model
    load_time_s: float = 0.0  # wall time to load the checkpoint and warm up, for logs and status
    supports_prefix: bool = False  # predict_chunk honours a ChunkPrefix (flow-matching policies with RTC)
    threads: int | None = None  # CPU threads of the model's operations (None: not a local model)
    threads_reason: str = ""  # why that many, for logs


class Policy(ABC):
    """Predicts chunks of actions from observations keyed by LeRobot feature names.

    Inputs and outputs are in policy units, unnormalized: the backend owns its normalization.
    """

    metadata: PolicyMetadata

    @abstractmethod
    def reset(self, *, seed: int | None = None) -> None:
        """Forget per-episode state (call at the start of every episode); with `seed`, sampling is reproducible."""

    @abstractmethod
    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        """(chunk_size, action_dim) float32 actions in policy units; action i is for `observation`'s time + i*dt."""

    def close(self) -> None:  # noqa: B027 - optional hook: most policies hold nothing to free
        """Free the model or the connection; the policy is unusable afterwards."""
