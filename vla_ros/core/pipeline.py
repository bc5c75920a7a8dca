"""Observation in, safe joint command out: the ROS-free control path shared by the policy node and the demo.

The policy call itself stays outside (it may run in the same thread, another thread, or on a server):

    if pipeline.needs_chunk(now):
        batch, request = pipeline.prepare(observation, now=now)   # adapter: joints by name, units, images
        actions = policy.predict_chunk(batch, request.prefix)     # prefix: None unless merging by RTC
        pipeline.accept_chunk(actions, request, now=later)        # when the chunk arrives
    command = pipeline.step(now, measured=..., observation_stamp=...)   # scheduler -> safety -> trajectory
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.chunks import ChunkPrefix
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError
from vla_ros.core.features import PolicyFeatures, PolicyObservation, RobotObservation
from vla_ros.core.safety import SafetyConfig, SafetyFilter, SafetyReport
from vla_ros.core.scheduler import ChunkReceipt, ChunkScheduler, MergeStrategy, SchedulerConfig
from vla_ros.core.trajectory import JointTrajectory, build_lookahead, build_trajectory

# Real-time chunking freezes the steps that execute while a chunk is computed; it plans for the slowest of the
# last few chunks, since freezing a step too many costs little and a step too few leaves a seam.
LATENCY_WINDOW_CHUNKS = 10
# Every lookahead lasts at least this long (its end at rest held until then): a message that a busy machine delays
# still ends in the future when it arrives, which JTC requires of a stamped trajectory.
LOOKAHEAD_REST_S = 1.0


@dataclass(frozen=True)
class ChunkRequest:
    """What a chunk must be interpreted against: the observation's time and the robot state captured with it."""

    observation_stamp: float  # s
    state: np.ndarray  # (n,) joint units, embodiment order
    requested_at: float | None = None  # s, controller clock: when the policy was asked (latency estimate)
    prefix: ChunkPrefix | None = None  # for policy.predict_chunk: set only when merging by RTC


@dataclass(frozen=True)
class Command:
    """One control tick's output."""

    positions: np.ndarray  # (n,) joint units, embodiment order: the safe target
    velocities: np.ndarray  # (n,) joint units / s implied by the step from the previous command
    trajectory: JointTrajectory  # ready for a joint_trajectory_controller
    report: SafetyReport
    send: bool  # False in dry-run: publish to a preview only
    # With PipelineConfig.lookahead_steps: the safe continuation through the next queued steps, stamped with
    # absolute time and ending at rest (docs/ros2-control.md); what a real joint_trajectory_controller gets.
    lookahead: JointTrajectory | None = None

    @property
    def stream_trajectory(self) -> JointTrajectory:
        """What a joint_trajectory_controller gets: the lookahead where there is one, else the one-point trajectory
        stamped 0 (start at the controller's next update)."""
        return self.trajectory if self.lookahead is None else self.lookahead


@dataclass(frozen=True)
class PipelineConfig:
    merge: MergeStrategy = MergeStrategy.BLEND
    refill_threshold_steps: int | None = None  # None: half a chunk, LeRobot's async default
    dry_run: bool = False
    # Queued steps streamed ahead of each tick as one stamped trajectory (None: one point per tick, stamped 0).
    lookahead_steps: int | None = None

    def __post_init__(self) -> None:
        steps = self.lookahead_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ConfigError(
                f"lookahead_steps must be an integer >= 1 or None (off), got {steps!r}", key="lookahead_steps"
            )


class ActionPipeline:
    """Adapter, chunk scheduler, safety filter and trajectory building for one embodiment and one policy.

    `supports_prefix` is the policy's `metadata.supports_prefix`: merging by RTC needs it, and without it
    falls back to REPLACE with one warning (`merge` says which strategy is in use).
    """

    def __init__(
        self,
        embodiment: EmbodimentConfig,
        features: PolicyFeatures,
        config: PipelineConfig = PipelineConfig(),
        *,
        supports_prefix: bool = False,
    ):
        self.embodiment = embodiment
        self.adapter = EmbodimentAdapter(embodiment, features)
        threshold = config.refill_threshold_steps
        scheduler_config = SchedulerConfig(
            control_period_s=embodiment.control_period_s,
            refill_threshold_steps=features.chunk_size // 2 if threshold is None else threshold,
            merge=config.merge,
        )
        if scheduler_config.merge is MergeStrategy.RTC and not supports_prefix:
            warnings.warn(
                "merge 'rtc' needs a policy that continues the queued chunk while sampling (a flow-matching policy "
                "with real-time chunking); this policy does not, so new chunks replace the queue (merge 'replace')",
                RuntimeWarning,
                stacklevel=2,
            )
            scheduler_config = replace(scheduler_config, merge=MergeStrategy.REPLACE)
        self.scheduler = ChunkScheduler(scheduler_config)
        safety = embodiment.safety
        self.lookahead_steps = config.lookahead_steps
        self.safety = SafetyFilter(
            SafetyConfig(
                joint_names=embodiment.joint_names,
                lower=embodiment.lower_limits,
                upper=embodiment.upper_limits,
                max_velocity=_filter_velocity_limits(embodiment, lookahead=config.lookahead_steps is not None),
                max_acceleration=embodiment.acceleration_limits,
                control_period_s=embodiment.control_period_s,
                max_tracking_error=embodiment.tracking_error_limits,
                observation_timeout_s=safety.observation_timeout_s,
                dry_run=config.dry_run,
            )
        )
        self._chunk_pending = False
        self._sent: tuple[float, np.ndarray] | None = None  # the last lookahead: (time of row 0, rows (M, n))
        # Controller-clock time from request to arrival of recent chunks (s), for the RTC inference delay.
        self._latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW_CHUNKS)
        self.last_chunk: tuple[float, np.ndarray] | None = None  # (observation stamp, (H, n) joint targets)

    @property
    def merge(self) -> MergeStrategy:
        """The merge strategy in use (REPLACE where RTC was asked of a policy without prefix support)."""
        return self.scheduler.config.merge

    @property
    def expected_latency_s(self) -> float:
        """The longest request-to-arrival time of the last chunks (controller clock, s); 0 before the first."""
        return max(self._latencies_s, default=0.0)

    def reset(self, measured: np.ndarray) -> None:
        """Start an episode holding the measured position (n,), with nothing queued."""
        self.scheduler.clear()
        self.safety.reset(measured)
        self._chunk_pending = False
        self._sent = None

    def needs_chunk(self, now: float) -> bool:
        """True when the queue runs low and no chunk is already being computed."""
        return not self._chunk_pending and self.scheduler.needs_refill(now)

    def prepare(
        self, observation: RobotObservation, *, now: float | None = None
    ) -> tuple[PolicyObservation, ChunkRequest]:
        """The policy's input for `observation`, and the request to hand back with the resulting chunk.

        `now` is the controller time of the request (default: the observation's stamp). With merge RTC
        the request carries the `ChunkPrefix` to pass to `policy.predict_chunk` (see `rtc_prefix`).
        """
        now = observation.stamp if now is None else now
        batch, state = self.adapter.to_policy_observation(observation)
        prefix = self.rtc_prefix(observation.stamp, state, now=now) if self.merge is MergeStrategy.RTC else None
        self._chunk_pending = True
        return batch, ChunkRequest(observation_stamp=observation.stamp, state=state, requested_at=now, prefix=prefix)

    def rtc_prefix(self, observation_stamp: float, state: np.ndarray, *, now: float) -> ChunkPrefix | None:
        """What a chunk for an observation at `observation_stamp` must continue; None when nothing is queued.

        - `actions` (n, action_dim): the current plan (`ChunkScheduler.plan_at`) at observation_stamp + i*dt,
          dt the policy's action_dt_s, for every i up to the last queued step (at most chunk_size), in policy
          units relative to `state` (n,), the robot state of that observation (delta joints are relative to it).
        - `inference_delay_steps` d: ceil((now - observation_stamp + expected_latency_s) / dt), at most n: the
          steps from the observation until the chunk is expected, which are executed (or past) by then.
        - `execution_horizon` s: chunk_size minus the refill threshold in policy steps, rounded down, at least 1:
          the steps of a chunk executed before the next one is requested.
        """
        features = self.adapter.features
        dt = features.action_dt_s
        queued_times, _ = self.scheduler.queued(now)
        if len(queued_times) == 0:
            return None
        # The epsilon keeps a step that rounding put a hair after the last queued time.
        count = min(features.chunk_size, math.floor((queued_times[-1] - observation_stamp) / dt + 1e-6) + 1)
        if count < 1:
            return None
        targets = self.scheduler.plan_at(observation_stamp + np.arange(count) * dt, now)
        delay = math.ceil((now - observation_stamp + self.expected_latency_s) / dt - 1e-6)
        threshold_s = self.scheduler.config.refill_threshold_steps * self.embodiment.control_period_s
        horizon = max(1, math.floor(features.chunk_size - threshold_s / dt + 1e-6))
        return ChunkPrefix(
            actions=self.adapter.robot_to_actions(targets, state),
            inference_delay_steps=min(max(delay, 0), count),
            execution_horizon=horizon,
        )

    def accept_chunk(self, actions: np.ndarray, request: ChunkRequest, *, now: float) -> ChunkReceipt:
        """Queue a policy's (H, action_dim) chunk computed for `request`; steps already in the past are dropped."""
        self._chunk_pending = False
        if request.requested_at is not None:
            self._latencies_s.append(max(0.0, now - request.requested_at))
        targets = self.adapter.actions_to_robot(actions, request.state)
        self.last_chunk = (request.observation_stamp, targets)  # for previews; the scheduler keeps its own copy
        return self.scheduler.add_chunk(
            targets, observation_stamp=request.observation_stamp, dt=self.adapter.features.action_dt_s, now=now
        )

    def chunk_failed(self) -> None:
        """The policy raised or timed out: allow a new request; the arm holds meanwhile."""
        self._chunk_pending = False

    def step(self, now: float, *, measured: np.ndarray, observation_stamp: float, hold: bool = False) -> Command:
        """The safe command for the control tick at `now`, given the latest measured joint positions (n,).

        `hold`: come to a stop whatever is queued, leaving the queue as it is (a synchronous loop waiting
        for its chunk); the safety filter brakes within the limits and reports a no_action_hold.
        With `lookahead_steps`, see `_step_lookahead`.
        """
        if self.lookahead_steps is not None:
            return self._step_lookahead(now, measured=measured, observation_stamp=observation_stamp, hold=hold)
        previous = self.safety.last_command
        target = None if hold else self.scheduler.pop_command(now)
        positions, report = self.safety.filter(target, measured=measured, observation_age_s=now - observation_stamp)
        period = self.embodiment.control_period_s
        trajectory = build_trajectory(self.embodiment.joint_names, positions, period)
        return Command(
            positions=positions,
            velocities=(positions - previous) / period,
            trajectory=trajectory,
            report=report,
            send=not report.dry_run,
        )

    def _step_lookahead(self, now: float, *, measured: np.ndarray, observation_stamp: float, hold: bool) -> Command:
        """`step` with a lookahead: the command and its filtered continuation through the queued plan.

        The lookahead keeps its own timeline, one point every period from the first tick on, so that the
        points of consecutive lookaheads fall on the same times whatever the jitter of the ticks and the
        phase of the queued steps; each point is the plan (`ChunkScheduler.plan_at`) at its time. A tick that
        comes late (the ticks in between never ran) first moves the filter to where the last lookahead has
        taken the controller meanwhile.
        """
        period = self.embodiment.control_period_s
        step_time = self._next_stream_time(now)
        previous, previous_velocity = self.safety.last_command, self.safety.last_velocity
        queued_times, _ = self.scheduler.queued(now)
        times = step_time + np.arange(self.lookahead_steps) * period
        # Points up to half a period beyond the last queued step; the queue's own tick tolerance does not
        # apply: the plan is sampled at the stream's times, not at the ticks'.
        count = (
            0
            if hold or len(queued_times) == 0
            else int(np.searchsorted(times, queued_times[-1] + 0.5 * period, side="right"))
        )
        plan = self.scheduler.plan_at(times[:count], now) if count else None
        self.scheduler.pop_command(now)  # drains the queue and keeps its counters
        target, ahead = (None, np.empty((0, len(previous)))) if plan is None else (plan[0], plan[1:])
        age = now - observation_stamp
        positions, report = self.safety.filter(target, measured=measured, observation_age_s=age)
        rows = self.safety.preview(ahead, measured=measured, observation_age_s=age + period)
        return Command(
            positions=positions,
            velocities=(positions - previous) / period,
            trajectory=build_trajectory(self.embodiment.joint_names, positions, period),
            report=report,
            send=not report.dry_run,
            lookahead=self._lookahead(step_time - period, np.vstack([previous, positions, rows]), previous_velocity),
        )

    def hold_command(self, now: float, *, measured: np.ndarray) -> Command | None:
        """The command to send when commanding stops (deactivate, pause, shutdown): its lookahead brings the arm to
        rest from where the last one has taken it by `now`, within the limits, so that the controller does not
        coast through the rest of the last lookahead. None before the first step or without `lookahead_steps`."""
        hold = self.hold_trajectory(now, measured=measured)
        if hold is None:
            return None
        rest = hold.points[-1].positions
        report = SafetyReport(interventions=("no_action_hold",), held=True, dry_run=self.safety.config.dry_run)
        return Command(
            positions=rest,
            velocities=np.zeros_like(rest),
            trajectory=build_trajectory(self.embodiment.joint_names, rest, self.embodiment.control_period_s),
            report=report,
            send=not report.dry_run,
            lookahead=hold,
        )

    def hold_trajectory(self, now: float, *, measured: np.ndarray) -> JointTrajectory | None:
        """A lookahead that brings the arm to rest from where the last one has taken it by `now`, within the
        limits: what to send when commanding stops (deactivate, pause, shutdown), so that the controller does not
        coast through the rest of the last lookahead. None before the first step or without `lookahead_steps`."""
        if self.lookahead_steps is None or self._sent is None:
            return None
        step_time = self._next_stream_time(now)
        previous, previous_velocity = self.safety.last_command, self.safety.last_velocity
        rows = self.safety.preview(np.empty((0, len(previous))), measured=measured, observation_age_s=0.0)
        self.safety.resume_from(rows[-1], np.zeros_like(previous))
        return self._lookahead(
            step_time - self.embodiment.control_period_s, np.vstack([previous, rows]), previous_velocity
        )

    def _next_stream_time(self, now: float) -> float:
        """The lookahead time of this tick's command: the stream time nearest `now` after the last one (`now` for
        the first). Moves the filter to the last lookahead's point just before it, where ticks were missed."""
        if self._sent is None:
            return now
        period = self.embodiment.control_period_s
        row0_time, rows = self._sent
        steps = max(1, round((now - row0_time) / period) - 1)  # rows[1] was the last tick's command
        if steps > 1:
            if steps >= len(rows) - 1:
                self.safety.resume_from(rows[-1], np.zeros_like(rows[-1]))  # the lookahead ran out: at rest
            else:
                velocity = (rows[steps] - rows[steps - 1]) / period
                self.safety.resume_from(rows[steps], velocity, target=rows[steps])
        return row0_time + (steps + 1) * period

    def _lookahead(self, start: float, rows: np.ndarray, first_velocity: np.ndarray) -> JointTrajectory:
        """The lookahead through `rows` (M, n) from `start`; row 0 is the command already sent, moving at
        `first_velocity`. Starting one step back keeps the first point in the past when the message arrives, even
        from a tick that runs early: the controller never interpolates towards it from its own state."""
        period = self.embodiment.control_period_s
        self._sent = (start, rows)
        return build_lookahead(
            self.embodiment.joint_names,
            rows,
            period,
            start_time=start,
            previous=rows[0] - first_velocity * period,
            rest_until=start + LOOKAHEAD_REST_S,
        )


def _filter_velocity_limits(embodiment: EmbodimentConfig, *, lookahead: bool) -> np.ndarray:
    """The velocity limits the safety filter enforces on its steps.

    A lookahead is followed on a cubic spline, whose speed between two steps exceeds the steps' own by up to
    max_acceleration * period / 4 (`build_lookahead`): the filter keeps that much below the robot's limit so the
    controller's output stays within it.
    """
    limits = embodiment.velocity_limits
    if not lookahead:
        return limits
    reduced = limits - embodiment.acceleration_limits * embodiment.control_period_s / 4.0
    too_low = reduced <= 0.5 * limits
    if too_low.any():
        joints = [embodiment.joint_names[i] for i in np.nonzero(too_low)[0]]
        raise ConfigError(
            f"joints {joints}: acceleration_limit * control period / 4 takes more than half of velocity_limit, "
            "so a lookahead could not keep within it; lower acceleration_limit or raise control_rate_hz",
            source=embodiment.source,
            key="joints",
        )
    return reduced
