"""The one policy interface used by the CLI, the nodes and the policy server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from vla_ros.core.features import PolicyFeatures, PolicyObservation


@dataclass(frozen=True)
class PolicyMetadata:
    name: str  # e.g. "expert", "builtin", "smolvla"
    features: PolicyFeatures
    description: str = ""  # one line for logs and the demo's output
    learned: bool = True  # False for scripted experts: never present one as a VLA


class Policy(ABC):
    """Predicts chunks of actions from observations keyed by LeRobot feature names."""

    metadata: PolicyMetadata

    @abstractmethod
    def reset(self) -> None:
        """Forget per-episode state (call at the start of every episode)."""

    @abstractmethod
    def predict_chunk(self, observation: PolicyObservation) -> np.ndarray:
        """(chunk_size, action_dim) float32 actions in policy units; action i is for `observation`'s time + i*dt."""
