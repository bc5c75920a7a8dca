"""A newcomer's mistakes, each answered by one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

import sys
import time

import pytest

from vla_ros import __version__
from vla_ros.cli.main import main
from vla_ros.sim.robots import SIM_ROBOTS


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run `vla-ros argv`, which must fail as an operator error; return its single stderr line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vla-ros: error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["run", "sim"])
def test_nodes_without_the_dds_extra_name_the_extra(capsys, monkeypatch, command):
    for name in [n for n in sys.modules if n == "cyclonedds" or n.startswith(("cyclonedds.", "vla_ros.dds.node"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cyclonedds", None)  # as if the wheel were not installed
    line = _one_line_error(capsys, [command, "--backend", "dds", "--duration", "0.1"])
    assert "needs the Python package 'cyclonedds'" in line and "pip install 'vla_ros[dds]'" in line


@pytest.mark.parametrize("episodes", ["0", "-1"])
def test_no_episodes_is_refused_before_anything_loads(capsys, episodes):
    started = time.perf_counter()
    line = _one_line_error(capsys, ["demo", "--episodes", episodes, "--no-progress"])
    assert f"--episodes must be 1 or more, got {episodes}" in line
    assert time.perf_counter() - started < 5  # no model, no simulator
    line = _one_line_error(capsys, ["record", "--sim", "--episodes", episodes, "--out", "unused", "--no-progress"])
    assert f"--episodes must be 1 or more, got {episodes}" in line


def test_a_robot_the_simulator_lacks_is_named_with_the_ones_it_has(capsys):
    for robot in ("ur5", "ur5e"):
        line = _one_line_error(capsys, ["demo", "--robot", robot, "--no-progress"])
        assert f"the simulator has no robot '{robot}': it simulates {', '.join(SIM_ROBOTS)}" in line
        assert "ros2 launch vla_ros <robot>.launch.py" in line


def test_the_help_lists_the_simulated_robots(capsys):
    for argv in (["demo", "--help"], ["record", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert ", ".join(SIM_ROBOTS) in text
    assert "--sim: " + ", ".join(SIM_ROBOTS) in text  # record: any robot from topics, simulated ones with --sim


def test_targets_outside_the_scene_are_explained_in_flags(capsys):
    line = _one_line_error(capsys, ["demo", "--targets", "yellow", "--no-progress"])
    assert (
        "--targets names yellow, but the scene has only red, green, blue cubes (--colors): add it to --colors, "
        "e.g. --colors red,green,blue,yellow"
    ) in line
    line = _one_line_error(capsys, ["demo", "--colors", "red,pink", "--no-progress"])
    assert "--colors: the simulator has no pink cube" in line


def test_a_negative_latency_is_refused_in_milliseconds(capsys):
    line = _one_line_error(capsys, ["demo", "--latency-ms", "-50", "--no-progress"])
    assert "--latency-ms must be 0 ms or more, got -50" in line


def test_a_missing_checkpoint_names_the_current_download_command(capsys, tmp_path):
    line = _one_line_error(
        capsys, ["demo", "--policy", str(tmp_path / "lerobot" / "smolvla_base"), "--episodes", "1", "--no-progress"]
    )
    assert "no such checkpoint directory" in line and "`hf download <repo id> --local-dir <dir>`" in line
    assert "huggingface-cli" not in line
    line = _one_line_error(capsys, ["demo", "--policy", "lerobot/smolvla_base", "--episodes", "1", "--no-progress"])
    assert "`hf download lerobot/smolvla_base --local-dir smolvla_base`, then --policy smolvla_base" in line


def test_help_shows_defaults_and_explains_finetuning(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "number of episodes (default: 10)" in text and "(default: red,green,blue)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--steps STEPS optimizer steps" in text and "--batch-size BATCH_SIZE samples per optimizer step" in text
    assert "--lr LR peak learning rate" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vla-ros {__version__}"
