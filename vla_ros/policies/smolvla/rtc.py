"""Real-time chunking's guidance schedule (Black, Galliker, Levine 2025, arXiv 2506.07339).

While one chunk executes, the next is sampled; the new chunk is guided toward the old chunk's actions that
have not run yet, so that switching chunks does not jump. Times here follow the paper: tau = 0 is noise,
tau = 1 is the clean chunk (SmolVLA's own time is t = 1 - tau).
"""

from __future__ import annotations

import math

import numpy as np


def prefix_weights(chunk_size: int, overlap_steps: int, inference_delay_steps: int, execution_horizon: int
                   ) -> np.ndarray:
    """How strongly each step of the new chunk is pulled toward the old chunk: (chunk_size,) float64 in [0, 1].

    The paper's soft mask (eq. 5), with H = chunk_size, d = inference_delay_steps, s = execution_horizon:
    1 for the first d steps (they execute before the new chunk arrives, so they must match exactly); then an
    exponentially decaying weight c_i (e^c_i - 1) / (e - 1), c_i = (end - i) / (end - d + 1); 0 from `end` on,
    where the old chunk has nothing left to continue. The paper's end is H - s; here it is also capped by
    `overlap_steps` n (the old chunk's remaining actions), so that the decay reaches zero where the old actions
    run out when fewer than H - s are left.
    """
    if chunk_size < 1 or min(overlap_steps, inference_delay_steps, execution_horizon) < 0:
        raise ValueError(f"invalid RTC sizes: H={chunk_size}, n={overlap_steps}, d={inference_delay_steps}, "
                         f"s={execution_horizon}")
    end = min(overlap_steps, chunk_size - execution_horizon, chunk_size)
    weights = np.zeros(chunk_size)
    frozen = min(inference_delay_steps, overlap_steps, chunk_size)
    weights[:frozen] = 1.0
    if end > inference_delay_steps:
        steps = np.arange(inference_delay_steps, end)
        c = (end - steps) / (end - inference_delay_steps + 1)
        weights[inference_delay_steps:end] = c * np.expm1(c) / (math.e - 1)
    return weights


def guidance_weight(tau: float, max_weight: float) -> float:
    """The guidance scale min(beta, (1 - tau) / (tau * r_tau^2)), r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).

    It grows without bound at both ends of the flow, so beta (`max_weight`, 5 in the paper) caps it; at
    tau = 0 and tau = 1 it is beta.
    """
    if tau <= 0.0 or tau >= 1.0:
        return max_weight
    return min(max_weight, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))
