"""ChunkScheduler: dropping stale steps, merging chunks by time, resampling, and ticks on another grid.

Hand-computed cases use a period of 0.25 s (tolerance 0.125 s) so that every time is exact in binary.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vla_ros.core.errors import ConfigError, PolicyError, VlaRosError
from vla_ros.core.scheduler import (
    COUNTER_NAMES,
    ChunkError,
    ChunkReceipt,
    ChunkScheduler,
    MergeStrategy,
    SchedulerConfig,
    SchedulerError,
)

T = 0.25


def make(merge=MergeStrategy.BLEND, **kwargs) -> ChunkScheduler:
    return ChunkScheduler(SchedulerConfig(control_period_s=T, merge=merge, **kwargs))


def column(*values: float) -> np.ndarray:
    """An (H, 1) chunk."""
    return np.array(values, dtype=float)[:, None]


def queue_of(scheduler: ChunkScheduler, now: float) -> tuple[list[float], list[float]]:
    times, targets = scheduler.queued(now)
    return times.tolist(), targets[:, 0].tolist()


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"control_period_s": 0.0}, "control_period_s"),
        ({"control_period_s": -0.01}, "control_period_s"),
        ({"control_period_s": float("nan")}, "control_period_s"),
        ({"control_period_s": "0.02"}, "control_period_s"),
        ({"refill_threshold_steps": -1}, "refill_threshold_steps"),
        ({"refill_threshold_steps": 2.5}, "refill_threshold_steps"),
        ({"refill_threshold_steps": True}, "refill_threshold_steps"),
        ({"merge": "blnd"}, "merge"),
        ({"merge": 3}, "merge"),
        ({"ensemble_decay": -0.1}, "ensemble_decay"),
        ({"ensemble_decay": float("inf")}, "ensemble_decay"),
        ({"tick_tolerance_periods": 0.0}, "tick_tolerance_periods"),
        ({"tick_tolerance_periods": 1.5}, "tick_tolerance_periods"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    arguments = {"control_period_s": 0.02, **kwargs}
    with pytest.raises(ConfigError, match=field) as info:
        SchedulerConfig(**arguments)
    assert info.value.key == field


def test_config_unknown_merge_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'blend'"):
        SchedulerConfig(control_period_s=0.02, merge="blnd")


def test_config_accepts_merge_as_string_and_defaults():
    config = SchedulerConfig(control_period_s=0.02, merge="ensemble")
    assert config.merge is MergeStrategy.ENSEMBLE
    default = SchedulerConfig(control_period_s=0.02)
    assert default.merge is MergeStrategy.BLEND
    assert default.tick_tolerance_s == pytest.approx(0.01)
    assert default.refill_threshold_steps == 10
    assert default.ensemble_decay == 0.01


# -- a single chunk ----------------------------------------------------------------------------------


def test_chunk_on_time_is_executed_step_by_step_then_none():
    s = make()
    receipt = s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.0, dt=T, now=0.0)
    assert receipt == ChunkReceipt(dropped_late_steps=0, merged_steps=0, queued_steps=4)
    assert [s.pop_command(t)[0] for t in (0.0, 0.25, 0.5, 0.75)] == [0, 1, 2, 3]
    assert s.last_command_time == 0.75
    assert s.pop_command(1.0) is None
    assert s.counters["steps_executed"] == 4
    assert s.counters["empty_ticks"] == 1


def test_pop_when_nothing_was_ever_queued_returns_none_and_counts():
    s = make()
    assert s.pop_command(3.0) is None
    assert s.pop_command(3.25) is None
    assert s.counters["empty_ticks"] == 2
    assert s.remaining_steps(3.0) == 0
    assert s.needs_refill(3.0)


def test_late_chunk_is_dropped_entirely():
    s = make()
    receipt = s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.0, dt=T, now=2.0)
    assert receipt == ChunkReceipt(dropped_late_steps=4, merged_steps=0, queued_steps=0)
    assert s.counters["steps_dropped_late"] == 4
    assert s.pop_command(2.0) is None


def test_partially_late_chunk_drops_exactly_the_passed_steps():
    s = make()
    # now - tolerance = 0.475: steps at 0 and 0.25 have passed, 0.5 has not.
    receipt = s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.0, dt=T, now=0.6)
    assert receipt == ChunkReceipt(dropped_late_steps=2, merged_steps=0, queued_steps=2)
    assert queue_of(s, 0.6) == ([0.5, 0.75], [2.0, 3.0])


def test_step_exactly_one_tolerance_old_is_kept():
    s = make()
    # now - tolerance = 0.5 exactly: the step at 0.5 is not older than that.
    receipt = s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.0, dt=T, now=0.625)
    assert receipt.dropped_late_steps == 2
    assert s.pop_command(0.625)[0] == 2.0


def test_ticks_that_fall_behind_skip_steps_and_count_them():
    s = make()
    s.add_chunk(column(0, 1, 2, 3, 4), observation_stamp=0.0, dt=T, now=0.0)
    assert s.pop_command(0.0)[0] == 0
    assert s.pop_command(0.75)[0] == 3  # 0.25 and 0.5 were never executed
    assert s.counters["steps_skipped"] == 2
    assert s.counters["steps_executed"] == 2


def test_misaligned_tick_grid_takes_the_nearest_step():
    s = make()
    s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.1, dt=T, now=0.1)  # steps at 0.1, 0.35, 0.6, 0.85
    assert [s.pop_command(t)[0] for t in (0.2, 0.45, 0.7, 0.95)] == [0, 1, 2, 3]
    assert s.pop_command(1.2) is None
    assert s.counters["steps_skipped"] == 0


def test_jittered_tick_takes_the_nearest_step_and_skips_the_passed_one():
    s = make()
    s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.1, dt=T, now=0.1)
    assert s.pop_command(0.2)[0] == 0
    assert s.pop_command(0.5)[0] == 2  # 0.6 is 0.1 away; 0.35 is 0.15 away, beyond tolerance
    assert s.counters["steps_skipped"] == 1


def test_tick_halfway_between_two_steps_takes_the_earlier():
    s = make()
    s.add_chunk(column(0, 1, 2), observation_stamp=0.0, dt=T, now=0.0)
    assert s.pop_command(0.125)[0] == 0
    assert s.pop_command(0.375)[0] == 1


def test_tick_before_the_first_step_returns_none_without_consuming_it():
    s = make()
    s.add_chunk(column(5, 6), observation_stamp=1.0, dt=T, now=1.0)
    assert s.pop_command(0.8) is None  # 0.2 s before the first step
    assert s.pop_command(1.0)[0] == 5


def test_wider_tolerance_executes_a_step_later():
    s = make(tick_tolerance_periods=1.0)
    s.add_chunk(column(0, 1), observation_stamp=0.0, dt=T, now=0.0)
    assert s.pop_command(0.0)[0] == 0
    assert s.pop_command(0.45)[0] == 1  # 0.2 s late: beyond 0.125 s, within 0.25 s


def test_remaining_steps_and_refill_threshold():
    s = make(refill_threshold_steps=2)
    assert s.needs_refill(0.0)
    s.add_chunk(column(0, 1, 2, 3, 4), observation_stamp=0.0, dt=T, now=0.0)
    assert s.remaining_steps(0.0) == 5
    assert not s.needs_refill(0.0)
    s.pop_command(0.0)
    s.pop_command(0.25)
    assert s.remaining_steps(0.3) == 3
    assert not s.needs_refill(0.3)
    s.pop_command(0.5)
    assert s.remaining_steps(0.55) == 2
    assert s.needs_refill(0.55)
    # Queries do not consume: time passing alone makes steps stale.
    assert s.remaining_steps(0.9) == 1
    assert s.remaining_steps(0.55) == 2
    assert s.remaining_steps(5.0) == 0


def test_refill_threshold_zero_asks_only_when_empty():
    s = make(refill_threshold_steps=0)
    s.add_chunk(column(0, 1), observation_stamp=0.0, dt=T, now=0.0)
    s.pop_command(0.0)
    assert not s.needs_refill(0.0)
    s.pop_command(0.25)
    assert s.needs_refill(0.25)


def test_queued_returns_copies_and_add_chunk_leaves_input_alone():
    s = make()
    chunk = np.array([[0.0, 1.0], [2.0, 3.0]])
    s.add_chunk(chunk, observation_stamp=0.0, dt=T, now=0.0)
    chunk[0, 0] = 99.0
    times, targets = s.queued(0.0)
    times[0] = 42.0
    targets[0, 0] = 42.0
    np.testing.assert_array_equal(s.pop_command(0.0), [0.0, 1.0])
    command = s.pop_command(0.25)
    command[0] = 7.0
    assert queue_of(s, 0.25) == ([], [])


# -- resampling --------------------------------------------------------------------------------------


def test_chunk_with_longer_dt_is_interpolated_onto_the_control_grid():
    s = make()
    receipt = s.add_chunk(column(0, 2, 4), observation_stamp=0.0, dt=0.5, now=0.0)
    assert receipt.queued_steps == 5
    assert queue_of(s, 0.0) == ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0])


def test_chunk_with_shorter_dt_is_subsampled_without_extrapolating():
    s = make()
    s.add_chunk(column(0, 1, 2, 3, 4, 5), observation_stamp=0.0, dt=0.125, now=0.0)  # spans 0.625 s
    assert queue_of(s, 0.0) == ([0.0, 0.25, 0.5], [0.0, 2.0, 4.0])


def test_chunk_with_unrelated_dt_is_interpolated():
    s = make()
    s.add_chunk(column(0, 3, 6), observation_stamp=1.0, dt=0.3, now=1.0)  # spans 0.6 s
    times, values = queue_of(s, 1.0)
    assert times == pytest.approx([1.0, 1.25, 1.5])
    assert values == pytest.approx([0.0, 2.5, 5.0])


def test_single_step_chunk_ignores_dt():
    s = make()
    assert s.add_chunk(column(7), observation_stamp=0.0, dt=0.5, now=0.0).queued_steps == 1
    assert s.pop_command(0.0)[0] == 7


@pytest.mark.parametrize("stamp, tick", [(0.1249, 0.0), (0.1251, 0.25), (0.3, 0.25), (0.25, 0.25)])
def test_single_step_chunk_goes_to_the_nearest_tick(stamp, tick):
    s = make()
    s.pop_command(0.0)  # ticks at multiples of 0.25
    assert s.add_chunk(column(7), observation_stamp=stamp, dt=T, now=stamp).queued_steps == 1
    times, values = queue_of(s, 0.0)
    assert times == pytest.approx([tick]) and values == [7.0]


def test_late_steps_are_counted_after_resampling():
    s = make()
    receipt = s.add_chunk(column(0, 2, 4), observation_stamp=0.0, dt=0.5, now=0.6)
    assert receipt == ChunkReceipt(dropped_late_steps=2, merged_steps=0, queued_steps=3)


# -- merging -----------------------------------------------------------------------------------------


def executed_two_steps(merge, **kwargs) -> ChunkScheduler:
    """Chunk 0..5 at 0, 0.25, ..., 1.25; ticks at 0 and 0.25 executed 0 and 1."""
    s = make(merge, **kwargs)
    s.add_chunk(column(0, 1, 2, 3, 4, 5), observation_stamp=0.0, dt=T, now=0.0)
    assert s.pop_command(0.0)[0] == 0
    assert s.pop_command(0.25)[0] == 1
    return s


def test_replace_switches_to_the_new_chunk_and_never_reexecutes_a_past_time():
    s = executed_two_steps(MergeStrategy.REPLACE)
    receipt = s.add_chunk(column(10, 11, 12, 13), observation_stamp=0.25, dt=T, now=0.3)
    # The step for 0.25 was already executed (from the old chunk): it is stale.
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=0, queued_steps=3)
    assert queue_of(s, 0.3) == ([0.5, 0.75, 1.0], [11.0, 12.0, 13.0])


def test_replace_keeps_old_steps_more_than_half_a_period_before_the_new_chunk():
    s = make(MergeStrategy.REPLACE, tick_tolerance_periods=1.0)
    s.add_chunk(column(0, 1, 2, 3, 4, 5), observation_stamp=0.0, dt=T, now=0.0)
    assert s.pop_command(0.0)[0] == 0
    # Stamped 0.2 s ahead of now (within the 0.25 s tolerance): the old step at 0.25 is still due.
    receipt = s.add_chunk(column(10, 11, 12), observation_stamp=0.5, dt=T, now=0.3)
    assert receipt == ChunkReceipt(dropped_late_steps=0, merged_steps=0, queued_steps=3)
    assert queue_of(s, 0.3) == ([0.25, 0.5, 0.75, 1.0], [1.0, 10.0, 11.0, 12.0])


def test_old_step_competing_with_the_seam_for_one_tick_is_superseded():
    s = make(MergeStrategy.REPLACE)
    s.add_chunk(column(0, 1, 2, 3, 4, 5), observation_stamp=0.0, dt=T, now=0.0)
    # No tick yet, so the new chunk keeps its own grid: its 0.5625 and the old 0.5 are for the same tick.
    receipt = s.add_chunk(column(10, 11, 12), observation_stamp=0.5625, dt=T, now=0.5)
    assert receipt == ChunkReceipt(dropped_late_steps=0, merged_steps=0, queued_steps=3)
    assert queue_of(s, 0.5) == ([0.5625, 0.8125, 1.0625], [10.0, 11.0, 12.0])
    assert s.counters["steps_skipped"] == 2  # 0 and 0.25 passed unexecuted


def test_a_new_step_a_hair_after_the_executed_one_is_stale():
    s = make()
    s.add_chunk(column(0, 1, 2), observation_stamp=0.1, dt=T, now=0.1)
    assert s.pop_command(0.1)[0] == 0  # executed the step at 0.1: its tick has passed
    receipt = s.add_chunk(column(7, 8), observation_stamp=0.1 + 1e-12, dt=T, now=0.11)
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=1, queued_steps=1)
    assert s.pop_command(0.35)[0] == pytest.approx((1 + 8) / 2)
    assert s.counters["steps_skipped"] == 0


def test_blend_crossfades_over_the_overlap():
    s = executed_two_steps(MergeStrategy.BLEND)
    receipt = s.add_chunk(column(*[10] * 6), observation_stamp=0.25, dt=T, now=0.3)
    # Overlap 0.5..1.25 (L=4) against old 2, 3, 4, 5 with new weights 1/5, 2/5, 3/5, 4/5.
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=4, queued_steps=5)
    times, values = queue_of(s, 0.3)
    assert times == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert values == pytest.approx([3.6, 5.8, 7.6, 9.0, 10.0])


def test_chunk_off_the_tick_grid_is_resampled_onto_it_and_blended():
    s = executed_two_steps(MergeStrategy.BLEND)  # ticks at 0 and 0.25
    # Steps 4, 8, 12 at 0.375, 0.625, 0.875 become 6 @0.5 and 10 @0.75 on the tick grid (0.25 is past).
    receipt = s.add_chunk(column(4, 8, 12), observation_stamp=0.375, dt=T, now=0.375)
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=2, queued_steps=2)
    times, values = queue_of(s, 0.375)
    assert times == [0.5, 0.75]
    # Old plan 2 @0.5, 3 @0.75; new weights 1/3, 2/3; old steps after the chunk (1.0, 1.25) are dropped.
    assert values == pytest.approx([2 + (6 - 2) / 3, 3 + 2 * (10 - 3) / 3])


def test_first_chunk_after_a_tick_is_resampled_onto_the_tick_grid():
    s = make()
    assert s.pop_command(0.0) is None  # the timer ticks at multiples of 0.25
    receipt = s.add_chunk(column(0, 1, 2, 3), observation_stamp=0.1, dt=T, now=0.1)
    # Steps cover 0.1-0.125 .. 0.85+0.125: ticks 0, 0.25, 0.5, 0.75; the first holds step 0.
    assert receipt.queued_steps == 4
    times, values = queue_of(s, 0.1)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert values == pytest.approx([0.0, 0.6, 1.6, 2.6])


def test_blend_drops_old_steps_beyond_a_shorter_new_chunk():
    s = executed_two_steps(MergeStrategy.BLEND)
    s.add_chunk(column(10, 10), observation_stamp=0.5, dt=T, now=0.5)
    times, values = queue_of(s, 0.5)
    assert times == [0.5, 0.75]
    assert values == pytest.approx([2 + 8 / 3, 3 + 2 * 7 / 3])


def test_blend_after_the_queue_ran_dry_takes_the_new_chunk_as_is():
    s = make(MergeStrategy.BLEND)
    s.add_chunk(column(0, 1), observation_stamp=0.0, dt=T, now=0.0)
    s.pop_command(0.0)
    s.pop_command(0.25)
    assert s.pop_command(0.5) is None
    receipt = s.add_chunk(column(10, 11), observation_stamp=0.75, dt=T, now=0.75)
    assert receipt == ChunkReceipt(dropped_late_steps=0, merged_steps=0, queued_steps=2)
    assert queue_of(s, 0.75) == ([0.75, 1.0], [10.0, 11.0])


def test_blend_first_merged_step_stays_close_to_the_old_plan():
    s = executed_two_steps(MergeStrategy.BLEND)
    s.add_chunk(column(*[100] * 12), observation_stamp=0.25, dt=T, now=0.3)
    first = s.pop_command(0.5)[0]
    replace = executed_two_steps(MergeStrategy.REPLACE)
    replace.add_chunk(column(*[100] * 12), observation_stamp=0.25, dt=T, now=0.3)
    assert first == pytest.approx(2 + (100 - 2) / 5)
    assert replace.pop_command(0.5)[0] == 100


def test_ensemble_weights_oldest_prediction_most_and_stays_exact_over_three_chunks():
    s = executed_two_steps(MergeStrategy.ENSEMBLE, ensemble_decay=math.log(2))  # weights 1, 1/2, 1/4
    receipt = s.add_chunk(column(*[10] * 6), observation_stamp=0.25, dt=T, now=0.3)
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=4, queued_steps=5)
    times, values = queue_of(s, 0.3)
    assert times == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert values == pytest.approx([(2 + 5) / 1.5, (3 + 5) / 1.5, (4 + 5) / 1.5, (5 + 5) / 1.5, 10.0])
    assert s.pop_command(0.5)[0] == pytest.approx(7 / 1.5)
    # A third prediction for 0.75..1.25 weighs 1/4; 1.5 is beyond it and keeps its single prediction.
    receipt = s.add_chunk(column(*[20] * 4), observation_stamp=0.5, dt=T, now=0.55)
    assert receipt == ChunkReceipt(dropped_late_steps=1, merged_steps=3, queued_steps=3)
    times, values = queue_of(s, 0.55)
    assert times == [0.75, 1.0, 1.25, 1.5]
    assert values == pytest.approx([(3 + 5 + 5) / 1.75, (4 + 5 + 5) / 1.75, (5 + 5 + 5) / 1.75, 10.0])


def test_ensemble_with_zero_decay_is_the_plain_mean():
    s = make(MergeStrategy.ENSEMBLE, ensemble_decay=0.0)
    for k, value in enumerate((1.0, 2.0, 6.0)):
        s.add_chunk(column(value, value, value), observation_stamp=0.0, dt=T, now=0.0)
        assert queue_of(s, 0.0)[1] == pytest.approx([np.mean([1.0, 2.0, 6.0][: k + 1])] * 3)


def test_merges_with_several_joints_act_per_joint():
    s = make(MergeStrategy.BLEND)
    s.add_chunk(np.array([[0.0, 10.0], [0.0, 10.0]]), observation_stamp=0.0, dt=T, now=0.0)
    s.add_chunk(np.array([[3.0, -2.0], [3.0, -2.0]]), observation_stamp=0.0, dt=T, now=0.0)
    _, targets = s.queued(0.0)
    np.testing.assert_allclose(targets, [[1.0, 6.0], [2.0, 2.0]])


# -- rejected chunks ---------------------------------------------------------------------------------


def test_chunk_error_is_in_the_error_hierarchy():
    assert issubclass(ChunkError, PolicyError)
    assert issubclass(ChunkError, ValueError)
    assert issubclass(SchedulerError, VlaRosError)


@pytest.mark.parametrize(
    "targets, kwargs, message",
    [
        (np.zeros((0, 2)), {}, r"\(H, D\).*\(0, 2\)"),
        (np.zeros(2), {}, r"\(H, D\).*\(2,\)"),
        (np.zeros((2, 0)), {}, r"\(2, 0\)"),
        (np.zeros((2, 2, 1)), {}, r"\(2, 2, 1\)"),
        (np.zeros((2, 3)), {}, r"\(2, 3\): 3 joints.*2"),
        (np.array([[0.0, 0.0], [np.nan, 0.0]]), {}, r"NaN or inf in steps \[1\]"),
        (np.array([[0.0, np.inf]]), {}, "NaN or inf"),
        ([["a", "b"]], {}, "numeric"),
        (np.zeros((2, 2)), {"dt": 0.0}, "dt must be > 0"),
        (np.zeros((2, 2)), {"dt": -T}, "dt must be > 0"),
        (np.zeros((2, 2)), {"dt": float("nan")}, "dt"),
        (np.zeros((2, 2)), {"observation_stamp": float("inf")}, "observation_stamp"),
        (np.zeros((2, 2)), {"now": float("nan")}, "now"),
        (np.zeros((2, 2)), {"observation_stamp": 1.2}, "different clocks"),
    ],
)
def test_bad_chunks_are_rejected_and_leave_the_queue_unchanged(targets, kwargs, message):
    s = make()
    s.add_chunk(np.array([[1.0, 2.0], [3.0, 4.0]]), observation_stamp=1.0, dt=T, now=1.0)
    before = s.queued(1.0)
    arguments = {"observation_stamp": 1.0, "dt": T, "now": 1.0, **kwargs}
    with pytest.raises(ChunkError, match=message):
        s.add_chunk(targets, **arguments)
    after = s.queued(1.0)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert s.counters["chunks_received"] == 2
    assert s.counters["chunks_rejected"] == 1


def test_observation_stamp_within_tolerance_ahead_is_accepted():
    s = make()
    assert s.add_chunk(column(1, 2), observation_stamp=1.125, dt=T, now=1.0).queued_steps == 2


@pytest.mark.parametrize("method", ["pop_command", "remaining_steps", "needs_refill", "queued"])
def test_non_finite_now_is_an_error(method):
    with pytest.raises(SchedulerError, match="now"):
        getattr(make(), method)(float("nan"))


def test_clear_forgets_queue_joint_count_and_last_time():
    s = make()
    s.add_chunk(np.zeros((3, 2)), observation_stamp=5.0, dt=T, now=5.0)
    s.pop_command(5.0)
    s.clear()
    assert s.last_command_time is None
    assert s.pop_command(5.25) is None
    # Three joints now, and a clock that restarted at 0: both fine after clear().
    assert s.add_chunk(np.ones((2, 3)), observation_stamp=0.0, dt=T, now=0.0).queued_steps == 2
    np.testing.assert_array_equal(s.pop_command(0.0), [1.0, 1.0, 1.0])
    assert s.counters["steps_executed"] == 2
    assert set(s.counters) == set(COUNTER_NAMES)


def test_counters_are_read_only():
    s = make()
    with pytest.raises(TypeError):
        s.counters["empty_ticks"] = 5  # type: ignore[index]


# -- properties --------------------------------------------------------------------------------------

PERIOD = 0.02
TOLERANCE = 0.5 * PERIOD


def expected_grid(stamp: float, horizon: int, dt: float, phase: float) -> tuple[np.ndarray, bool]:
    """Tick-grid times a chunk covers, computed independently: phase + k*T in [stamp - T/2, stamp + span + T/2).

    Also says whether a grid time lies within rounding of an interval end (then the count is ambiguous).
    """
    low, high = stamp - PERIOD / 2, stamp + (horizon - 1) * dt + PERIOD / 2
    k = np.arange(math.floor((low - phase) / PERIOD) - 1, math.ceil((high - phase) / PERIOD) + 2)
    grid = phase + k * PERIOD
    ambiguous = bool(np.any(np.abs(grid - low) < 1e-7) or np.any(np.abs(grid - high) < 1e-7))
    return grid[(grid >= low) & (grid < high)], ambiguous


@settings(max_examples=60, deadline=None)
@given(merge=st.sampled_from(list(MergeStrategy)), data=st.data())
def test_stream_never_goes_back_in_time_and_drops_exactly_the_stale_steps(merge, data):
    s = ChunkScheduler(SchedulerConfig(control_period_s=PERIOD, merge=merge, refill_threshold_steps=3))
    now = data.draw(st.floats(0.0, 100.0), label="t0")
    last_tick = None
    executed_times: list[float] = []
    dropped_total = executed = empty = checked = 0
    for _ in range(data.draw(st.integers(5, 40), label="ticks")):
        now += PERIOD * data.draw(st.floats(0.5, 2.5), label="tick gap")
        if data.draw(st.booleans(), label="chunk arrives"):
            horizon = data.draw(st.integers(1, 12), label="H")
            dt = PERIOD * data.draw(st.sampled_from([1.0, 1.0, 0.5, 2.0, 0.7, 1.3]), label="dt/period")
            stamp = now - PERIOD * data.draw(st.floats(0.0, 8.0), label="latency")
            grid, ambiguous = expected_grid(stamp, horizon, dt, stamp if last_tick is None else last_tick)
            last = s.last_command_time
            stale = grid < now - TOLERANCE
            if last is not None:
                stale |= grid <= last + PERIOD / 2
            near_threshold = np.abs(grid - (now - TOLERANCE)) < 1e-7
            if last is not None:
                near_threshold |= np.abs(grid - (last + PERIOD / 2)) < 1e-7
            receipt = s.add_chunk(np.zeros((horizon, 2)), observation_stamp=stamp, dt=dt, now=now)
            dropped_total += receipt.dropped_late_steps
            assert 0 <= receipt.merged_steps <= receipt.queued_steps
            if merge in (MergeStrategy.REPLACE, MergeStrategy.RTC):
                assert receipt.merged_steps == 0
            queued_times, _ = s.queued(now)
            assert np.all(np.diff(queued_times) > PERIOD / 2 - 1e-9)
            if ambiguous or near_threshold.any():
                continue  # a tie decided by rounding: either answer is right
            checked += 1
            assert receipt.dropped_late_steps == int(stale.sum())
            assert receipt.queued_steps == len(grid) - int(stale.sum())
            if receipt.queued_steps:
                # The chunk's kept steps are the last ones queued (ENSEMBLE may keep older steps after them).
                kept = grid[~stale]
                index = int(np.argmin(np.abs(queued_times - kept[0])))
                # A stamp within 1e-6 periods of the tick grid keeps its own grid (exact values).
                np.testing.assert_allclose(queued_times[index : index + len(kept)], kept, rtol=0, atol=2e-6 * PERIOD)
        command = s.pop_command(now)
        last_tick = now
        if command is None:
            empty += 1
            continue
        executed += 1
        t = s.last_command_time
        assert abs(t - now) <= TOLERANCE + 1e-12
        assert not executed_times or t > executed_times[-1] + PERIOD / 2
        executed_times.append(t)
    event(f"chunks checked: {min(checked, 3)}+")
    event(f"steps dropped late: {'some' if dropped_total else 'none'}")
    assert s.counters["steps_dropped_late"] == dropped_total
    assert s.counters["steps_executed"] == executed
    assert s.counters["empty_ticks"] == empty


def smooth(t: np.ndarray, amplitudes: np.ndarray, frequencies: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """(len(t), D) samples of f_d(t) = sum_k a_kd sin(w_k t + p_kd); |f_d'| <= sum_k |a_kd| w_k."""
    angles = t[:, None, None] * frequencies[None, :, None] + phases[None, :, :]
    return (np.sin(angles) * amplitudes[None, :, :]).sum(axis=1)


def run_stream(merge, data):
    """Closed-loop stream: request when needs_refill, the chunk arrives some ticks later.

    Chunk k is the smooth trajectory f sampled on its own (camera) grid plus a constant offset c_k.
    H >= 2 * (threshold + 2) + latency so that one merge's overlap has ended before the next begins.
    """
    dims = data.draw(st.integers(1, 3), label="D")
    amplitudes = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=2 * dims, max_size=2 * dims)))
    amplitudes = amplitudes.reshape(2, dims)
    frequencies = np.array(data.draw(st.lists(st.floats(0.1, 6.0), min_size=2, max_size=2)))
    phases = np.array(data.draw(st.lists(st.floats(0.0, 6.3), min_size=2 * dims, max_size=2 * dims))).reshape(2, dims)
    speed_bound = float((np.abs(amplitudes) * frequencies[:, None]).sum(axis=0).max())
    offset_bound = data.draw(st.floats(0.0, 2.0), label="offset bound")
    threshold = data.draw(st.integers(2, 6), label="threshold")
    max_latency = threshold - 2
    horizon = 2 * (threshold + 2) + max_latency + data.draw(st.integers(0, 10), label="extra H")
    jitter = data.draw(st.floats(0.0, 0.2), label="jitter") * PERIOD
    s = ChunkScheduler(
        SchedulerConfig(
            control_period_s=PERIOD,
            merge=merge,
            refill_threshold_steps=threshold,
            ensemble_decay=data.draw(st.floats(0.0, 1.0), label="m"),
        )
    )

    def chunk(stamp: float, offset: np.ndarray) -> np.ndarray:
        times = stamp + PERIOD * np.arange(horizon)
        return smooth(times, amplitudes, frequencies, phases) + offset

    def draw_offset() -> np.ndarray:
        return np.array(data.draw(st.lists(st.floats(-1, 1), min_size=dims, max_size=dims))) * offset_bound

    offsets = [draw_offset()]
    s.add_chunk(chunk(0.0, offsets[0]), observation_stamp=0.0, dt=PERIOD, now=0.0)
    stream: list[tuple[float, np.ndarray]] = []
    merges: list[tuple[int, float]] = []  # (overlap L, |c_k - c_{k-1}| max over joints)
    pending: tuple[int, float] | None = None  # (ticks until arrival, observation stamp)
    for n in range(6 * horizon):
        now = n * PERIOD + data.draw(st.floats(-1.0, 1.0), label="jitter draw") * jitter
        if pending is not None and pending[0] == 0:
            offsets.append(draw_offset())
            receipt = s.add_chunk(chunk(pending[1], offsets[-1]), observation_stamp=pending[1], dt=PERIOD, now=now)
            merges.append((receipt.merged_steps, float(np.abs(offsets[-1] - offsets[-2]).max())))
            pending = None
        elif pending is not None:
            pending = (pending[0] - 1, pending[1])
        elif s.needs_refill(now):
            camera_delay = data.draw(st.floats(0.0, 0.99), label="camera delay") * PERIOD
            pending = (data.draw(st.integers(0, max_latency), label="latency"), now - camera_delay)
        command = s.pop_command(now)
        if command is not None:
            stream.append((s.last_command_time, command))
    return stream, merges, speed_bound, s


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_blend_seams_are_bounded(data):
    """Bound on the change between consecutive executed steps.

    Where old plan g_old and new chunk g_new are both |f'|-Lipschitz (V), y = g_old + a_j (g_new - g_old)
    with a_j = (j+1)/(L+1), so |dy| <= V dt + (|c_new - c_old| + V T) / (L + 1): V T bounds the error of
    interpolating f linearly at the new grid's times.
    """
    stream, merges, speed, s = run_stream(MergeStrategy.BLEND, data)
    assert merges and all(overlap >= 1 for overlap, _ in merges)
    seam = max((jump + speed * PERIOD) / (overlap + 1) for overlap, jump in merges)
    for (t0, y0), (t1, y1) in zip(stream, stream[1:], strict=False):
        assert np.abs(y1 - y0).max() <= speed * (t1 - t0) + seam + 1e-9


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_ensemble_seams_are_bounded(data):
    """With at most two predictions per step, the new one enters with weight share b = w/(1+w), w = e^-m,
    and the old one leaves with share 1-b: |dy| <= V dt + max(b, 1-b) (|c_new - c_old| + V T).
    """
    stream, merges, speed, s = run_stream(MergeStrategy.ENSEMBLE, data)
    w = math.exp(-s.config.ensemble_decay)
    share = max(w / (1 + w), 1 / (1 + w))
    seam = max(share * (jump + speed * PERIOD) for _, jump in merges)
    for (t0, y0), (t1, y1) in zip(stream, stream[1:], strict=False):
        assert np.abs(y1 - y0).max() <= speed * (t1 - t0) + seam + 1e-9
