"""`vla-ros finetune` on a tiny SmolVLA and a recorded simulator dataset: output loads, resume, LoRA, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

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
from vla_ros.core.errors import ConfigError  # noqa: E402
from vla_ros.datasets.lerobot import DatasetError  # noqa: E402
from vla_ros.policies.builtin.recipe import ModelRecipe  # noqa: E402
from vla_ros.policies.builtin.train import build_model  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.finetune import DatasetShare, FinetuneConfig, finetune, weighted_order  # noqa: E402

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


def test_zero_steps_give_the_same_weights_with_the_new_robots_stats(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "stats_only"
    log = finetune(str(tiny_checkpoint), dataset, out, robot="so101", config=FinetuneConfig(steps=0),
                   progress=False)
    assert log["loss"] == []
    before, after = weights(tiny_checkpoint), weights(out)
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)
    stats = load_file(str(out / "norm_stats" / "so101.safetensors"))
    assert not np.allclose(stats["observation.state.mean"][:6], 0)  # the dataset's, not the checkpoint's zeros
    with pytest.raises(ConfigError, match="--steps must be 0 or more"):
        FinetuneConfig(steps=-1)


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


@pytest.fixture(scope="module")
def training_shards(tmp_path_factory):
    """The built-in VLA's training episodes as collect.py records them (one touch episode per arm), for TINY."""
    from dataclasses import replace

    from vla_ros.policies.builtin.collect import collect_shard
    from vla_ros.policies.builtin.recipe import DataRecipe

    out = tmp_path_factory.mktemp("shards")
    recipe = replace(DataRecipe(), render_size=(48, 64))
    for robot in ("so101", "panda"):
        summary = collect_shard(robot, "touch", [0], recipe, TINY, out / f"{robot}_touch_0.npz")
        assert summary["episodes"] == 1
    return out


def test_dataset_weights_parse_from_the_command_line_form(tmp_path):
    assert DatasetShare.parse("data/yellow_so101:0.5") == DatasetShare(Path("data/yellow_so101"), 0.5)
    assert DatasetShare.parse("data/yellow_so101") == DatasetShare(Path("data/yellow_so101"), 1.0)
    assert DatasetShare.parse("runs/a:b") == DatasetShare(Path("runs/a:b"), 1.0)  # a colon in the path, no weight
    for weight in ("0", "-1", "nan"):
        with pytest.raises(ConfigError, match=r"weight of dataset yellow must be a positive number"):
            DatasetShare.parse(f"yellow:{weight}")


def test_batches_follow_the_weights_evenly_spread():
    order = weighted_order({"new": 0.5, "old/so101": 0.25, "old/panda": 0.25})
    assert Counter(order) == {"new": 500, "old/so101": 250, "old/panda": 250}
    assert all(Counter(order[i:i + 4]) == {"new": 2, "old/so101": 1, "old/panda": 1} for i in range(0, 1000, 4))
    assert Counter(weighted_order({"a": 3, "b": 1}, length=8)) == {"a": 6, "b": 2}


def test_mixing_a_new_dataset_with_a_replay_of_the_training_episodes(tiny_checkpoint, dataset, training_shards,
                                                                     tmp_path, monkeypatch):
    from vla_ros.policies.builtin import train

    drawn = Counter()
    sample = train.Batches.sample

    def counting_sample(self, batch_size):
        drawn[(str(self.data["robot"][0]), str(self.data["instruction"][0]).split()[-2])] += 1
        return sample(self, batch_size)

    monkeypatch.setattr(train.Batches, "sample", counting_sample)
    out = tmp_path / "mixed"
    config = FinetuneConfig(steps=40, batch_size=2, warmup_steps=2, checkpoint_every=0)
    log = finetune(str(tiny_checkpoint), [DatasetShare(dataset, 0.5), DatasetShare(training_shards, 0.5)], out,
                   config=config, progress=False)

    # Half the batches from the new (yellow) data, the replay's half split between its two arms.
    assert drawn == {("so101", "yellow"): 20, ("so101", "red"): 10, ("panda", "red"): 10}
    assert log["batch_share"] == {f"0:{dataset.name}/so101": 0.5, f"1:{training_shards.name}/panda": 0.25,
                                  f"1:{training_shards.name}/so101": 0.25}
    # Each arm is normalized with all of its data in the mix; the panda's is the replay's alone.
    with np.load(training_shards / "panda_touch_0.npz") as shard:
        panda_state = shard["state"]
    panda_stats = load_file(str(out / "norm_stats" / "panda.safetensors"))
    np.testing.assert_allclose(panda_stats["observation.state.mean"], panda_state.mean(axis=0), atol=1e-5)
    for robot in ("so101", "panda"):
        embodiment = load_embodiment(robot)
        check_policy(make_policy(str(out), embodiment=embodiment, options=OPTIONS), embodiment)


def test_finetune_command_takes_several_weighted_datasets(tiny_checkpoint, dataset, training_shards, tmp_path):
    out = tmp_path / "cli"
    assert main(["finetune", "--policy", str(tiny_checkpoint), "--dataset", f"{dataset}:3", "--dataset",
                 str(training_shards), "--out", str(out), "--steps", "2", "--batch-size", "2", "--no-progress"]) == 0
    log = json.loads((out / "finetune_log.json").read_text())
    assert log["datasets"] == [{"path": str(dataset), "weight": 3.0}, {"path": str(training_shards), "weight": 1.0}]
    assert log["robot"] == "panda, so101"


def test_grounding_trains_the_readout_on_the_datasets_that_record_the_cubes(tiny_checkpoint, dataset,
                                                                            training_shards, tmp_path, monkeypatch):
    from vla_ros.policies.builtin import train

    goal_batches = Counter()
    loss = train.GroundingReadout.loss

    def counting_loss(self, cache, source, targets):
        goal_batches[source.split("/")[0]] += 1
        return loss(self, cache, source, targets)

    monkeypatch.setattr(train.GroundingReadout, "loss", counting_loss)
    shares = [DatasetShare(dataset, 0.5), DatasetShare(training_shards, 0.5)]
    common = dict(steps=50, batch_size=4, warmup_steps=2, checkpoint_every=0, learning_rate=3e-3)
    grounded = finetune(str(tiny_checkpoint), shares, tmp_path / "grounded", progress=False,
                        config=FinetuneConfig(**common, grounding_weight=1.0))
    # The goal loss is trained on the replay's batches only: the recorded (LeRobot) dataset knows no cube positions.
    assert goal_batches == {f"1:{training_shards.name}": 25}
    assert all("goal_loss" in entry for entry in grounded["loss"])
    plain = finetune(str(tiny_checkpoint), shares, tmp_path / "plain", progress=False, config=FinetuneConfig(**common))
    assert all("goal_loss" not in entry for entry in plain["loss"])

    # What the readout says of the shards' cubes, after each fine-tuning: only the grounded one learned it.
    readout_error = {name: _readout_error(tmp_path / name, training_shards) for name in ("grounded", "plain")}
    assert readout_error["grounded"] < 0.5 * readout_error["plain"], readout_error


def _readout_error(checkpoint_dir, shard_dir) -> float:
    """Mean squared error, in each robot's spread, of the grounding readout of a checkpoint on training shards."""
    import torch

    from vla_ros.policies.builtin.train import (
        GroundingReadout,
        grounding_targets,
        sample_observation,
        target_normalization,
    )
    from vla_ros.policies.finetune import shard_samples
    from vla_ros.policies.smolvla.checkpoint import load_checkpoint
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    checkpoint = load_checkpoint(checkpoint_dir)
    errors = []
    for robot, samples in shard_samples(shard_dir).items():
        targets = grounding_targets(samples, tcp_offset=True)
        readout = GroundingReadout(checkpoint.model, TINY.action_dim, {robot: target_normalization(targets)})
        embodiment = load_embodiment(robot)
        processor = SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s, embodiment=embodiment,
                                  warmup=False).processor
        observations = [sample_observation(samples, i) for i in range(len(samples["state"]))]
        with torch.no_grad():
            errors.append(readout.loss(checkpoint.model.encode_prefix(**processor.preprocess(observations)), robot,
                                       targets).item())
    return float(np.mean(errors))


def test_grounding_needs_a_dataset_that_records_the_cubes(tiny_checkpoint, dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"--grounding-weight needs datasets that record where the cubes are"):
        finetune(str(tiny_checkpoint), dataset, tmp_path / "x", robot="so101",
                 config=FinetuneConfig(steps=1, grounding_weight=1.0), progress=False)
    with pytest.raises(ConfigError, match=r"--grounding-weight must be 0 or more, got -1"):
        FinetuneConfig(grounding_weight=-1.0)


def test_fine_tuning_can_train_as_the_recipe_trains(tiny_checkpoint, dataset, tmp_path, monkeypatch, capsys):
    """--early-weight draws episodes' first samples more often; --ema-decay writes the weight average, which the
    resume point keeps too."""
    from vla_ros.policies.builtin import train
    from vla_ros.policies.builtin.recipe import TrainRecipe

    early_shares, data_early_share = {}, {}
    draw = train.Batches.draw

    def counting_draw(self, batch_size):
        indices = draw(self, batch_size)
        early = train.position_in_episode(self.data) < TrainRecipe.early_samples
        early_shares.setdefault(self.tag, []).extend(early[indices])
        data_early_share[self.tag] = early.mean()
        return indices

    monkeypatch.setattr(train.Batches, "draw", counting_draw)
    common = dict(steps=50, batch_size=4, warmup_steps=2, checkpoint_every=25, learning_rate=3e-3)
    runs = {"plain": {}, "early": dict(early_weight=4.0), "average": dict(ema_decay=0.9),
            "no-memory average": dict(ema_decay=1e-6)}
    logs = {}
    for name, extra in runs.items():
        monkeypatch.setattr(train.Batches, "tag", name, raising=False)
        logs[name] = finetune(str(tiny_checkpoint), dataset, tmp_path / name, robot="so101", progress=False,
                              config=FinetuneConfig(**common, **extra))
    early = data_early_share["plain"]  # the share of the episodes' samples that are early ones
    assert 0.1 < early < 0.5
    assert abs(np.mean(early_shares["plain"]) - early) < 0.1
    assert np.mean(early_shares["early"]) > early + 0.2, (early, np.mean(early_shares["early"]))

    # The average does not change the steps, only what is written: with decay 0.9 other weights, with a decay
    # that forgets at once the last step's.
    assert [e["loss"] for e in logs["average"]["loss"]] == [e["loss"] for e in logs["plain"]["loss"]]
    plain = weights(tmp_path / "plain")
    for name, same in [("average", False), ("no-memory average", True)]:
        written = weights(tmp_path / name)
        assert all(np.allclose(written[k], plain[k], atol=1e-5) for k in plain) == same, name
    assert int(load_file(str(tmp_path / "average" / "resume" / "average.safetensors"))["updates"]) == 25
    resumed = finetune(str(tiny_checkpoint), dataset, tmp_path / "average", robot="so101", progress=False,
                       resume=True, config=FinetuneConfig(**common, ema_decay=0.9))
    assert "resuming from step 25" in capsys.readouterr().err and [e["step"] for e in resumed["loss"]] == [50]
    for field, value, message in [("early_weight", 0.5, "--early-weight must be 1 or more"),
                                  ("ema_decay", 1.0, "--ema-decay must be at least 0")]:
        with pytest.raises(ConfigError, match=message):
            FinetuneConfig(**{field: value})


def test_a_folder_that_holds_no_dataset_is_named(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty is neither a LeRobot dataset .* nor the built-in VLA's training"):
        finetune(str(tiny_checkpoint), [DatasetShare(tmp_path / "empty")], tmp_path / "x",
                 config=FinetuneConfig(steps=1), progress=False)


def test_a_datasets_tasks_keep_their_proportions_in_its_batches():
    from vla_ros.policies.builtin.train import Batches
    from vla_ros.policies.finetune import task_shares

    instructions = np.array(["touch the red cube"] * 30 + ["pick up the blue cube"] * 10)
    samples = {"instruction": instructions, "robot": np.full(40, "so101"), "episode": np.arange(40),
               "state": np.zeros((40, 8), np.float32), "action": np.zeros((40, 6, 8), np.float32),
               "image_front": np.zeros((40, 4, 4, 3), np.uint8), "image_wrist": np.zeros((40, 4, 4, 3), np.uint8)}
    assert task_shares(samples) == {"pick": 10.0, "touch": 30.0}
    observations, _, _ = Batches(samples, seed=0, task_weights=task_shares(samples)).sample(4000)
    touch = sum(observation["task"].startswith("touch") for observation in observations) / 4000
    assert touch == pytest.approx(0.75, abs=0.03)


def test_fine_tuned_checkpoint_keeps_vla_ros_settings_where_lerobot_does_not_read(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "tuned"
    finetune(str(tiny_checkpoint), [DatasetShare(dataset)], out, config=FinetuneConfig(steps=1, batch_size=2),
             progress=False, patch_positions="transformers4")
    config = json.loads((out / "config.json").read_text())
    assert not [key for key in config if key.startswith("vla_ros")]  # LeRobot refuses keys it does not know
    ours = json.loads((out / "vla_ros.json").read_text())
    source = json.loads((tiny_checkpoint / "vla_ros.json").read_text())
    assert ours["vision_patch_positions"] == "transformers4" and source["vision_patch_positions"] == "transformers5"
    assert ours["relative_actions"] == source["relative_actions"] and ours["image_padding"] == "center"
