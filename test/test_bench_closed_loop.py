"""`vla-ros bench closed-loop`: sync vs async inference and merge strategies in the MuJoCo closed loop."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from vla_ros.bench.closed_loop import GridCell, jerk_samples, run_grid
from vla_ros.cli.main import main
from vla_ros.core.embodiment import load_embodiment
from vla_ros.policies.factory import make_policy
from vla_ros.sim.episodes import make_world

T = 0.1
ARM = slice(0, 5)  # so101's arm joints (policy dims 0..4); the gripper is dim 5
OFFSET = 3.0  # policy units (so101's arm: -100..100 over the joint range): about 0.06 rad


# -- jerk bookkeeping on literal sequences ----------------------------------------------------------------------------


def test_a_jump_at_a_seam_shows_at_the_three_seam_samples_only():
    ticks = np.arange(12)
    commanded = (0.1 * ticks + np.where(ticks >= 6, 1.0, 0.0))[:, None]  # steady motion, a 1.0 jump at tick 6
    samples = jerk_samples(commanded, period_s=T, seam_ticks=[6], held=np.zeros(12, dtype=bool))
    # Third differences of a unit step at tick 6: +1 at 6, -2 at 7, +1 at 8; steady motion has none.
    np.testing.assert_allclose(samples.seams, np.array([1.0, 4.0, 1.0]) / T**6)
    np.testing.assert_allclose(samples.within_chunks, np.zeros(6), atol=1e-6)  # ticks 3, 4, 5, 9, 10, 11


def test_a_jump_away_from_seams_is_within_chunk_and_held_windows_are_left_out():
    ticks = np.arange(14)
    commanded = np.column_stack([np.where(ticks >= 5, 1.0, 0.0), np.zeros(14)])  # two joints, the first jumps
    held = np.zeros(14, dtype=bool)
    held[11] = True  # windows k-3..k holding tick 11: k = 11..13
    samples = jerk_samples(commanded, period_s=T, seam_ticks=[], held=held)
    assert samples.seams.size == 0
    assert samples.within_chunks.size == 2 * 8  # ticks 3..10, two joints each
    np.testing.assert_allclose(np.sort(samples.within_chunks)[-3:], np.array([1.0, 1.0, 4.0]) / T**6)


def test_too_short_a_run_has_no_samples():
    samples = jerk_samples(np.zeros((3, 2)), period_s=T, seam_ticks=[1], held=np.zeros(3, dtype=bool))
    assert samples.seams.size == 0 and samples.within_chunks.size == 0


# -- the grid in the closed loop ---------------------------------------------------------------------------------------


class DisagreeingExpert:
    """The scripted expert, with each chunk's arm offset by +OFFSET or -OFFSET in turn.

    Consecutive chunks of the expert agree (it follows one script), so merges would all look alike; a
    learned policy's chunks disagree, which is what merging is for. With `follow_prefix` it also does what
    real-time chunking makes a flow-matching policy do: the first d steps copy the prefix, the next ones
    fade from the prefix to its own chunk, the rest are its own.
    """

    def __init__(self, expert, *, follow_prefix: bool = False):
        self._expert = expert
        self.metadata = replace(expert.metadata, supports_prefix=follow_prefix)
        self._sign = 1.0
        self.prefixes = []

    def reset(self, *, seed=None):
        self._expert.reset()
        self._sign = 1.0

    def predict_chunk(self, observation, prefix=None):
        actions = self._expert.predict_chunk(observation).copy()
        actions[:, ARM] += self._sign * OFFSET
        self._sign = -self._sign
        if prefix is not None and self.metadata.supports_prefix:
            self.prefixes.append(prefix)
            n, d = len(prefix.actions), prefix.inference_delay_steps
            weights = np.clip((n - np.arange(n)) / (n - d + 1), 0.0, 1.0)  # 1 for i < d, then down to 1/(n-d+1)
            actions[:n] = weights[:, None] * prefix.actions + (1 - weights[:, None]) * actions[:n]
        return actions

    def close(self):
        self._expert.close()


@pytest.fixture(scope="module")
def so101_world():
    embodiment = load_embodiment("so101")
    world = make_world(embodiment, ("red", "green", "blue"))
    yield embodiment, world
    world.close()


def grid(embodiment, world, policy, cells):
    return run_grid(world, policy, embodiment, cells, task_family="touch", colors=("red", "green", "blue"),
                    seeds=[4], measure_latency=False)


def test_replace_has_more_jerk_at_seams_than_blend_and_rtc(so101_world):
    embodiment, world = so101_world
    expert = make_policy("expert", embodiment=embodiment, world=world)
    plain = DisagreeingExpert(expert)
    following = DisagreeingExpert(expert, follow_prefix=True)
    replace_cell, blend_cell = grid(embodiment, world, plain, [GridCell("async", "replace", 100.0),
                                                               GridCell("async", "blend", 100.0)])
    (rtc_cell,) = grid(embodiment, world, following, [GridCell("async", "rtc", 100.0)])
    assert rtc_cell["merge_used"] == "rtc" and following.prefixes, "the policy got prefixes"
    for cell in (replace_cell, blend_cell, rtc_cell):
        assert cell["success_rate"] == 1.0 and cell["seams"] >= 2, cell
    replace_jerk, blend_jerk, rtc_jerk = (c["jerk_rms"] for c in (replace_cell, blend_cell, rtc_cell))
    # Replace jumps by 2*OFFSET at every seam, blend fades over the overlap, RTC continued the old chunk.
    assert replace_jerk["seams"] > 2 * blend_jerk["seams"]
    assert replace_jerk["seams"] > 2 * rtc_jerk["seams"]
    # The jump lands at the seams, not within chunks: the seam ticks are the ones where the new chunk took over.
    assert replace_jerk["seams"] > 2.5 * replace_jerk["within_chunks"]


def test_cli_grid_reports_every_cell_and_sync_stalls_for_the_latency(tmp_path, capsys):
    out = tmp_path / "closed_loop.json"
    code = main(["bench", "closed-loop", "--policy", "expert", "--episodes", "1", "--seed", "4", "--modes",
                 "sync,async", "--merges", "blend,rtc", "--latencies-ms", "100", "--no-measured-latency",
                 "--json", str(out), "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads(out.read_text())
    assert printed == results
    assert results["policy"] == "expert" and results["policy_is_learned"] is False
    assert results["latency_model"] == {"measured_wall_time": False, "added_ms": [100.0]}
    assert [(c["inference"], c["merge"], c["merge_used"]) for c in results["cells"]] == [
        ("sync", "blend", "blend"), ("sync", "rtc", "replace"),
        ("async", "blend", "blend"), ("async", "rtc", "replace"),
    ]
    period = 1 / results["control_rate_hz"]
    for cell in results["cells"]:
        assert cell["success_rate"] == 1.0 and cell["task_time_s"] > 0
        assert cell["charged_latency_ms"]["mean"] == pytest.approx(100.0)
        assert cell["policy_latency_ms"]["count"] == cell["chunks"] >= 2
        assert cell["jerk_rms"]["seams"] > 0 and cell["jerk_rms"]["within_chunks"] > 0
        # Each chunk waits 100 ms: 3 ticks, or 4 where ticks ran a physics step short. Async waits for the first only.
        waits = cell["chunks"] if cell["inference"] == "sync" else 1
        assert 3 * waits * period - 1e-6 <= cell["stall_time_s"] <= 4 * waits * period + 1e-6, cell
    assert (tmp_path / results["plot"].split("/")[-1]).stat().st_size > 5_000


def test_unknown_merge_is_an_operator_error(capsys):
    assert main(["bench", "closed-loop", "--policy", "expert", "--merges", "blend,ensamble", "--no-progress"]) == 2
    assert "unknown value 'ensamble'" in capsys.readouterr().err
