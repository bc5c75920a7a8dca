"""The `vla-ros` command: the demo's closed loop end to end in MuJoCo, and the overhead benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_ros.cli.main import main
from vla_ros.core.errors import PolicyError


@pytest.mark.parametrize(("robot", "task"), [("so101", "touch"), ("panda", "pick")])
def test_demo_closed_loop_with_the_expert(tmp_path, capsys, robot, task):
    out = tmp_path / "results.json"
    code = main(["demo", "--policy", "expert", "--robot", robot, "--task", task, "--episodes", "2", "--seed", "100",
                 "--json", str(out),
                 "--out", str(tmp_path), "--video-episodes", "1", "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["policy"] == "expert" and results["policy_is_learned"] is False
    assert "not a VLA" in capsys.readouterr().out
    assert results["success_rate"] == 1.0, results["episodes"]
    assert [e["seed"] for e in results["episodes"]] == [100, 101]
    for key in ("policy_latency_ms", "pipeline_overhead_ms"):
        assert results[key]["count"] > 0 and results[key]["p99"] >= results[key]["p50"] >= 0
    assert results["stall_time_s"] >= 0
    assert isinstance(results["safety_interventions"], dict)
    video = tmp_path / results["video"].split("/")[-1]
    assert video.exists() and video.stat().st_size > 10_000
    assert (tmp_path / results["plot"].split("/")[-1]).exists()


def test_demo_dry_run_never_moves_the_arm(tmp_path):
    out = tmp_path / "results.json"
    code = main(["demo", "--policy", "expert", "--robot", "so101", "--episodes", "1", "--dry-run", "--json", str(out),
                 "--out", str(tmp_path),
                 "--video-episodes", "0", "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["dry_run"] is True and results["success_rate"] == 0.0


def test_unknown_robot_is_an_operator_error(capsys):
    assert main(["demo", "--robot", "so10", "--episodes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the simulator has no robot 'so10'" in err and "Did you mean 'so101'?" in err


def test_bench_overhead_prints_json(capsys, tmp_path):
    assert main(["bench", "overhead", "--steps", "30", "--cameras", "1", "3", "--compare", "--out", str(tmp_path)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert (tmp_path / "overhead_panda.png").is_file()
    for comparison in results["side_by_side"]:
        assert set(comparison["per_tick_ms"]) == {"vla_ros", "prepare_every_tick", "straightforward"}
        assert all(s["count"] == 30 and s["mean"] > 0 for s in comparison["per_tick_ms"].values())
        assert comparison["ratio_to_vla_ros"]["vla_ros"] == 1.0
    assert [c["cameras"] for c in results["configurations"]] == [1, 3]
    for configuration in results["configurations"]:
        stages = configuration["stages_ms"]
        assert set(stages) == {"decode", "prepare", "policy_images", "accept_chunk", "step", "total"}
        assert stages["total"]["max"] >= stages["step"]["max"] > 0
        assert configuration["image_resize"] == "exact" and stages["policy_images"]["mean"] > 0  # LeRobot's resize


def test_demo_sync_inference_waits_for_each_chunk_and_async_does_not(tmp_path):
    results = {}
    for inference in ("sync", "async"):
        out = tmp_path / f"{inference}.json"
        code = main(["demo", "--policy", "expert", "--robot", "so101", "--episodes", "1", "--seed", "7",
                     "--inference", inference,
                     "--latency-ms", "200", "--no-measured-latency", "--merge", "rtc", "--json", str(out),
                     "--out", str(tmp_path), "--video-episodes", "0", "--no-progress"])
        assert code == 0
        results[inference] = json.loads(out.read_text())
    for inference, result in results.items():
        assert result["inference"] == inference and result["success_rate"] == 1.0
        assert result["latency_model"] == {"inference": inference, "measured_wall_time": False, "added_ms": 200.0}
        assert result["charged_latency_ms"]["mean"] == pytest.approx(200.0)
        assert result["merge"] == "rtc" and result["merge_used"] == "replace"  # the expert takes no prefix
    period = 1 / 30
    sync_chunks = results["sync"]["charged_latency_ms"]["count"]
    # 200 ms is 6 ticks (7 where ticks ran a physics step short): sync waits that for every chunk, async for the
    # first one only (the queue, half a 1 s chunk, outlasts the latency).
    assert 6 * sync_chunks * period - 1e-6 <= results["sync"]["stall_time_s"] <= 7 * sync_chunks * period + 1e-6
    assert 6 * period - 1e-6 <= results["async"]["stall_time_s"] <= 7 * period + 1e-6


class _FlakyPolicy:
    """The expert, except that its first `failures` chunks raise PolicyError (a server that is not up yet)."""

    def __init__(self, expert, failures: int):
        self.metadata, self._expert, self.failures = expert.metadata, expert, failures

    def reset(self, *, seed=None):
        self._expert.reset()

    def predict_chunk(self, observation, prefix=None):
        if self.failures > 0:
            self.failures -= 1
            raise PolicyError("policy server ws://127.0.0.1:9 unreachable; the arm holds")
        return self._expert.predict_chunk(observation)


def test_demo_loop_holds_while_the_policy_fails_and_recovers():
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.pipeline import ActionPipeline
    from vla_ros.policies.factory import make_policy
    from vla_ros.sim.closed_loop import LoopSettings, run_episode
    from vla_ros.sim.episodes import make_world
    from vla_ros.sim.tasks import parse_instruction

    embodiment = load_embodiment("so101")
    world = make_world(embodiment, ("red", "green", "blue"))
    policy = _FlakyPolicy(make_policy("expert", embodiment=embodiment, world=world), failures=5)
    pipeline = ActionPipeline(embodiment, policy.metadata.features)
    log = run_episode(world, parse_instruction("touch the red cube"), seed=3, policy=policy, pipeline=pipeline,
                      settings=LoopSettings(measure_latency=False))
    assert sum(log.policy_errors.values()) == 5 and log.success
    held = np.array(log.commanded[:5])
    np.testing.assert_allclose(held, np.broadcast_to(held[0], held.shape), atol=1e-9)  # no chunk yet: no motion


def test_demo_report_names_each_episode_its_video_and_where_it_wrote(tmp_path, capsys):
    imageio = pytest.importorskip("imageio.v2")
    out = tmp_path / "results.json"
    assert main(["demo", "--policy", "expert", "--robot", "so101", "--episodes", "2", "--seed", "5",
                 "--video-episodes", "1", "--json", str(out), "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    results = json.loads(out.read_text())
    first = results["episodes"][0]
    assert f"episode 1/2 (seed 5) {first['instruction']}: success in {first['duration_s']:.1f} s" in stdout
    assert f"video  {results['video']}  (episodes 1-1 of 2; --video-episodes 2 films them all)" in stdout
    assert f"plot   {results['plot']}  (joints of episode 1, seed 5" in stdout
    assert f"json   {out.resolve()}" in stdout
    assert results["video_seeds"] == [5] and results["video"].startswith(str(tmp_path))
    frames = imageio.mimread(results["video"], memtest=False)
    # every tick of the filmed episode, then its outcome held for a second (30 Hz)
    assert len(frames) == first["steps"] + 30
    caption, scene = frames[-1][:48], frames[-1][48:]
    assert caption.mean() < 60 < scene.mean()  # the caption sits on its own dark bar, above the cameras
    green = caption[..., 1].astype(int) - caption[..., 0].astype(int)
    assert (green > 100).sum() > 50  # "SUCCESS ..." in green
