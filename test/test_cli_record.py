"""`vla-ros record --sim`: the scripted expert's demonstrations become a valid LeRobot v3 dataset."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vla_ros.sim.world", reason="needs MuJoCo (pip install -e '.[sim]')")  # sets MUJOCO_GL first
pytest.importorskip("pyarrow", reason="needs pyarrow (pip install -e '.[datasets]')")
pytest.importorskip("imageio_ffmpeg", reason="needs imageio-ffmpeg (pip install -e '.[datasets]')")

from vla_ros.cli.main import main  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.datasets.lerobot import read_dataset, validate_dataset  # noqa: E402


def test_expert_episodes_are_recorded_as_a_lerobot_dataset(tmp_path):
    out = tmp_path / "yellow"
    args = ["record", "--sim", "--robot", "so101", "--colors", "red,green,blue,yellow", "--targets", "yellow",
            "--episodes", "2", "--image-size", "48", "64", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    so101 = load_embodiment("so101")
    validate_dataset(out, joint_names=list(so101.joint_names), camera_keys=[c.name for c in so101.cameras])
    dataset = read_dataset(out)
    assert len(dataset.episodes) == 2
    lower, upper = so101.lower_limits, so101.upper_limits
    for info in dataset.episodes:
        episode = dataset.episode(info.index)
        assert episode.task == "touch the yellow cube"
        assert 10 < len(episode) < 10.0 * 30  # shorter than the 10 s time limit at 30 Hz: the expert succeeded
        assert np.allclose(episode.timestamp, np.arange(len(episode)) / 30, atol=1e-4)
        assert np.all(episode.action >= lower - 1e-6) and np.all(episode.action <= upper + 1e-6)
        # The arm moves: the recorded state follows the commands, a tick or so behind.
        assert np.abs(episode.state[-1] - episode.state[0]).max() > 0.2
        assert np.abs(episode.state[1:] - episode.action[:-1]).mean() < 0.05
        frames = dataset.episode_frames(info.index, "front")
        assert frames.shape == (len(episode), 48, 64, 3)

    # Recording again appends: the dataset grows, it is not overwritten.
    assert main([*args, "--episodes", "1", "--seed", "7000"]) == 0  # the later flags win
    assert len(read_dataset(out).episodes) == 3
