"""Start ros2_control on mock hardware for a robot config: the processes `sim:=mock` launches, without launch.

`MockHardware` writes each controller manager's URDF and the controllers file to a folder and runs, per
namespace, robot_state_publisher (it publishes the description the controller manager waits for),
`ros2_control_node` and one spawner that loads, configures and activates every controller. The launch file
builds the same processes from `group_processes`; benchmarks and tests use `MockHardware` directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import VlaRosError
from vla_ros.ros.mock_control import JOINT_STATE_BROADCASTER, ControlGroup, control_groups, controllers_yaml_text
from vla_ros.ros.mock_control import mock_urdf as generated_urdf


@dataclass(frozen=True)
class Process:
    """One process of a bring-up: package, executable, ROS arguments (node name, namespace, remaps, params)."""

    package: str
    executable: str
    arguments: tuple[str, ...]
    name: str  # for logs

    def argv(self) -> list[str]:
        return ["ros2", "run", self.package, self.executable, *self.arguments]


def group_processes(
    group: ControlGroup, *, description_file: str, params_file: str, spawner_timeout_s: float = 60.0
) -> list[Process]:
    """robot_state_publisher, controller manager and spawner of one control group."""
    namespace = group.namespace or "/"
    description_topic = f"{group.namespace}/robot_description"
    with open(description_file, encoding="utf-8") as f:
        description = f.read()
    remaps = [arg for pair in group.remappings for arg in ("-r", f"{pair[0]}:={pair[1]}")]
    controllers = [JOINT_STATE_BROADCASTER, *(c.name for c in group.controllers)]
    spawner_args = [
        "--controller-manager",
        group.node_name("controller_manager"),
        "--controller-manager-timeout",
        str(spawner_timeout_s),
    ]
    if remaps:
        spawner_args += ["--controller-ros-args", " ".join(remaps)]
    return [
        Process(
            "robot_state_publisher",
            "robot_state_publisher",
            ("--ros-args", "-r", f"__ns:={namespace}", "-p", f"robot_description:={description}"),
            f"robot_state_publisher{group.namespace}",
        ),
        Process(
            "controller_manager",
            "ros2_control_node",
            (
                "--ros-args",
                "-r",
                f"__ns:={namespace}",
                "--params-file",
                params_file,
                "-r",
                f"~/robot_description:={description_topic}",
            ),
            f"controller_manager{group.namespace}",
        ),
        Process("controller_manager", "spawner", (*controllers, *spawner_args), f"spawner{group.namespace}"),
    ]


def write_mock_files(
    embodiment: EmbodimentConfig,
    folder: str | os.PathLike,
    *,
    description_file: str | None = None,
    **controller_options,
) -> tuple[list[str], str]:
    """Write each group's URDF (or use `description_file`, the robot's own URDF, for a single group) and the
    controllers file into `folder`; return (description files per group, params file)."""
    folder = Path(folder)
    groups = control_groups(embodiment)
    if description_file and len(groups) > 1:
        raise VlaRosError(
            f"{embodiment.robot} has {len(groups)} controller managers "
            f"({[g.namespace for g in groups]}): one description_file cannot serve them all"
        )
    descriptions = []
    for group in groups:
        if description_file:
            descriptions.append(str(description_file))
            continue
        path = folder / f"{embodiment.robot}{group.namespace.replace('/', '_')}_mock.urdf"
        path.write_text(generated_urdf(embodiment, group), encoding="utf-8")
        descriptions.append(str(path))
    params = folder / f"{embodiment.robot}_controllers.yaml"
    params.write_text(controllers_yaml_text(embodiment, **controller_options), encoding="utf-8")
    return descriptions, str(params)


class MockHardware:
    """The mock bring-up of one robot as child processes; a context manager that stops them all on exit.

    `wait_active()` returns once every spawner has activated its controllers (raises with the log otherwise).
    Output of each process goes to `<folder>/<name>.log`.
    """

    def __init__(
        self, embodiment: EmbodimentConfig, *, env: dict | None = None, folder: str | None = None, **controller_options
    ):
        self.embodiment = embodiment
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix=f"vla_ros_mock_{embodiment.robot}_")
        self.folder = Path(folder or self._tmp.name)
        self.env = env
        descriptions, self.params_file = write_mock_files(embodiment, self.folder, **controller_options)
        self.processes = [
            process
            for group, description in zip(control_groups(embodiment), descriptions, strict=True)
            for process in group_processes(group, description_file=description, params_file=self.params_file)
        ]
        self._running: list[tuple[Process, subprocess.Popen]] = []

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> MockHardware:
        for process in self.processes:
            with open(self.folder / f"{process.name}.log", "wb") as out:
                self._running.append(
                    (
                        process,
                        subprocess.Popen(
                            process.argv(), stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                        ),
                    )
                )
        return self

    def wait_active(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        spawners = [(p, popen) for p, popen in self._running if p.executable == "spawner"]
        for process, popen in spawners:
            try:
                code = popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                manager = process.name.replace("spawner", "controller_manager")
                raise VlaRosError(
                    f"{process.name} did not activate the controllers (exit {code}):\n"
                    f"{self.log(process.name)[-3000:]}\n--- {manager}:\n{self.log(manager)[-3000:]}"
                )

    def stop(self) -> None:
        for _, popen in reversed(self._running):
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGINT)
        for _, popen in reversed(self._running):
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        self._running.clear()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
