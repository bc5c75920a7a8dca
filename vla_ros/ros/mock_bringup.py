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
    """One process of a bring-up, as `ros2 run` (argv) or a launch_ros Node takes it."""

    package: str
    executable: str
    name: str  # for logs
    namespace: str = ""
    arguments: tuple[str, ...] = ()  # plain arguments (the spawner's)
    parameters: tuple[tuple[str, str], ...] = ()  # (name, value) ROS parameters
    params_file: str | None = None
    remappings: tuple[tuple[str, str], ...] = ()

    def argv(self) -> list[str]:
        ros = ["-r", f"__ns:={self.namespace or '/'}"]
        ros += [arg for name, value in self.parameters for arg in ("-p", f"{name}:={value}")]
        ros += ["--params-file", self.params_file] if self.params_file else []
        ros += [arg for pair in self.remappings for arg in ("-r", f"{pair[0]}:={pair[1]}")]
        return ["ros2", "run", self.package, self.executable, *self.arguments, "--ros-args", *ros]


def group_processes(
    group: ControlGroup, *, description: str, params_file: str, spawner_timeout_s: float = 60.0
) -> list[Process]:
    """robot_state_publisher (publishing `description`, a URDF), controller manager and spawner of one group."""
    remaps = [arg for pair in group.remappings for arg in ("-r", f"{pair[0]}:={pair[1]}")]
    controllers = [JOINT_STATE_BROADCASTER, *(c.name for c in group.controllers)]
    spawner_args = [
        "--controller-manager",
        group.node_name("controller_manager"),
        "--controller-manager-timeout",
        str(spawner_timeout_s),
        # Its 10 s default fails a bring-up on a busy machine.
        "--service-call-timeout",
        str(spawner_timeout_s / 2),
    ]
    if remaps:  # the controllers' own topics and actions, renamed as the driver names them
        spawner_args += ["--controller-ros-args", " ".join(remaps)]
    return [
        Process(
            "robot_state_publisher",
            "robot_state_publisher",
            f"robot_state_publisher{group.namespace}",
            group.namespace,
            parameters=(("robot_description", description),),
        ),
        Process(
            "controller_manager",
            "ros2_control_node",
            f"controller_manager{group.namespace}",
            group.namespace,
            params_file=params_file,
            remappings=(("~/robot_description", f"{group.namespace}/robot_description"),),
        ),
        Process("controller_manager", "spawner", f"spawner{group.namespace}", arguments=(*controllers, *spawner_args)),
    ]


def mock_processes(
    embodiment: EmbodimentConfig,
    *,
    params_file: str,
    description_file: str | None = None,
    spawner_timeout_s: float = 60.0,
) -> list[Process]:
    """Every process of `embodiment`'s mock bring-up: per control group the generated URDF, or the robot's own
    (`description_file`, for a robot with one controller manager), and the controllers file `params_file`."""
    groups = control_groups(embodiment)
    if description_file and len(groups) > 1:
        raise VlaRosError(
            f"{embodiment.robot} has {len(groups)} controller managers "
            f"({[g.namespace for g in groups]}): one description_file cannot serve them all"
        )
    own = Path(description_file).read_text(encoding="utf-8") if description_file else None
    return [
        process
        for group in groups
        for process in group_processes(
            group,
            description=own or generated_urdf(embodiment, group),
            params_file=params_file,
            spawner_timeout_s=spawner_timeout_s,
        )
    ]


def preview_description(embodiment: EmbodimentConfig) -> str | None:
    """The generated URDF for the ghost robot of the policy node's ~/preview (whose joint names are the robot
    config's); None where the controllers use other names or several controller managers (ALOHA)."""
    groups = control_groups(embodiment)
    if len(groups) != 1 or any(robot != wire for robot, wire in groups[0].joints):
        return None
    return generated_urdf(embodiment, groups[0])


class MockHardware:
    """The mock bring-up of one robot as child processes; a context manager that stops them all on exit.

    `wait_active()` returns once every spawner has activated its controllers (raises with the log otherwise).
    Output of each process goes to `<folder>/<name>.log`.
    """

    def __init__(
        self,
        embodiment: EmbodimentConfig,
        *,
        env: dict | None = None,
        folder: str | None = None,
        description_file: str | None = None,
        **controller_options,
    ):
        self.embodiment = embodiment
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix=f"vla_ros_mock_{embodiment.robot}_")
        self.folder = Path(folder or self._tmp.name)
        self.env = env
        self.params_file = str(self.folder / f"{embodiment.robot}_controllers.yaml")
        Path(self.params_file).write_text(controllers_yaml_text(embodiment, **controller_options), encoding="utf-8")
        self.processes = mock_processes(embodiment, params_file=self.params_file, description_file=description_file)
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
