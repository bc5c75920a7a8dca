"""`vla-ros bench generalization`: which cells run, the table and plot, reproducibility, and operator errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from vla_ros.bench.generalization import AXES, plan_cells, table
from vla_ros.cli.main import main
from vla_ros.core.errors import ConfigError
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.factory import PolicyOptions, make_policy
from vla_ros.sim.closed_loop import LoopSettings, run_episode
from vla_ros.sim.episodes import make_world
from vla_ros.sim.robots import load_simulated_embodiment
from vla_ros.sim.tasks import TouchTask


def test_perturbation_axes_run_on_the_trained_arms_and_the_arm_axis_on_the_others():
    cells = plan_cells(["so101", "fr3", "panda"], ["so101", "panda"], ["layouts", "camera", "arm"])
    assert [(robot, axis.name) for robot, axis in cells] == [
        ("so101", "layouts"), ("so101", "camera"), ("fr3", "arm"), ("panda", "layouts"), ("panda", "camera")]
    with pytest.raises(ConfigError, match="the 'arm' axis needs an arm outside --trained-robots"):
        plan_cells(["so101"], ["so101", "panda"], ["arm"])


def test_every_axis_but_layouts_and_arm_changes_the_scene_or_the_instructions():
    baseline = AXES["layouts"]
    for name, axis in AXES.items():
        changed = (axis.colors, axis.targets, axis.variation) != (baseline.colors, baseline.targets,
                                                                 baseline.variation)
        assert changed == (name not in ("layouts", "arm")), name
    assert AXES["colour"].targets == ("yellow",) and "yellow" in AXES["colour"].colors
    assert "3.0 cm" in AXES["camera"].describe()


def test_the_table_puts_each_held_out_arm_in_its_own_row_under_the_first_column():
    def cell(robot, axis, successes):
        return {"robot": robot, "axis": axis, "success_rate": successes / 4, "successes": successes,
                "episodes_run": 4}

    results = {"axes": {"layouts": "", "lighting": "", "arm": ""},
               "cells": [cell("so101", "layouts", 4), cell("so101", "lighting", 1), cell("gen3", "arm", 0)]}
    assert table(results).splitlines() == [
        "| arm | held-out layouts | lighting |",
        "|---|---|---|",
        "| so101 | 1.00 (4/4) | 0.25 (1/4) |",
        "| gen3 (held-out arm) | 0.00 (0/4) | - |",
    ]


def test_the_command_writes_json_plot_and_table_for_the_expert(tmp_path, capsys):
    out, png = tmp_path / "gen.json", tmp_path / "gen.png"
    code = main(["bench", "generalization", "--policy", "expert", "--robots", "so101,gen3", "--axes",
                 "colour,distractors,arm", "--episodes", "1", "--seed", "4", "--json", str(out), "--plot", str(png),
                 "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert [(c["robot"], c["axis"], c["held_out_arm"]) for c in results["cells"]] == [
        ("so101", "colour", False), ("so101", "distractors", False), ("gen3", "arm", True)]
    assert all(c["success_rate"] == 1.0 and c["episodes"][0]["seed"] == 4 for c in results["cells"])
    assert results["cells"][0]["episodes"][0]["instruction"] == "touch the yellow cube"
    assert results["latency_model"]["measured_wall_time"] is False  # reproducible on a busy machine
    assert set(results["machine"]) >= {"cores", "load_average_1min_at_end", "cpu_busy_fraction"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "| so101 | 1.00 (1/1) | 1.00 (1/1) |" in err and "| gen3 (held-out arm) | 1.00 (1/1) | - |" in err
    assert "- distractors: three more objects" in err and "machine: load average" in err


def test_the_built_in_vla_commands_the_same_whether_or_not_the_machine_is_slow(monkeypatch):
    """The bench's default loop charges no wall time, so a busy machine changes nothing it measures."""
    monkeypatch.setattr(TouchTask, "max_duration_s", 1.5)  # three chunks are enough to compare
    embodiment = load_simulated_embodiment("so101")
    axis = AXES["lighting"]
    with make_world(embodiment, axis.colors, variation=axis.variation) as world:
        policy = make_policy("builtin", embodiment=embodiment, world=world, options=PolicyOptions(threads=1))
        predict = policy.predict_chunk

        def slow_predict(*args, **kwargs):
            time.sleep(0.15)  # a chunk 3 control ticks late, were wall time charged
            return predict(*args, **kwargs)

        def commands(slow: bool) -> np.ndarray:
            monkeypatch.setattr(policy, "predict_chunk", slow_predict if slow else predict)
            pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig(),
                                      supports_prefix=policy.metadata.supports_prefix)
            log = run_episode(world, TouchTask("green"), seed=2, policy=policy, pipeline=pipeline,
                              settings=LoopSettings(measure_latency=False))
            return np.asarray(log.commanded)

        quick = commands(slow=False)
        np.testing.assert_array_equal(commands(slow=True), quick)
        assert np.ptp(quick, axis=0).max() > 0.01  # the arm moved: there was something to compare


@pytest.mark.parametrize(("argv", "message"), [
    (["--axes", "lights"], "--axes: unknown value 'lights'"),
    (["--robots", "ur5e"], "--robots: unknown value 'ur5e'"),
    (["--episodes", "0"], "--episodes must be 1 or more"),
])
def test_bad_flags_get_one_line_naming_the_flag(argv, message, capsys):
    assert main(["bench", "generalization", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err
