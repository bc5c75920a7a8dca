"""`vla-ros bench grounding` against the scripted expert, and against a policy that ignores the instruction."""

from __future__ import annotations

import json

import pytest

from vla_ros.bench.grounding import measure
from vla_ros.cli.main import main
from vla_ros.core.features import TASK
from vla_ros.policies.expert.policy import ExpertPolicy

pytest.importorskip("mujoco", reason="the grounding bench runs the MuJoCo simulator (pip install -e '.[sim]')")


class AlwaysRedPolicy(ExpertPolicy):
    """The expert, deaf to the instruction: it reaches for the red cube whatever it is told."""

    def predict_chunk(self, observation, prefix=None):
        return super().predict_chunk({**observation, TASK: "touch the red cube"}, prefix)


@pytest.fixture(scope="module")
def so101():
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.sim.episodes import make_world

    embodiment = load_embodiment("so101")
    world = make_world(embodiment, ("red", "green", "blue"), camera_size=(48, 64))
    yield embodiment, world
    world.close()


def test_the_expert_is_grounded_on_every_layout(so101):
    embodiment, world = so101
    results = measure(ExpertPolicy(world, embodiment), embodiment, world, task_family="touch", layouts=3, seed=0)
    assert results["grounding_accuracy"] == 1.0
    assert results["instruction_sensitivity"] == pytest.approx(1.0, abs=1e-6)
    assert [layout["seed"] for layout in results["layouts"]] == [0, 1, 2]


def test_a_policy_deaf_to_the_instruction_scores_chance_and_zero_sensitivity(so101):
    embodiment, world = so101
    results = measure(AlwaysRedPolicy(world, embodiment), embodiment, world, task_family="touch", layouts=3, seed=5)
    assert results["grounding_accuracy"] == pytest.approx(1 / 3) == results["chance"]
    assert results["instruction_sensitivity"] == pytest.approx(0.0, abs=1e-9)
    for layout in results["layouts"]:
        assert layout["nearest_expert_chunk"] == {"red": "red", "green": "red", "blue": "red"}


def test_cli_prints_and_writes_the_same_json(tmp_path, capsys):
    out = tmp_path / "grounding.json"
    assert main(["bench", "grounding", "--policy", "expert", "--robot", "panda", "--layouts", "2", "--seed", "7",
                 "--colors", "red,blue", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["robot"] == "panda" and printed["colors"] == ["red", "blue"] and printed["chance"] == 0.5
    assert printed["grounding_accuracy"] == 1.0
