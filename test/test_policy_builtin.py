"""The built-in VLA: the shipped checkpoint loads offline on both arms, matches its recipe, and the recipe's
collect -> train -> checkpoint path works end to end (on a tiny recipe)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch", reason="the built-in VLA needs torch")
pytest.importorskip("transformers", reason="the built-in VLA needs transformers")

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.policies.builtin import SHIPPED_CHECKPOINTS  # noqa: E402
from vla_ros.policies.builtin.collect import collect, episode_layout, load_shards  # noqa: E402
from vla_ros.policies.builtin.recipe import RECIPES, DataRecipe, ModelRecipe, Recipe, TrainRecipe  # noqa: E402
from vla_ros.policies.builtin.train import build_config, normalization_stats, train  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.smolvla.checkpoint import load_robot_stats  # noqa: E402
from vla_ros.policies.smolvla.policy import RELATIVE_ACTIONS_KEY  # noqa: E402
from vla_ros.sim.robots import SIM_ROBOTS  # noqa: E402
from vla_ros.sim.tasks import parse_instruction  # noqa: E402
from vla_ros.sim.world import SimWorld  # noqa: E402

MAX_CHECKPOINT_BYTES = 20 * 1024 * 1024
OPTIONS = PolicyOptions(device="cpu", dtype="float32", warmup=False)
TINY = Recipe(
    data=DataRecipe(robots=("so101", "panda"), tasks=(("touch", 1),), record_every_ticks=6),
    model=ModelRecipe(image_size=32, vision_hidden=16, vision_layers=1, text_hidden=32, text_layers=2, chunk_size=6),
    train=TrainRecipe(steps=4, batch_size=4, warmup_steps=2, grounding_steps=2),
)


@pytest.mark.parametrize("name, robot", [("builtin", "so101"), ("builtin", "panda"),
                                         *[("builtin-generalist", robot) for robot in SIM_ROBOTS]])
def test_shipped_checkpoints_drive_their_arms(name, robot):
    embodiment = load_embodiment(robot)
    policy = make_policy(name, embodiment=embodiment, options=OPTIONS)
    check_policy(policy, embodiment)
    assert policy.metadata.name == name and policy.metadata.learned
    assert policy.metadata.features.action_dt_s == embodiment.control_period_s  # chunks on the robot's own clock


def test_shipped_checkpoint_uses_each_robots_statistics():
    """The same policy-unit observation means different things to the two arms: the outputs must differ."""
    so101 = make_policy("builtin", embodiment=load_embodiment("so101"), options=OPTIONS)
    panda = make_policy("builtin", embodiment=load_embodiment("panda"), options=OPTIONS)
    embodiment = load_embodiment("so101")
    adapter = EmbodimentAdapter(embodiment, so101.metadata.features)
    batch, _ = adapter.to_policy_observation(embodiment.example_observation(instruction="touch the red cube"))
    chunks = []
    for policy in (so101, panda):
        policy.reset(seed=0)
        chunks.append(policy.predict_chunk(batch))
    assert not np.allclose(chunks[0], chunks[1], atol=1e-3)
    so101.reset(seed=0)
    np.testing.assert_allclose(so101.predict_chunk(batch), chunks[0], atol=1e-5)  # same robot, same noise: same


@pytest.mark.parametrize("recipe_name", sorted(RECIPES))
def test_shipped_checkpoints_are_small_and_made_by_the_recipes_in_the_repository(recipe_name):
    checkpoint, recipe = SHIPPED_CHECKPOINTS[recipe_name], RECIPES[recipe_name]
    size = sum(path.stat().st_size for path in checkpoint.rglob("*") if path.is_file())
    assert size <= MAX_CHECKPOINT_BYTES, f"{recipe_name} checkpoint is {size / 2**20:.1f} MB"
    log = json.loads((checkpoint / "training_log.json").read_text())
    assert log["recipe"] == json.loads(json.dumps(recipe.to_dict()))  # weights and recipe.py agree
    assert sorted(log["samples"]) == sorted(recipe.data.robots)  # trained on the recipe's arms, and no other
    shipped = json.loads((checkpoint / "config.json").read_text())
    built = build_config(recipe.model)
    expected = built.to_dict()
    for key in ("chunk_size", "max_state_dim", "max_action_dim", "resize_imgs_with_padding", "num_vlm_layers",
                "input_features", "output_features", "num_steps"):
        assert shipped[key] == json.loads(json.dumps(expected[key])), key
    ours = json.loads((checkpoint / "vla_ros.json").read_text())  # settings LeRobot must not see
    assert ours[RELATIVE_ACTIONS_KEY] == built.vla_ros[RELATIVE_ACTIONS_KEY]
    assert not any(key.startswith("vla_ros") for key in shipped)


def test_recipe_collects_trains_and_writes_a_loadable_checkpoint(tmp_path):
    data_dir, out_dir = tmp_path / "data", tmp_path / "checkpoint"
    summaries = collect(TINY.data, TINY.model, data_dir, workers=1, shards_per_task=1)
    assert {s["robot"] for s in summaries} == {"so101", "panda"} and all(s["samples"] > 0 for s in summaries)
    data = load_shards(data_dir)
    assert data["action"].shape[1:] == (TINY.model.chunk_size, TINY.model.action_dim)
    assert data["image_front"].shape[1:] == (32, 32, 3) and set(data["robot"]) == {"so101", "panda"}

    # Every sample knows where its episode's instructed cube stood at the start (the grounding target).
    for robot in ("so101", "panda"):
        (seed, color), = {episode_layout(TINY.data, robot, "touch", int(i))
                          for i in data["episode"][data["robot"] == robot]}
        world = SimWorld(robot, render=False)
        world.reset(parse_instruction(f"touch the {color} cube"), seed=seed)
        samples = data["robot"] == robot
        cubes = np.array([world.cube_pose(c)[0][:2] for c in TINY.data.colors])
        np.testing.assert_allclose(data["goal"][samples], np.broadcast_to(world.cube_pose(color)[0][:2],
                                                                          (samples.sum(), 2)), atol=1e-6)
        np.testing.assert_allclose(data["cubes"][samples], np.broadcast_to(cubes, (samples.sum(), 3, 2)), atol=1e-6)
        # ... and where the tool centre point was: the episode starts at the home pose, then the arm moves.
        tcp = data["tcp"][samples]
        np.testing.assert_allclose(tcp[0], world.tcp_pose()[0], atol=1e-5)
        assert np.linalg.norm(tcp[-1] - tcp[0]) > 0.02

    log = train(TINY, data_dir, out_dir, threads=1)
    assert len(log["loss"]) == 0 or np.isfinite(log["loss"][-1]["loss"])
    for robot in ("so101", "panda"):
        assert (out_dir / "norm_stats" / f"{robot}.safetensors").is_file()
        embodiment = load_embodiment(robot)
        policy = make_policy(str(out_dir), embodiment=embodiment, options=OPTIONS)
        check_policy(policy, embodiment)
        assert (policy.relative_actions is not None) == (robot in TINY.model.relative_action_robots)
    # The so101's arm actions were learned (and normalized) as offsets from the state, its gripper's as they are.
    rows = data["robot"] == "so101"
    offsets = (data["action"][rows] - data["state"][rows][:, None, :]).reshape(-1, 8)
    mean = load_robot_stats(out_dir, "so101")["action.mean"]
    np.testing.assert_allclose(mean[:5], offsets[:, :5].mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(mean[5], data["action"][rows][..., 5].mean(), atol=1e-4)


@pytest.mark.parametrize("per_layout", [1, 3])
def test_episodes_cycle_through_the_colours_and_share_layouts_as_the_recipe_says(per_layout):
    recipe = replace(DataRecipe(), instructions_per_layout=per_layout)
    episodes = [episode_layout(recipe, "so101", "touch", i) for i in range(6)]
    assert [color for _, color in episodes] == ["red", "green", "blue"] * 2
    assert len({seed for seed, _ in episodes}) == 6 // per_layout
    assert episode_layout(recipe, "panda", "touch", 0)[0] != episodes[0][0]  # each robot has its own layouts


def test_a_robots_episodes_do_not_depend_on_which_other_robots_a_recipe_trains_on():
    from vla_ros.policies.builtin.recipe import GENERALIST, HELD_OUT_ARM

    shipped = DataRecipe()
    generalist = replace(GENERALIST.data, tasks=shipped.tasks)  # same episode counts, other robots
    for robot in shipped.robots:
        assert [episode_layout(generalist, robot, "touch", i) for i in range(9)] == \
            [episode_layout(shipped, robot, "touch", i) for i in range(9)]
    layouts = {episode_layout(generalist, robot, "touch", 0)[0] for robot in GENERALIST.data.robots}
    assert len(layouts) == len(GENERALIST.data.robots)
    # The generalist's held-out arm is a simulated arm it never sees, and it trains on every other one.
    assert HELD_OUT_ARM in SIM_ROBOTS and HELD_OUT_ARM not in GENERALIST.data.robots
    assert set(GENERALIST.data.robots) | {HELD_OUT_ARM} == set(SIM_ROBOTS)


def test_the_held_out_arms_demonstrations_are_recorded_as_the_recipe_records_its_own(tmp_path, monkeypatch):
    from vla_ros.core.errors import ConfigError
    from vla_ros.policies.builtin import collect as collect_module
    from vla_ros.policies.builtin.recipe import GENERALIST, HELD_OUT_ARM

    recorded = []
    monkeypatch.setattr(collect_module, "collect", lambda data, model, out, workers: recorded.append(data) or [])
    assert collect_module.main(["--recipe", "generalist", "--robots", HELD_OUT_ARM, "--out", str(tmp_path)]) == 0
    assert recorded == [replace(GENERALIST.data, robots=(HELD_OUT_ARM,))]
    assert collect_module.main(["--recipe", "generalist", "--robots", HELD_OUT_ARM, "--instructions-per-layout", "1",
                                "--out", str(tmp_path)]) == 0
    assert recorded[1] == replace(GENERALIST.data, robots=(HELD_OUT_ARM,), instructions_per_layout=1)
    # Its layouts are its own: none is a layout another arm of the recipe trained on.
    held_out = {episode_layout(recorded[0], HELD_OUT_ARM, "touch", i)[0] for i in range(150)}
    trained = {episode_layout(GENERALIST.data, robot, "touch", i)[0] for robot in GENERALIST.data.robots
               for i in range(150)}
    assert not held_out & trained
    # Another base seed: new layouts for every arm.
    assert collect_module.main(["--recipe", "generalist", "--seed", "900000", "--out", str(tmp_path)]) == 0
    assert recorded[2] == replace(GENERALIST.data, seed=900_000)
    assert not {episode_layout(recorded[2], robot, "touch", i)[0] for robot in GENERALIST.data.robots
                for i in range(150)} & trained
    with pytest.raises(ConfigError, match=r"--robots: unknown value 'gen4'.*Did you mean 'gen3'"):
        collect_module.main(["--recipe", "generalist", "--robots", "gen4", "--out", str(tmp_path)])


def test_normalization_stats_leave_padding_alone():
    data = {"state": np.array([[1.0, 0.0], [3.0, 0.0]]), "action": np.array([[[1.0, 0.0]], [[3.0, 0.0]]])}
    stats = normalization_stats(data, np.array([True, True]))
    np.testing.assert_allclose(stats["observation.state.mean"], [2.0, 0.0])
    np.testing.assert_allclose(stats["observation.state.std"], [1.0, 1.0])  # the zero pad gets std 1, not 0


def test_training_images_are_shifted_per_camera_within_their_limit():
    from vla_ros.policies.builtin.train import Batches

    rng = np.random.default_rng(0)
    n, size = 6, 24
    data = {"state": np.zeros((n, 8), np.float32), "action": np.zeros((n, 4, 8), np.float32),
            "episode": np.arange(n), "instruction": np.array(["touch the red cube"] * n),
            "robot": np.array(["so101"] * n),
            "image_front": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
            "image_wrist": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)}
    batches = Batches(data, seed=0, task_weights={}, max_shift_px={"front": 0, "wrist": 2})

    def shift_of(image: np.ndarray, originals: np.ndarray) -> tuple[int, int] | None:
        """The (dy, dx) that maps one of `originals` onto `image` away from the edge padding, if any."""
        inner = image[3:-3, 3:-3]
        for original in originals:
            for dy in range(-3, 4):
                for dx in range(-3, 4):
                    if np.array_equal(inner, original[3 + dy: size - 3 + dy, 3 + dx: size - 3 + dx]):
                        return dy, dx
        return None

    observations, _, _ = batches.sample(64)
    wrist_shifts = {shift_of(o["observation.images.wrist"], data["image_wrist"]) for o in observations}
    assert all(shift_of(o["observation.images.front"], data["image_front"]) == (0, 0) for o in observations)
    assert None not in wrist_shifts and all(max(abs(dy), abs(dx)) <= 2 for dy, dx in wrist_shifts)
    assert len(wrist_shifts) > 5  # shifted, and not always by the same amount


def test_recipe_steps_can_be_overridden_without_touching_the_rest():
    quick = replace(Recipe(), train=replace(Recipe().train, steps=10))
    assert quick.train.steps == 10 and quick.model == Recipe().model


def test_goal_readout_learns_the_goal_and_padded_dimensions_never_reach_the_actions(tmp_path):
    import torch

    from vla_ros.core.features import STATE, TASK, image_key, image_mask_key
    from vla_ros.policies.builtin.train import GroundingReadout, build_model
    from vla_ros.policies.smolvla.processor import SmolVLAProcessor

    torch.manual_seed(0)
    recipe = TINY.model
    config, model, tokenizer = build_model(recipe, tmp_path / "vlm")
    data = {"state": np.zeros((1, recipe.state_dim)), "action": np.zeros((1, 1, recipe.action_dim))}
    processor = SmolVLAProcessor(config, normalization_stats(data, np.array([True])), tokenizer)
    rng = np.random.default_rng(0)
    observations = [{STATE: rng.normal(size=recipe.state_dim).astype(np.float32), TASK: f"touch the {color} cube",
                     **{image_key(k): rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for k in ("front", "wrist")},
                     **{image_mask_key(k): True for k in ("front", "wrist")}}
                    for color in ("red", "green", "blue", "red")]
    goals = rng.normal(size=(4, 8)).astype(np.float32)
    readout = GroundingReadout(model, recipe.action_dim, {"so101": (np.zeros(8, np.float32), np.ones(8, np.float32))})
    padded_inputs = model.action_in_proj.weight[:, recipe.action_dim:]
    assert torch.count_nonzero(padded_inputs) == 0

    inputs = processor.preprocess(observations)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    initial = readout.loss(model.encode_prefix(**inputs), "so101", goals).item()
    for _ in range(15):
        optimizer.zero_grad()
        readout.loss(model.encode_prefix(**inputs), "so101", goals).backward()
        optimizer.step()
    assert readout.loss(model.encode_prefix(**inputs), "so101", goals).item() < 0.5 * initial
    assert torch.count_nonzero(model.action_in_proj.weight[:, recipe.action_dim:]) == 0  # still blind to them

    model.eval()
    noise = torch.randn(4, config.chunk_size, config.max_action_dim)
    other = noise.clone()
    other[:, :, recipe.action_dim:] = torch.randn(4, config.chunk_size, config.max_action_dim - recipe.action_dim)
    with torch.no_grad():
        actions = model.sample_actions(**inputs, noise=noise)[:, :, :recipe.action_dim]
        actions_other = model.sample_actions(**inputs, noise=other)[:, :, :recipe.action_dim]
    torch.testing.assert_close(actions, actions_other)


def test_weight_average_follows_the_ema_with_warmup_and_swaps_in_only_inside_its_block():
    import torch

    from vla_ros.policies.builtin.train import WeightAverage

    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen weights are not averaged
    average = WeightAverage(model, decay=0.9)
    expected = model.weight.detach().numpy().astype(np.float64).copy()
    for n in range(1, 41):
        with torch.no_grad():
            model.weight.add_(0.1 * n)
        average.update()
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model.weight.detach().numpy()
    own = model.weight.detach().clone()
    with average.applied():
        np.testing.assert_allclose(model.weight.detach().numpy(), expected, rtol=1e-5)
        assert not torch.equal(model.weight, own)
    assert torch.equal(model.weight, own)  # the training weights are back, bit for bit
    assert len(average.average) == 1
