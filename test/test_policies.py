"""Every registered policy passes the conformance check; the factory refuses what it cannot build."""

from __future__ import annotations

import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import ConfigError
from vla_ros.policies.checks import check_policy
from vla_ros.policies.factory import POLICY_NAMES, make_policy
from vla_ros.sim.world import SimWorld


@pytest.mark.parametrize("robot", ["so101", "panda"])
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_registered_policies_conform(robot, name):
    embodiment = load_embodiment(robot)
    world = SimWorld(robot, render=False)
    policy = make_policy(name, embodiment=embodiment, world=world)
    check_policy(policy, embodiment)


def test_expert_is_labelled_as_not_learned():
    embodiment = load_embodiment("so101")
    policy = make_policy("expert", embodiment=embodiment, world=SimWorld("so101", render=False))
    assert policy.metadata.learned is False and "not a VLA" in policy.metadata.description


def test_expert_needs_the_simulator():
    with pytest.raises(ConfigError, match="runs only in simulation"):
        make_policy("expert", embodiment=load_embodiment("so101"))


def test_unknown_policy_lists_choices():
    with pytest.raises(ConfigError, match="unknown policy 'expret'.*Did you mean 'expert'"):
        make_policy("expret", embodiment=load_embodiment("so101"))
