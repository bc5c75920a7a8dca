"""Support for the tests that need a ROS 2 graph: importing ROS, launching processes, observing topics.

Where ROS is missing these tests skip, unless `VLA_ROS_REQUIRE_ROS=1` (CI with ROS installed), where a missing
import fails the test instead: a ROS test that quietly skips where ROS is present proves nothing.

The launch tests here are plain pytest, with `ros2 launch` in a subprocess, so they run under any pytest: the
launch_testing pytest plugin of Jazzy's early releases loads under pytest 7 only (pyproject.toml turns it off).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REQUIRE_ROS_ENV = "VLA_ROS_REQUIRE_ROS"
ROS_SETUP_HINT = "source a ROS 2 Humble or Jazzy setup"
BUILD_HINT = "build vla_ros with colcon and source its install/setup.bash (its interfaces are generated)"


def ros_required() -> bool:
    return os.environ.get(REQUIRE_ROS_ENV, "") not in ("", "0")


def require(module: str, reason: str) -> ModuleType:
    """`import module`; where it fails, skip the calling test module, or fail it where ROS is required."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if ros_required():
            raise ImportError(f"{REQUIRE_ROS_ENV} is set but {module} does not import ({error}): {reason}") from error
        pytest.skip(f"needs {module}: {reason}", allow_module_level=True)


@contextlib.contextmanager
def ros_launch(package: str, launch_file: str, arguments: dict[str, str], *, domain_id: int,
               stop_timeout_s: float = 15.0) -> Iterator[LaunchedProcess]:
    """`ros2 launch package launch_file name:=value ...` in its own process group, stopped with SIGINT on exit."""
    fd, log_name = tempfile.mkstemp(prefix=f"ros2_launch_{Path(launch_file).stem}_", suffix=".log")
    command = ["ros2", "launch", package, launch_file, *(f"{k}:={v}" for k, v in arguments.items())]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1"}
    with os.fdopen(fd, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    launched = LaunchedProcess(process, Path(log_name))
    try:
        yield launched
    finally:
        launched.stop(stop_timeout_s)


class LaunchedProcess:
    """A running `ros2 launch`, with its combined output in a log file."""

    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float) -> int:
        """SIGINT, as Ctrl-C would; SIGKILL for the whole group if it has not exited within `timeout_s`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # children that outlived launch itself
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


@contextlib.contextmanager
def observer(name: str, *, domain_id: int):
    """An rclpy node in a context of its own on `domain_id`, with a single-threaded executor to spin it."""
    import rclpy
    import rclpy.executors

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node(name, context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
