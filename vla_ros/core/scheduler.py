"""Chunk execution: turns action chunks into one command stream at the control rate.

A VLA policy answers an observation with a *chunk*: H future joint targets, one every `dt` seconds,
the first meant for the instant the observation was taken. Inference takes time, so a chunk arrives
late: its first steps are already in the past, and the previous chunk is still being executed.
`ChunkScheduler` keeps one time-stamped queue of future targets, drops what is stale, merges each new
chunk with what is still queued (replace, crossfade or ACT temporal ensembling, aligned by time), and
hands out the step that belongs to each control tick.

Every queued step lies on the *tick grid*: the times of the control ticks as the last `pop_command`
call predicts them (last tick time + k * control_period_s). Chunks are resampled onto it, so a tick
finds its step within a fraction of a period whatever the phase between camera stamps and the control
timer, and a seam between two chunks never leaves two steps competing for one tick.

All times are seconds on one clock (the controller's); they must not run backwards — call `clear()`
after a clock reset (e.g. a simulator restart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from numbers import Real
from types import MappingProxyType

import numpy as np

from vla_ros.core.errors import ConfigError, PolicyError, VlaRosError, did_you_mean


class MergeStrategy(str, Enum):
    """How a new chunk is combined with the steps still queued from earlier chunks."""

    REPLACE = "replace"  # the new chunk wins from its first step on
    BLEND = "blend"  # crossfade from the old remainder to the new chunk over their overlap
    ENSEMBLE = "ensemble"  # ACT temporal ensembling: weighted average of every prediction for a step
    # Real-time chunking: the policy itself continued the queued remainder while sampling the new chunk (it got
    # a ChunkPrefix), so the scheduler splices the new chunk in as REPLACE does. Needs a policy with
    # metadata.supports_prefix; the pipeline falls back to REPLACE for others.
    RTC = "rtc"


class SchedulerError(VlaRosError, ValueError):
    """The scheduler was called with an unusable argument (e.g. a NaN clock)."""


class ChunkError(SchedulerError, PolicyError):
    """An action chunk the scheduler rejects as a whole; the queue is left exactly as it was."""


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})", key=name)
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}", key=name)
    return value


@dataclass(frozen=True)
class SchedulerConfig:
    """Settings of a `ChunkScheduler`.

    - `control_period_s`: period of the control ticks that call `pop_command`; every queued step lies
      on the tick grid of this period (chunks with another `dt` are resampled onto it). > 0.
    - `refill_threshold_steps`: `needs_refill` is true once this many steps or fewer are still ahead.
      Set it above the inference latency in steps, or the queue runs dry before the next chunk. >= 0.
    - `merge`: how a new chunk is combined with the queued remainder (a `MergeStrategy` or its value).
    - `ensemble_decay`: ACT's m; the k-th prediction made for one step (k = 0 the oldest) weighs
      exp(-m * k), so m > 0 favours older predictions and 0 averages evenly. >= 0; ENSEMBLE only.
    - `tick_tolerance_periods`: a tick executes a step at most this many periods from the step's time,
      and a step older than that is stale. Steps lie on the predicted tick times, so 0.5 absorbs timer
      jitter up to almost half a period; up to 1.0 also lets a late tick execute the step it missed
      instead of returning None. In (0, 1].
    """

    control_period_s: float
    refill_threshold_steps: int = 10
    merge: MergeStrategy = MergeStrategy.BLEND
    ensemble_decay: float = 0.01
    tick_tolerance_periods: float = 0.5

    def __post_init__(self) -> None:
        period = _check_real("control_period_s", self.control_period_s)
        if period <= 0:
            raise ConfigError(f"control_period_s must be > 0 s, got {period}", key="control_period_s")
        threshold = self.refill_threshold_steps
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ConfigError(
                f"refill_threshold_steps must be an integer >= 0, got {threshold!r}", key="refill_threshold_steps"
            )
        if not isinstance(self.merge, MergeStrategy):
            valid = [m.value for m in MergeStrategy]
            if not isinstance(self.merge, str) or self.merge not in valid:
                hint = did_you_mean(self.merge, valid) if isinstance(self.merge, str) else f" Valid: {valid}."
                raise ConfigError(f"merge must be a merge strategy, got {self.merge!r}.{hint}", key="merge")
            # Config files spell the strategy as a string; the enum member is the same value, typed.
            object.__setattr__(self, "merge", MergeStrategy(self.merge))
        decay = _check_real("ensemble_decay", self.ensemble_decay)
        if decay < 0:
            raise ConfigError(f"ensemble_decay must be >= 0, got {decay}", key="ensemble_decay")
        tolerance = _check_real("tick_tolerance_periods", self.tick_tolerance_periods)
        if not 0 < tolerance <= 1:
            raise ConfigError(
                f"tick_tolerance_periods must be in (0, 1], got {tolerance}", key="tick_tolerance_periods"
            )

    @property
    def tick_tolerance_s(self) -> float:
        """`tick_tolerance_periods` in seconds."""
        return self.tick_tolerance_periods * self.control_period_s


@dataclass(frozen=True)
class ChunkReceipt:
    """What one `add_chunk` did, in control-period steps (after resampling).

    - `dropped_late_steps`: steps of the chunk that were stale on arrival and never queued;
    - `merged_steps`: queued steps of the chunk combined with an older prediction (0 for REPLACE and RTC);
    - `queued_steps`: steps of the chunk now in the queue, merged ones included.
    """

    dropped_late_steps: int
    merged_steps: int
    queued_steps: int


COUNTER_NAMES = (
    "chunks_received",  # every add_chunk call, rejected ones included
    "chunks_rejected",  # add_chunk calls that raised ChunkError
    "steps_dropped_late",  # chunk steps stale on arrival (sum of ChunkReceipt.dropped_late_steps)
    "steps_skipped",  # queued steps that became stale before any tick executed them (not merge-superseded)
    "steps_executed",  # steps returned by pop_command
    "empty_ticks",  # pop_command calls that returned None
)


class ChunkScheduler:
    """Queue of time-stamped joint targets fed by action chunks and drained by control ticks.

    A step at time s is *stale* at time `now` when s < now - tick tolerance, or when s is at most half a
    period after the step last returned by `pop_command` (its tick has passed: the stream never goes
    back in time). Stale steps are never executed. The joint count D is fixed by the first chunk and
    kept until `clear()`.

    NaN policy: a chunk containing NaN or inf is rejected whole (`ChunkError`), because merging would
    spread one bad value into its neighbours and, with ENSEMBLE, into later chunks' averages. The
    safety filter downstream still screens every command on its own.
    """

    def __init__(self, config: SchedulerConfig):
        self.config = config
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._dim: int | None = None
        self._reset_queue()
        # The step last executed, kept after it leaves the queue: it anchors merges (the seam starts
        # from what the arm was actually told) and the never-back-in-time rule.
        self._anchor: tuple[float, np.ndarray, float, int] | None = None
        self._last_tick: float | None = None  # phase of the tick grid

    def _reset_queue(self) -> None:
        self._times = np.empty(0)  # (N,) s, strictly increasing
        self._values = np.empty((0, self._dim or 0))  # (N, D) targets (the weighted mean for ENSEMBLE)
        self._weights = np.empty(0)  # (N,) sum of ensemble weights of the predictions averaged
        self._counts = np.empty(0, dtype=np.int64)  # (N,) number of predictions averaged

    @property
    def counters(self) -> Mapping[str, int]:
        """Live read-only view of the counters in `COUNTER_NAMES`."""
        return MappingProxyType(self._counters)

    @property
    def last_command_time(self) -> float | None:
        """Time (s) of the step last returned by `pop_command`; None before the first or after `clear()`."""
        return None if self._anchor is None else self._anchor[0]

    def clear(self) -> None:
        """Forget the queue, the last executed step, the tick grid and the joint count (not the counters)."""
        self._dim = None
        self._reset_queue()
        self._anchor = None
        self._last_tick = None

    # -- feeding ---------------------------------------------------------------------------------

    def add_chunk(self, targets: np.ndarray, *, observation_stamp: float, dt: float, now: float) -> ChunkReceipt:
        """Queue a chunk: `targets` (H, D) absolute joint targets, step i meant for `observation_stamp + i*dt`.

        Resampling: the chunk becomes one step per tick-grid time g with
        observation_stamp - T/2 <= g < observation_stamp + (H-1)*dt + T/2 (T = control_period_s), valued
        by linear interpolation of the chunk at g and, within half a period beyond its ends, by its
        first or last step: each chunk step covers the tick nearest to it. Before the first tick (since
        construction or `clear()`) the grid is the chunk's own, observation_stamp + k*T. A chunk on the
        grid with dt == T is queued exactly as given.

        Stale steps are dropped and counted; the first kept step is the chunk's *seam*. Queued steps
        more than half a period before the seam stay; later ones are superseded. The *old plan* is the
        queued remainder with the last executed step in front of it, interpolated linearly at the new
        step times and held at its first and last values beyond its ends. The *overlap* is the new steps
        at most half a period after the old plan's last step (L of them; L >= 1 whenever a step was
        still queued or executed within the last half period):
        - REPLACE and RTC: the new chunk as is (with RTC the policy already made it continue the old plan).
        - BLEND: overlap step j (0-based) is old + (j+1)/(L+1) * (new - old); then the new chunk.
        - ENSEMBLE: overlap steps average old and new as ACT does, the new prediction weighing
          exp(-ensemble_decay * k) where k predictions were averaged before (the count and weight sum
          of the old step nearest in time); queued steps after the chunk's last step are kept, where
          REPLACE, BLEND and RTC discard them.

        Raises `ChunkError` (queue unchanged) for: a chunk that is not (H, D) with H, D >= 1, a D other
        than the queued one, NaN or inf values, `dt` not finite and > 0, a non-finite stamp or `now`, or
        an `observation_stamp` more than the tick tolerance after `now` (the clocks disagree).
        """
        self._counters["chunks_received"] += 1
        try:
            times, values = self._validate_and_resample(targets, observation_stamp, dt, now)
        except ChunkError:
            self._counters["chunks_rejected"] += 1
            raise

        first_kept = self._first_fresh_index(times, now)
        dropped = first_kept
        times, values = times[first_kept:], values[first_kept:]
        self._counters["steps_dropped_late"] += dropped
        self._discard_stale(now)
        if len(times) == 0:
            return ChunkReceipt(dropped_late_steps=dropped, merged_steps=0, queued_steps=0)

        weights = np.ones(len(times))
        counts = np.ones(len(times), dtype=np.int64)
        merged = 0
        strategy = self.config.merge
        if strategy not in (MergeStrategy.REPLACE, MergeStrategy.RTC):
            ref_t, ref_v, ref_w, ref_n = self._merge_reference()
            if len(ref_t):
                # The tick grid may have shifted a little since the old plan was queued, so the new step
                # for the old plan's last tick may lie just after it.
                reach = ref_t[-1] + 0.5 * self.config.control_period_s
                merged = int(np.searchsorted(times, reach, side="right"))
            if merged:
                old = _interp_rows(times[:merged], ref_t, ref_v)
                new = values[:merged]
                if strategy is MergeStrategy.BLEND:
                    # New weight (j+1)/(L+1): the first merged step moves only 1/(L+1) of the way from the
                    # old plan, the last one is 1/(L+1) short of the new: no step at either end.
                    alpha = (np.arange(merged) + 1.0) / (merged + 1.0)
                    values[:merged] = old + alpha[:, None] * (new - old)
                else:
                    nearest = _nearest_indices(times[:merged], ref_t)
                    old_w, old_n = ref_w[nearest], ref_n[nearest]
                    new_w = np.exp(-self.config.ensemble_decay * old_n)
                    total = old_w + new_w
                    values[:merged] = (old_w[:, None] * old + new_w[:, None] * new) / total[:, None]
                    weights[:merged] = total
                    counts[:merged] = old_n + 1

        # An old step less than half a period before the seam would compete with it for one tick.
        head = int(np.searchsorted(self._times, times[0] - 0.5 * self.config.control_period_s, side="right"))
        # An ensemble keeps every prediction, so old steps beyond a shorter new chunk stay (unless they
        # share the chunk's last tick); the other strategies follow the newest plan and stop with it.
        tail = len(self._times)
        if strategy is MergeStrategy.ENSEMBLE:
            tail = int(np.searchsorted(self._times, times[-1] + 0.5 * self.config.control_period_s, side="right"))
        self._times = np.concatenate([self._times[:head], times, self._times[tail:]])
        self._values = np.concatenate([self._values[:head], values, self._values[tail:]])
        self._weights = np.concatenate([self._weights[:head], weights, self._weights[tail:]])
        self._counts = np.concatenate([self._counts[:head], counts, self._counts[tail:]])
        return ChunkReceipt(dropped_late_steps=dropped, merged_steps=merged, queued_steps=len(times))

    def _validate_and_resample(
        self, targets: np.ndarray, observation_stamp: float, dt: float, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        try:
            chunk = np.array(targets, dtype=np.float64)  # a copy: the caller's array is never touched
        except (TypeError, ValueError) as exc:
            raise ChunkError(f"action chunk is not a numeric array: {exc}") from exc
        if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] == 0:
            raise ChunkError(f"action chunk must have shape (H, D) with H, D >= 1, got {chunk.shape}")
        if self._dim is not None and chunk.shape[1] != self._dim:
            raise ChunkError(
                f"action chunk has shape {chunk.shape}: {chunk.shape[1]} joints, but the queued chunks have "
                f"{self._dim}; call clear() before switching embodiments"
            )
        bad = ~np.isfinite(chunk)
        if bad.any():
            rows = sorted({int(r) for r in np.nonzero(bad)[0]})
            raise ChunkError(f"action chunk {chunk.shape} contains NaN or inf in steps {rows[:10]}")
        for name, value in (("observation_stamp", observation_stamp), ("now", now), ("dt", dt)):
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ChunkError(f"{name} must be a finite number of seconds, got {value!r}")
        if dt <= 0:
            raise ChunkError(f"dt must be > 0 s, got {dt}")
        tolerance = self.config.tick_tolerance_s
        if observation_stamp > now + tolerance:
            raise ChunkError(
                f"observation_stamp {observation_stamp:.6f} s is {observation_stamp - now:.6f} s after now "
                f"{now:.6f} s: the observation and the controller use different clocks (use_sim_time?)"
            )
        if self._dim is None:
            self._dim = chunk.shape[1]
            self._values = np.empty((0, self._dim))

        period = self.config.control_period_s
        horizon = chunk.shape[0]
        span = (horizon - 1) * dt
        # Offset of the first grid time from the stamp, in [-T/2, T/2).
        phase = observation_stamp if self._last_tick is None else self._last_tick
        fraction = (observation_stamp - phase) / period
        fraction -= round(fraction)
        if fraction <= -0.5:
            fraction += 1.0
        first = 0.0 if abs(fraction) < 1e-6 else -fraction * period
        # The epsilon keeps a grid time that rounding pushed onto the interval's open end out of it;
        # `first` itself always lies inside.
        count = max(1, math.ceil((span + 0.5 * period - first) / period - 1e-9))
        offsets = first + np.arange(count) * period
        if first == 0.0 and count == horizon and math.isclose(dt, period, rel_tol=1e-9):
            values = chunk
        else:
            values = _interp_rows(np.clip(offsets, 0.0, span), np.arange(horizon) * dt, chunk)
        return observation_stamp + offsets, values

    # -- draining --------------------------------------------------------------------------------

    def pop_command(self, now: float) -> np.ndarray | None:
        """The (D,) target for the tick at `now`, or None (caller holds) when no step is within tolerance.

        Discards stale steps (counted as skipped), returns the queued step nearest to `now` among those
        within the tick tolerance (the earlier one on a tie), and discards every step before it (also
        counted as skipped). A None is counted in `empty_ticks`.
        """
        now = self._check_now(now)
        self._last_tick = now
        self._discard_stale(now)
        within = int(np.searchsorted(self._times, now + self.config.tick_tolerance_s, side="right"))
        if within == 0:
            self._counters["empty_ticks"] += 1
            return None
        index = int(np.argmin(np.abs(self._times[:within] - now)))
        self._counters["steps_skipped"] += index
        self._counters["steps_executed"] += 1
        command = self._values[index].copy()
        self._anchor = (
            float(self._times[index]),
            command.copy(),
            float(self._weights[index]),
            int(self._counts[index]),
        )
        self._slice_queue(index + 1)
        return command

    def remaining_steps(self, now: float) -> int:
        """Number of queued steps not stale at `now` (the one a tick at `now` would take included)."""
        now = self._check_now(now)
        return len(self._times) - self._first_fresh_index(self._times, now)

    def needs_refill(self, now: float) -> bool:
        """True when `remaining_steps(now) <= refill_threshold_steps`.

        It stays true until a chunk arrives: a caller with a request already in flight must not ask again.
        """
        return self.remaining_steps(now) <= self.config.refill_threshold_steps

    def queued(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps still ahead at `now`: (times (N,) s, targets (N, D)), for previews."""
        now = self._check_now(now)
        start = self._first_fresh_index(self._times, now)
        return self._times[start:].copy(), self._values[start:].copy()

    def plan_at(self, times: np.ndarray, now: float) -> np.ndarray | None:
        """(K, D) targets of the current plan at `times` (K,) s, or None when there is no plan.

        The plan is the step last executed followed by the steps still ahead at `now`, interpolated
        linearly and held at its first and last values beyond its ends (as merges see it). It is what a
        new chunk must continue, for real-time chunking.
        """
        now = self._check_now(now)
        start = self._first_fresh_index(self._times, now)
        if self._anchor is None and start == len(self._times):
            return None
        ref_t, ref_v, _, _ = self._merge_reference(start)
        return _interp_rows(np.asarray(times, dtype=np.float64), ref_t, ref_v)

    # -- internals -------------------------------------------------------------------------------

    def _check_now(self, now: float) -> float:
        if isinstance(now, bool) or not isinstance(now, Real) or not math.isfinite(now):
            raise SchedulerError(f"now must be a finite number of seconds, got {now!r}")
        return float(now)

    def _first_fresh_index(self, times: np.ndarray, now: float) -> int:
        period = self.config.control_period_s
        start = int(np.searchsorted(times, now - self.config.tick_tolerance_s, side="left"))
        if self._anchor is not None:
            # Within half a period after the executed step is the same, past tick (and rounding cannot
            # make a copy of the executed step look new).
            start = max(start, int(np.searchsorted(times, self._anchor[0] + 0.5 * period, side="right")))
        return start

    def _discard_stale(self, now: float) -> None:
        start = self._first_fresh_index(self._times, now)
        if start:
            self._counters["steps_skipped"] += start
            self._slice_queue(start)

    def _slice_queue(self, start: int) -> None:
        self._times = self._times[start:]
        self._values = self._values[start:]
        self._weights = self._weights[start:]
        self._counts = self._counts[start:]

    def _merge_reference(self, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The old plan a new chunk merges with: the last executed step, then the queue from index `start`."""
        times, values = self._times[start:], self._values[start:]
        weights, counts = self._weights[start:], self._counts[start:]
        if self._anchor is None:
            return times, values, weights, counts
        time, value, weight, count = self._anchor
        return (
            np.concatenate([[time], times]),
            np.vstack([value[None, :], values]),
            np.concatenate([[weight], weights]),
            np.concatenate([[count], counts]),
        )


def _interp_rows(t: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Rows of `fp` (M, D) interpolated linearly at `t` (K,) over strictly increasing `xp` (M,); held outside."""
    if len(xp) == 1:
        return np.repeat(fp[:1], len(t), axis=0)
    i = np.clip(np.searchsorted(xp, t, side="right") - 1, 0, len(xp) - 2)
    s = np.clip((t - xp[i]) / (xp[i + 1] - xp[i]), 0.0, 1.0)
    return fp[i] + s[:, None] * (fp[i + 1] - fp[i])


def _nearest_indices(t: np.ndarray, xp: np.ndarray) -> np.ndarray:
    """Index into strictly increasing `xp` of the entry nearest to each `t` (the earlier one on a tie)."""
    right = np.clip(np.searchsorted(xp, t, side="left"), 0, len(xp) - 1)
    left = np.clip(right - 1, 0, len(xp) - 1)
    return np.where(np.abs(t - xp[left]) <= np.abs(xp[right] - t), left, right)
