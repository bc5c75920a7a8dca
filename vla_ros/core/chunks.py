"""What a policy is given besides the observation: the part of the current chunk a new chunk must continue.

In core so that the control path (pipeline, scheduler) and every policy backend share the type without core
depending on policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkPrefix:
    """The part of the current chunk that a new chunk must continue (real-time chunking, arXiv 2506.07339).

    Step i of `actions` is for the new observation's time + i*dt, in policy units (unnormalized), like the
    chunk the policy returns. Policies that cannot use it (metadata.supports_prefix False) ignore it.
    """

    actions: np.ndarray  # (n, action_dim): the old chunk's actions not yet executed at observation time
    inference_delay_steps: int  # d: steps that execute while the new chunk is computed; frozen to `actions`
    execution_horizon: int  # s: steps executed per chunk; steps from n on are left free
