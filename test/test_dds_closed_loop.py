"""The pip-only mode end to end: `vla-ros sim` and `vla-ros run` as two processes over Cyclone DDS, no ROS install.

The simulator also serves its scripted expert over the websocket policy protocol (it reads the simulator's ground
truth, so it lives there); the policy node gets joint states and camera images over DDS, asks the expert for chunks
and commands the arm over DDS. A third participant, this test, listens on the same graph: the task must succeed.
Loopback only: the interface is 127.0.0.1, multicast off, the peer explicit, and the domain is this test's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")
pytest.importorskip("vla_ros.sim.world", reason="needs MuJoCo (pip install -e '.[sim]')")  # sets MUJOCO_GL first
pytest.importorskip("websockets", reason="needs websockets (pip install -e '.[remote]')")

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_CONFIG = ROOT / "config" / "cyclonedds_loopback.xml"
DOMAIN_ID = 61
ARM_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vla_ros(*args: str, log: Path, stdin=None) -> subprocess.Popen:
    env = {**os.environ, "CYCLONEDDS_URI": LOOPBACK_CONFIG.as_uri(), "VLA_ROS_BACKEND": "dds", "MUJOCO_GL": "egl"}
    env.pop("ROS_DISTRO", None)
    if "--domain-id" not in args:
        args = (*args, "--domain-id", str(DOMAIN_ID))
    return subprocess.Popen([sys.executable, "-m", "vla_ros.cli.main", *args], stdin=stdin, text=True,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, newest first (the policy node before the simulator it talks to); kill what does not stop."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before '{text}':\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"no '{text}' within {timeout_s} s:\n{log.read_text()}")


@pytest.fixture
def listener(monkeypatch):
    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK_CONFIG.as_uri())
    from vla_ros.dds.node import DdsGraph, DdsNode

    graph = DdsGraph(DOMAIN_ID)
    node = DdsNode("closed_loop_test_listener", graph)
    thread = threading.Thread(target=node.spin, daemon=True)
    yield node, thread
    node.destroy_node()
    thread.join(timeout=5.0)
    graph.close()


def test_sim_and_policy_node_close_the_loop_over_dds(listener, tmp_path):
    from vla_ros.dds.messages import message_type
    from vla_ros.dds.qos import QosSpec

    node, spin_thread = listener
    successes, trajectories = [], []
    node.create_subscription(message_type("std_msgs/msg/Bool"), "/mujoco_robot/task_success",
                             lambda msg: successes.append(msg.data), QosSpec(depth=1, transient_local=True))
    node.create_subscription(message_type("trajectory_msgs/msg/JointTrajectory"), "/arm_controller/joint_trajectory",
                             trajectories.append, QosSpec(depth=10))
    spin_thread.start()

    port = _free_port()
    sim_log, run_log = tmp_path / "sim.log", tmp_path / "run.log"
    sim = _vla_ros("sim", "--robot", "so101", "--instruction", "touch the red cube", "--seed", "3",
                   "--camera-width", "160", "--camera-height", "120", "--serve-expert", str(port), log=sim_log)
    processes = [sim]
    try:
        _wait_for_line(sim_log, "serving the scripted expert", sim, timeout_s=60)
        run = _vla_ros("run", "--robot", "so101", "--policy", f"ws://127.0.0.1:{port}", "--instruction",
                       "touch the red cube", "--use-sim-time", log=run_log)
        processes.append(run)
        deadline = time.monotonic() + 90
        while True not in successes and time.monotonic() < deadline:
            assert run.poll() is None, f"the policy node exited:\n{run_log.read_text()}"
            assert sim.poll() is None, f"the simulator exited:\n{sim_log.read_text()}"
            time.sleep(0.1)
        assert True in successes, (f"no task success within 90 s; {len(trajectories)} arm trajectories seen\n"
                                   f"--- sim:\n{sim_log.read_text()}\n--- policy node:\n{run_log.read_text()}")
        assert successes[0] is False  # latched at start: the task was not done before the policy moved the arm
        assert len(trajectories) > 10
        assert all(list(t.joint_names) == ARM_JOINTS and len(t.points) >= 1 for t in trajectories)
        # The simulator logs the success just after publishing it: give a loaded machine a moment to write it.
        _wait_for_line(sim_log, "task 'touch the red cube' succeeded", sim, timeout_s=10)
    finally:
        _stop(processes)
    assert run.returncode == 0, run_log.read_text()  # SIGTERM is a clean stop


def test_recorder_records_the_running_loop_from_topics(monkeypatch, tmp_path):
    """`vla-ros record` as a third node: frames from the topics, actions from the commands the policy node sends."""
    pytest.importorskip("pyarrow", reason="needs pyarrow (pip install -e '.[datasets]')")
    from vla_ros.cli.main import main
    from vla_ros.datasets.lerobot import read_dataset, validate_dataset

    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK_CONFIG.as_uri())
    domain = str(DOMAIN_ID + 1)
    port = _free_port()
    sim_log, run_log = tmp_path / "sim.log", tmp_path / "run.log"
    # Every episode must fall inside the expert's motion (its pick ends with a slow lift): the simulator runs at
    # 0.75 of real time, and the keyboard recorder starts before the policy node, so no start-up sits between the
    # episodes.
    sim = _vla_ros("sim", "--robot", "so101", "--instruction", "pick up the blue cube", "--seed", "4",
                   "--camera-width", "160", "--camera-height", "120", "--serve-expert", str(port), "--domain-id",
                   domain, "--realtime-factor", "0.75", log=sim_log)
    processes = [sim]
    out, keyboard_out = tmp_path / "timed", tmp_path / "keyboard"
    try:
        _wait_for_line(sim_log, "serving the scripted expert", sim, timeout_s=60)
        keyboard_log = tmp_path / "keyboard.log"
        keyboard = _vla_ros("record", "--robot", "so101", "--instruction", "pick up the blue cube", "--image-size",
                            "60", "80", "--use-sim-time", "--domain-id", domain, "--out", str(keyboard_out),
                            log=keyboard_log, stdin=subprocess.PIPE)
        processes.append(keyboard)
        _wait_for_line(keyboard_log, "Enter: start/stop", keyboard, timeout_s=30)
        processes.append(_vla_ros("run", "--robot", "so101", "--policy", f"ws://127.0.0.1:{port}", "--instruction",
                                  "pick up the blue cube", "--use-sim-time", "--domain-id", domain, log=run_log))
        # Timed: the recorder waits until the topics deliver, then records two episodes.
        assert main(["record", "--robot", "so101", "--instruction", "pick up the blue cube", "--episodes", "2",
                     "--episode-seconds", "1.0", "--image-size", "60", "80", "--use-sim-time", "--backend", "dds",
                     "--domain-id", domain, "--out", str(out)]) == 0
        # The keyboard: start, discard, start again, stop (saved), quit.
        for keys, pause_s in (("\n", 0.3), ("d\n", 0.1), ("\n", 1.0), ("\n", 0.5), ("q\n", 0.0)):
            keyboard.stdin.write(keys)
            keyboard.stdin.flush()
            time.sleep(pause_s)
        assert keyboard.wait(timeout=30) == 0, keyboard_log.read_text()
        log = keyboard_log.read_text()
        assert "episode discarded" in log and "episode 0 saved" in log, log
    finally:
        _stop(processes)
    episodes = []
    for directory, count in ((out, 2), (keyboard_out, 1)):
        validate_dataset(directory, joint_names=[*ARM_JOINTS, "gripper"], camera_keys=["front", "wrist"])
        dataset = read_dataset(directory)
        assert len(dataset.episodes) == count, (sim_log.read_text(), run_log.read_text())
        episodes += [(dataset, info.index) for info in dataset.episodes]
    for dataset, index in episodes:
        episode = dataset.episode(index)
        assert episode.task == "pick up the blue cube"
        assert 15 <= len(episode) <= 50  # 1.0 s of wall time at 30 Hz of simulated time running at 0.75
        assert np.abs(episode.state[-1] - episode.state[0]).max() > 0.05  # the arm moved while recording
        # Arm commands lead the arm closely (the gripper is commanded shut on the cube it cannot close through).
        assert np.abs(episode.action[:, :5] - episode.state[:, :5]).max(axis=1).mean() < 0.2
        assert dataset.episode_frames(index, "front").shape == (len(episode), 60, 80, 3)
