"""Conformance check that every policy backend must pass (in the spirit of Gymnasium's `check_env`)."""

from __future__ import annotations

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import PolicyError
from vla_ros.policies.base import Policy


def check_policy(policy: Policy, embodiment: EmbodimentConfig, *, instruction: str = "touch the red cube") -> None:
    """Raise PolicyError unless `policy` serves `embodiment` through the adapter as its metadata promises."""
    features = policy.metadata.features
    adapter = EmbodimentAdapter(embodiment, features)
    batch, state = adapter.to_policy_observation(embodiment.example_observation(instruction=instruction))
    policy.reset()
    actions = policy.predict_chunk(batch)
    name = policy.metadata.name
    if not isinstance(actions, np.ndarray):
        raise PolicyError(f"policy '{name}' returned {type(actions).__name__}, expected a numpy array")
    if actions.shape != (features.chunk_size, features.action_dim):
        raise PolicyError(f"policy '{name}' returned actions of shape {actions.shape}, its metadata promises "
                          f"({features.chunk_size}, {features.action_dim})")
    if not np.issubdtype(actions.dtype, np.floating) or not np.all(np.isfinite(actions)):
        raise PolicyError(f"policy '{name}' returned non-finite or non-float actions ({actions.dtype})")
    targets = adapter.actions_to_robot(actions, state)
    if targets.shape != (features.chunk_size, len(embodiment.joints)):
        raise PolicyError(f"policy '{name}': adapter produced {targets.shape} joint targets")
