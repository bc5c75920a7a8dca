"""Policies chosen by one string; each backend is imported only when selected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.policies.base import Policy

if TYPE_CHECKING:
    from vla_ros.sim.world import SimWorld

DEFAULT_POLICY = "expert"
POLICY_NAMES = ("expert",)


def make_policy(spec: str, *, embodiment: EmbodimentConfig, world: SimWorld | None = None) -> Policy:
    """Build the policy named by `spec`.

    `expert` is the simulator's scripted expert: it reads ground truth from `world`, so it runs only in
    simulation. It is a data source and a pipeline check, not a VLA.
    """
    if spec == "expert":
        if world is None:
            raise ConfigError("policy 'expert' reads the simulator's ground truth and runs only in simulation")
        from vla_ros.policies.expert.policy import ExpertPolicy

        return ExpertPolicy(world, embodiment)
    raise ConfigError(f"unknown policy '{spec}'." + did_you_mean(spec, POLICY_NAMES))
