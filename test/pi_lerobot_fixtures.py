"""LeRobot-made pi0 / pi0.5 fixtures (tools/parity/pi0_fixtures.py) for the tests, read without LeRobot.

Each test/fixtures/<policy>_lerobot_<release>/ holds a tiny checkpoint saved by that LeRobot release, the inputs
and noise it was run on (io.safetensors) and its actions per case. The fixture's tiny sizes replace LeRobot's
fixed variant sizes in vla_ros for the test (`tiny_sizes`): the same substitution the script made in LeRobot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vla_ros.core.features import STATE, TASK, image_key, image_mask_key

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOLERANCE = 1e-4  # max |a_vla_ros - a_LeRobot|, float32
CAMERAS = ("front", "wrist")


def fixture_dirs(policy: str) -> list[Path]:
    return sorted(path for path in FIXTURES.glob(f"{policy}_lerobot_*") if (path / "cases.json").is_file())


def release(directory: Path) -> str:
    return directory.name.rsplit("_", 1)[1]


def read_cases(directory: Path) -> dict:
    return json.loads((directory / "cases.json").read_text(encoding="utf-8"))


def tiny_sizes(monkeypatch, directory: Path) -> None:
    """Give vla_ros the fixture's sizes for LeRobot's variant names, SigLIP and vocabulary."""
    from vla_ros.policies.pi05 import config
    from vla_ros.policies.pi05.config import GemmaVariant

    architecture = read_cases(directory)["architecture"]
    variants = {name: GemmaVariant(**sizes) for name, sizes in architecture["variants"].items()}
    monkeypatch.setattr(config, "GEMMA_VARIANTS", variants)
    vision = dict(architecture["vision"])
    monkeypatch.setattr(config, "VISION_OVERRIDES", {"intermediate_size": vision.pop("intermediate_size")})
    monkeypatch.setattr(config, "VISION_DEFAULTS", vision)
    monkeypatch.setattr(config, "VOCAB_SIZE", architecture["vocab_size"])


def checkpoint_for(directory: Path, case: str, tmp_path: Path) -> Path:
    """The checkpoint directory LeRobot ran `case` with: the saved one, or it with another config or processors."""
    source = directory / "checkpoint"
    if case == "one_camera":
        replacements = directory / "one_camera"
    elif case.startswith("norm_"):
        replacements = directory / f"processors_{case.removeprefix('norm_')}"
    else:
        return source
    target = tmp_path / f"{directory.name}_{case}"
    shutil.copytree(source, target)
    for path in replacements.iterdir():
        shutil.copyfile(path, target / path.name)
    return target


def load_io(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(directory / "io.safetensors"))


def observations(io: dict, tasks: list[str], case: str) -> list[dict]:
    """The batch LeRobot ran `case` on, as vla_ros policy observations (a missing camera: zero image, mask False)."""
    batch = []
    for index, task in enumerate(tasks):
        observation = {STATE: io["state"][index], TASK: task}
        for camera in CAMERAS:
            image = io[f"image_{camera}"][index]
            if case == "resized_camera" and camera == "front":
                image = io["image_front_48x64"][index]
            present = not (case == "missing_camera" and camera == "wrist")
            observation[image_key(camera)] = image if present else np.zeros_like(image)
            observation[image_mask_key(camera)] = present
        if case == "one_camera":
            del observation[image_key("wrist")], observation[image_mask_key("wrist")]
        batch.append(observation)
    return batch


def vla_ros_actions(directory: Path, case: str, tmp_path: Path) -> np.ndarray:
    """vla_ros's actions for a fixture case: LeRobot's checkpoint, inputs and noise."""
    import torch

    from vla_ros.policies.pi05.checkpoint import load_checkpoint
    from vla_ros.policies.pi05.policy import PiPolicy

    io = load_io(directory)
    checkpoint = load_checkpoint(checkpoint_for(directory, case, tmp_path))
    policy = PiPolicy(checkpoint, action_dt_s=0.1, warmup=False)
    return policy.sample(observations(io, read_cases(directory)["tasks"], case), torch.from_numpy(io["noise"]))


def max_difference(directory: Path, case: str, tmp_path: Path) -> float:
    expected = load_io(directory)[f"actions_{case}"]
    actions = vla_ros_actions(directory, case, tmp_path)
    assert actions.shape == expected.shape, (actions.shape, expected.shape)
    return float(np.abs(actions - expected).max())


def check_full_size_architecture(directory: Path) -> int:
    """vla_ros's full-size model (LeRobot's real variant sizes) against the weight names and shapes of LeRobot's
    full-size model, recorded by the fixture script; built on the meta device (no memory). Its parameter count."""
    import gzip

    import torch

    from vla_ros.policies.pi05.checkpoint import load_weights
    from vla_ros.policies.pi05.config import PiConfig
    from vla_ros.policies.pi05.modeling import PiFlowModel

    shapes = json.loads(gzip.decompress((directory / "full_size_shapes.json.gz").read_bytes()))
    data = json.loads((directory / "checkpoint" / "config.json").read_text(encoding="utf-8"))
    config = PiConfig.from_dict({**data, "image_resolution": [224, 224]}, source=str(directory))
    with torch.device("meta"):
        model = PiFlowModel(config)
        weights = {key: torch.empty(shape) for key, shape in shapes.items()}
    load_weights(model, weights, config=config, source=str(directory / "full_size_shapes.json.gz"))
    return sum(parameter.numel() for parameter in model.parameters())
