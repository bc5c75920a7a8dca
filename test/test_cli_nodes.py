"""`vla-ros run` / `vla-ros sim` start-up: parameters from the launch files' YAML and flags, errors before motion."""

from __future__ import annotations

import pytest

from vla_ros.cli.main import main
from vla_ros.cli.nodes import node_parameters, parse_overrides
from vla_ros.core.errors import ConfigError


def test_parameters_come_from_the_nodes_section_and_the_wildcard(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    status_rate_hz: 5.0\n    merge: replace\n"
                    "vla_policy:\n  ros__parameters:\n    merge: blend\n    dry_run: true\n"
                    "other_node:\n  ros__parameters:\n    merge: ensemble\n", encoding="utf-8")
    assert node_parameters(path, "vla_policy") == {"status_rate_hz": 5.0, "merge": "blend", "dry_run": True}


def test_the_shipped_policy_parameters_file_is_read(tmp_path):
    from vla_ros.core.embodiment import config_dir

    parameters = node_parameters(config_dir() / "vla_policy.yaml", "vla_policy")
    assert parameters["merge"] == "blend" and parameters["refill_threshold_steps"] == -1


def test_bad_parameter_files_say_what_is_wrong(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("vla_policy:\n  ros__parameters: [1, 2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'vla_policy' must hold a 'ros__parameters' mapping"):
        node_parameters(path, "vla_policy")
    with pytest.raises(ConfigError, match="cannot read parameter file"):
        node_parameters(tmp_path / "missing.yaml", "vla_policy")


def test_overrides_are_typed_like_ros_2_parameters():
    assert parse_overrides(["merge:=rtc", "refill_threshold_steps:=8", "dry_run:=true", "success_topic:="]) == {
        "merge": "rtc", "refill_threshold_steps": 8, "dry_run": True, "success_topic": ""}
    with pytest.raises(ConfigError, match="'merge=rtc' is not name:=value"):
        parse_overrides(["merge=rtc"])


def test_a_config_error_stops_the_policy_node_at_start(capsys):
    pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
    pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")
    assert main(["run", "--backend", "dds", "--domain-id", "68", "--robot", "so1O1"]) == 2
    assert "unknown robot 'so1O1'" in capsys.readouterr().err
    assert main(["run", "--backend", "dds", "--domain-id", "68", "--param", "merj:=rtc"]) == 2
    assert "unknown policy node parameters ['merj']" in capsys.readouterr().err


def test_actions_need_rclpy_and_the_pip_only_node_says_so(capsys, tmp_path):
    pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
    pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")
    assert main(["run", "--backend", "dds", "--domain-id", "68", "--robot", "panda", "--policy", "builtin"]) == 2
    err = capsys.readouterr().err
    assert "/panda_gripper/gripper_action is a gripper_command action, and actions need rclpy" in err


def test_the_policy_node_takes_and_logs_its_inference_threads(capsys, caplog):
    pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
    pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")
    pytest.importorskip("transformers", reason="needs the policies extra")
    assert main(["run", "--backend", "dds", "--domain-id", "152", "--param", "inference_threads:=0"]) == 2
    assert "inference threads must be 1 or more, got 0" in capsys.readouterr().err
    with caplog.at_level("INFO"):
        assert main(["run", "--backend", "dds", "--domain-id", "152", "--threads", "1", "--duration", "0.2"]) == 0
    assert "inference threads: 1 (as asked" in caplog.text
