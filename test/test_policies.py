"""Every registered policy passes the conformance check; the factory refuses what it cannot build."""

from __future__ import annotations

import pytest

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import ConfigError
from vla_ros.policies.checks import check_policy
from vla_ros.policies.factory import checkpoint_type, make_policy
from vla_ros.sim.world import SimWorld


@pytest.mark.parametrize("robot", ["so101", "panda"])
@pytest.mark.parametrize("name", ["expert"])
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


def test_missing_checkpoint_directory_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint directory.*never downloaded"):
        make_policy(str(tmp_path / "nope"), embodiment=load_embodiment("so101"))


def test_checkpoint_type_comes_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"type": "smolvla"}')
    assert checkpoint_type(tmp_path) == "smolvla"
    (tmp_path / "config.json").write_text('{"model_type": "pi0"}')
    assert checkpoint_type(tmp_path) == "pi0"


def test_checkpoint_of_unknown_type_is_refused_with_choices(tmp_path):
    (tmp_path / "config.json").write_text('{"type": "smolvlaa"}')
    with pytest.raises(ConfigError, match="'smolvlaa' has no backend.*Did you mean 'smolvla'"):
        make_policy(str(tmp_path), embodiment=load_embodiment("so101"))


def test_directory_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        make_policy(str(tmp_path), embodiment=load_embodiment("so101"))
