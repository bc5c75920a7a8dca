"""The scripted expert as a Policy, so that the whole pipeline (adapter, scheduler, safety) runs around it."""

from __future__ import annotations

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.features import STATE, TASK, PolicyFeatures, PolicyObservation
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.sim.experts import ScriptedExpert
from vla_ros.sim.tasks import parse_instruction
from vla_ros.sim.world import SimWorld

CHUNK_DURATION_S = 1.0  # one second of motion per chunk, like pi0's 50 steps at 50 Hz
POLICY_WIDTH = 32  # SmolVLA's and pi0's padded state/action width, so the expert exercises padding too


class ExpertPolicy(Policy):
    """Plans with simulator ground truth, then speaks in policy units like any learned policy would."""

    def __init__(self, world: SimWorld, embodiment: EmbodimentConfig):
        if tuple(world.joint_names) != embodiment.joint_names:
            raise ValueError(f"simulated robot joints {world.joint_names} differ from {embodiment.joint_names}")
        features = PolicyFeatures(
            state_dim=POLICY_WIDTH,
            action_dim=POLICY_WIDTH,
            chunk_size=round(CHUNK_DURATION_S * embodiment.control_rate_hz),
            action_dt_s=embodiment.control_period_s,
            camera_keys=tuple(c.policy_key for c in embodiment.cameras),
        )
        self.metadata = PolicyMetadata(
            name="expert",
            features=features,
            description="scripted expert using simulator ground truth (not a VLA)",
            learned=False,
        )
        self._world = world
        self._adapter = EmbodimentAdapter(embodiment, features)
        self._expert: ScriptedExpert | None = None
        self._instruction: str | None = None

    def reset(self, *, seed: int | None = None) -> None:  # deterministic: nothing to seed
        self._expert, self._instruction = None, None

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        features = self.metadata.features
        with self._world.lock:  # the world may be stepped by another thread (the ROS demo container)
            if self._expert is None or observation[TASK] != self._instruction:
                self._instruction = observation[TASK]
                self._expert = ScriptedExpert(self._world, parse_instruction(self._instruction))
            targets = self._expert.plan(features.chunk_size, features.action_dt_s)
        state = self._adapter.state_from_policy(observation[STATE])
        return self._adapter.robot_to_actions(targets, state)
