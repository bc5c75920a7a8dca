"""Which middleware `vla-ros run/sim/record` pick: rclpy only where rclpy and vla_ros's interfaces both import."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from ros_graph import BUILD_HINT, ROS_SETUP_HINT, require

from vla_ros.core.errors import ConfigError
from vla_ros.ros.backend import NO_INTERFACES, NO_RCLPY, choose_backend, rclpy_missing


@pytest.fixture
def pip_install_next_to_ros(monkeypatch):
    """rclpy imports, vla_ros.msg does not: ROS sourced, vla_ros installed by pip and not built with colcon."""
    monkeypatch.setitem(sys.modules, "rclpy", types.ModuleType("rclpy"))
    monkeypatch.setitem(sys.modules, "vla_ros.msg", None)  # None in sys.modules makes the import fail
    monkeypatch.delenv("VLA_ROS_BACKEND", raising=False)


def test_without_rclpy_auto_is_dds_and_rclpy_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "rclpy", None)
    monkeypatch.delenv("VLA_ROS_BACKEND", raising=False)
    assert rclpy_missing() == NO_RCLPY
    assert choose_backend() == "dds"
    with pytest.raises(ConfigError, match="source your ROS 2 setup.*--backend dds"):
        choose_backend("rclpy")


def test_rclpy_without_our_interfaces_falls_back_to_dds_and_says_why(pip_install_next_to_ros, caplog):
    assert rclpy_missing() == NO_INTERFACES
    with caplog.at_level("WARNING"):
        assert choose_backend("auto") == "dds"
    assert "installed by pip" in caplog.text and "build vla_ros with colcon" in caplog.text
    with pytest.raises(ConfigError, match="colcon workspace that built vla_ros"):
        choose_backend("rclpy")
    caplog.clear()
    assert choose_backend("dds") == "dds" and not caplog.text  # asked for: nothing to explain


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="unknown middleware backend 'zenoh'.*auto, rclpy, dds"):
        choose_backend("zenoh")


@pytest.mark.ros
def test_with_a_colcon_build_sourced_auto_is_rclpy(monkeypatch):
    require("rclpy", ROS_SETUP_HINT)
    require("vla_ros.msg", BUILD_HINT)
    monkeypatch.delenv("VLA_ROS_BACKEND", raising=False)
    assert choose_backend() == "rclpy"


@pytest.mark.ros
def test_sim_next_to_ros_without_the_colcon_build_runs_on_dds(tmp_path):
    """The real case: a sourced ROS 2, vla_ros from pip only. It used to die on `import vla_ros.action`."""
    require("rclpy", ROS_SETUP_HINT)
    require("cyclonedds", "pip install -e '.[dds]'")
    site_packages = str(Path(require("vla_ros.msg", BUILD_HINT).__file__).parents[2])  # .../vla_ros/msg/__init__.py
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != site_packages]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path), "ROS_DOMAIN_ID": "91"}
    env.pop("VLA_ROS_BACKEND", None)
    result = subprocess.run([sys.executable, "-m", "vla_ros.cli.main", "sim", "--no-render", "--duration", "1.5"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the pip-only DDS backend" in result.stderr
    assert "Traceback" not in result.stderr
