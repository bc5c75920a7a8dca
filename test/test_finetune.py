"""`vla-ros finetune` on a tiny SmolVLA and a recorded simulator dataset: output loads, resume, LoRA, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="fine-tuning needs torch")
pytest.importorskip("transformers", reason="fine-tuning needs transformers")
pytest.importorskip("vla_ros.sim.world", reason="needs MuJoCo (pip install -e '.[sim]')")  # sets MUJOCO_GL first
pytest.importorskip("pyarrow", reason="needs pyarrow (pip install -e '.[datasets]')")
pytest.importorskip("imageio_ffmpeg", reason="needs imageio-ffmpeg (pip install -e '.[datasets]')")

from safetensors.numpy import load_file  # noqa: E402

from vla_ros.cli.main import main  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.datasets.lerobot import DatasetError  # noqa: E402
from vla_ros.policies.builtin.recipe import ModelRecipe  # noqa: E402
from vla_ros.policies.builtin.train import build_model  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.finetune import FinetuneConfig, finetune  # noqa: E402

TINY = ModelRecipe(image_size=32, vision_hidden=16, vision_layers=1, text_hidden=32, text_layers=2, chunk_size=6)
OPTIONS = PolicyOptions(device="cpu", dtype="float32", warmup=False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from vla_ros.policies.smolvla.checkpoint import save_checkpoint
    from vla_ros.policies.smolvla.processor import SmolVLAProcessor

    directory = tmp_path_factory.mktemp("tiny") / "checkpoint"
    config, model, tokenizer = build_model(TINY, directory / "vlm")
    stats = {"observation.state.mean": np.zeros(8, np.float32), "observation.state.std": np.ones(8, np.float32),
             "action.mean": np.zeros(8, np.float32), "action.std": np.ones(8, np.float32)}
    processor = SmolVLAProcessor(config, stats, tokenizer, tokenizer_dir=directory / "vlm")
    save_checkpoint(directory, config, model, processor)
    return directory


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "yellow"
    assert main(["record", "--sim", "--robot", "so101", "--colors", "red,green,blue,yellow", "--targets", "yellow",
                 "--episodes", "2", "--image-size", "48", "64", "--out", str(out), "--no-progress"]) == 0
    return out


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def test_fine_tuned_checkpoint_loads_and_resumes(tiny_checkpoint, dataset, tmp_path, capsys):
    out = tmp_path / "tuned"
    config = FinetuneConfig(steps=100, batch_size=4, warmup_steps=5, checkpoint_every=50)
    log = finetune(str(tiny_checkpoint), dataset, out, robot="so101", config=config, progress=False)
    assert log["episodes"] == 2 and log["samples"] > 20
    assert [p["step"] for p in log["loss"]] == [50, 100]
    so101 = load_embodiment("so101")
    policy = make_policy(str(out), embodiment=so101, options=OPTIONS)
    check_policy(policy, so101)
    before, after = weights(tiny_checkpoint), weights(out)
    assert set(before) == set(after) and any(not np.array_equal(before[k], after[k]) for k in before)
    stats = load_file(str(out / "norm_stats" / "so101.safetensors"))  # the dataset's, in policy units
    assert stats["observation.state.std"][:6].min() > 0 and not np.allclose(stats["observation.state.mean"][:6], 0)
    assert json.loads((out / "resume" / "state.json").read_text())["step"] == 50

    # Resume from the step-50 point: only steps 50..99 run again, and the loss log continues.
    resumed = finetune(str(tiny_checkpoint), dataset, out, robot="so101", config=config, resume=True, progress=False)
    assert "resuming from step 50" in capsys.readouterr().err
    assert [p["step"] for p in resumed["loss"]] == [50, 100]
    with pytest.raises(Exception, match="other settings"):
        finetune(str(tiny_checkpoint), dataset, out, robot="so101", config=FinetuneConfig(steps=200), resume=True,
                 progress=False)


def test_lora_changes_only_the_attention_projections(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "lora"
    config = FinetuneConfig(steps=50, batch_size=4, warmup_steps=5, lora_rank=2, checkpoint_every=0,
                            stats="checkpoint")
    log = finetune(str(tiny_checkpoint), dataset, out, robot="so101", config=config, progress=False)
    assert log["trainable_parameters"] < log["parameters"] / 5 and log["lora_layers_merged"] > 0
    before, after = weights(tiny_checkpoint), weights(out)
    assert set(before) == set(after)  # merged: the original architecture
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for k in changed)
    check_policy(make_policy(str(out), embodiment=load_embodiment("so101"), options=OPTIONS), load_embodiment("so101"))


def test_a_dataset_of_another_robot_is_refused_with_the_joint_names(tiny_checkpoint, dataset, tmp_path):
    with pytest.raises(DatasetError, match="panda_joint1"):
        finetune(str(tiny_checkpoint), dataset, tmp_path / "x", robot="panda", config=FinetuneConfig(steps=1),
                 progress=False)
    with pytest.raises(Exception, match="takes a SmolVLA checkpoint directory"):
        finetune(str(tmp_path), dataset, tmp_path / "y", robot="so101", config=FinetuneConfig(steps=1), progress=False)
