"""The closed loop sim -> observation -> adapter -> policy -> scheduler -> safety -> sim, on simulated time.

Inference takes simulated time too: its latency is the measured wall time of `predict_chunk` (unless turned off)
plus an artificial added latency. The world is frozen while `predict_chunk` runs, so the policy sees the
observation at the time it was taken; the chunk then becomes available `latency` seconds of simulated time later,
at the first control tick from then on.

- `sync`: the robot waits for each chunk: it brakes to a stop and holds (stall time) until the chunk
  arrives, then executes it from its first step, as if no time had passed (the controller's clock stands
  still while it waits).
- `async`: the robot keeps executing the queue meanwhile; on arrival the scheduler drops the chunk's steps
  that are already in the past and merges the rest (replace, blend, ensemble, or rtc).

Used by `vla-ros demo`, `vla-ros record --sim` and the closed-loop benchmarks.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import RobotObservation
from vla_ros.core.pipeline import ActionPipeline, ChunkRequest
from vla_ros.policies.base import Policy


class InferenceMode(str, Enum):
    """How the control loop and inference share time (see the module docstring)."""

    SYNC = "sync"  # the robot holds while the policy computes
    ASYNC = "async"  # the robot executes the queue while the policy computes


@dataclass(frozen=True)
class LoopSettings:
    """How the closed loop charges inference time.

    - `inference`: sync or async (an `InferenceMode` or its value).
    - `added_latency_s`: artificial latency added to every chunk (s, >= 0), e.g. a slower GPU or a network.
    - `measure_latency`: also charge the measured wall time of `predict_chunk`; off, results do not depend
      on this machine's speed.
    """

    inference: InferenceMode = InferenceMode.ASYNC
    added_latency_s: float = 0.0
    measure_latency: bool = True

    def __post_init__(self) -> None:
        valid = [m.value for m in InferenceMode]
        if self.inference not in valid:
            raise ConfigError(f"inference must be one of {valid}, got {self.inference!r}", key="inference")
        object.__setattr__(self, "inference", InferenceMode(self.inference))
        if not (math.isfinite(self.added_latency_s) and self.added_latency_s >= 0):
            raise ConfigError(f"added latency must be >= 0 s, got {self.added_latency_s}", key="latency_ms")

    def describe(self) -> dict:
        """The latency model, for results files."""
        return {
            "inference": self.inference.value,
            "measured_wall_time": self.measure_latency,
            "added_ms": round(self.added_latency_s * 1e3, 3),
        }


@dataclass
class EpisodeLog:
    """One episode of the closed loop, tick by tick (tick k at `times[k]`, simulated s)."""

    seed: int
    instruction: str
    success: bool = False
    duration_s: float = 0.0
    steps: int = 0
    times: list[float] = field(default_factory=list)
    commanded: list[np.ndarray] = field(default_factory=list)  # (n,) safe command of each tick
    measured: list[np.ndarray] = field(default_factory=list)
    held: list[bool] = field(default_factory=list)  # the tick held for want of a chunk (no_action_hold)
    seam_ticks: list[int] = field(default_factory=list)  # ticks at which a chunk took over from an earlier one
    policy_ms: list[float] = field(default_factory=list)  # wall time of each predict_chunk
    latency_ms: list[float] = field(default_factory=list)  # latency charged to each chunk (simulated)
    overhead_ms: list[float] = field(default_factory=list)  # pipeline time of each tick, inference excluded
    interventions: Counter[str] = field(default_factory=Counter)
    policy_errors: Counter[str] = field(default_factory=Counter)  # message -> times predict_chunk raised it

    @property
    def stall_ticks(self) -> int:
        return sum(self.held)

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            "instruction": self.instruction,
            "success": self.success,
            "duration_s": round(self.duration_s, 3),
            "steps": self.steps,
        }


@dataclass
class _ChunkInFlight:
    actions: np.ndarray
    request: ChunkRequest
    ready_at: float  # simulated s: the first tick at or after it may use the chunk


def run_episode(
    world,
    task,
    *,
    seed: int,
    policy: Policy,
    pipeline: ActionPipeline,
    settings: LoopSettings,
    on_tick: Callable | None = None,
) -> EpisodeLog:
    """Run one episode of `task` in `world` (reset with `seed`) until success or the task's time limit.

    `on_tick(now, measured, command, images)`, if given, sees every control tick with the cameras rendered
    (the demonstration recorder, the demo's video).
    """
    world.reset(task, seed=seed)
    policy.reset(seed=seed)  # a stochastic policy samples the same noise for the same episode
    pipeline.reset(world.joint_positions())
    log = EpisodeLog(seed=seed, instruction=task.instruction)
    period = pipeline.embodiment.control_period_s
    sync = settings.inference is InferenceMode.SYNC
    in_flight: _ChunkInFlight | None = None
    waited_s = 0.0  # sync: simulated time spent waiting for chunks, during which the controller's clock stood still
    chunks = 0
    while world.time < task.max_duration_s:
        now = world.time
        control_now = now - waited_s
        measured = world.joint_positions()
        wants_chunk = in_flight is None and pipeline.needs_chunk(control_now)
        images = world.render_cameras() if wants_chunk or on_tick else {}
        overhead = 0.0
        if wants_chunk:
            observation = RobotObservation(
                stamp=control_now,
                joint_names=world.joint_names,
                joint_positions=measured,
                images=images,
                instruction=task.instruction,
            )
            t0 = time.perf_counter()
            batch, request = pipeline.prepare(observation, now=control_now)
            t1 = time.perf_counter()
            try:
                actions = policy.predict_chunk(batch, request.prefix)
            except PolicyError as exc:  # e.g. a policy server that went away: hold, count, ask again next tick
                pipeline.chunk_failed()
                log.policy_errors[str(exc)] += 1
                actions = None
            inference_s = time.perf_counter() - t1
            overhead += t1 - t0
            if actions is not None:
                latency_s = (inference_s if settings.measure_latency else 0.0) + settings.added_latency_s
                log.policy_ms.append(inference_s * 1e3)
                log.latency_ms.append(latency_s * 1e3)
                in_flight = _ChunkInFlight(actions, request, ready_at=now + latency_s)
        if in_flight is not None and now >= in_flight.ready_at - 1e-9:
            t0 = time.perf_counter()
            receipt = pipeline.accept_chunk(in_flight.actions, in_flight.request, now=control_now)
            overhead += time.perf_counter() - t0
            in_flight = None
            if chunks and receipt.queued_steps:
                log.seam_ticks.append(log.steps)  # a tick executes the step nearest to it: the new chunk's first
            chunks += 1
        waiting = sync and in_flight is not None
        t0 = time.perf_counter()
        command = pipeline.step(control_now, measured=measured, observation_stamp=control_now, hold=waiting)
        overhead += time.perf_counter() - t0
        log.overhead_ms.append(overhead * 1e3)
        log.interventions.update(command.report.interventions)
        log.held.append("no_action_hold" in command.report.interventions)
        if command.send:
            world.send_trajectory(command.trajectory)
        log.times.append(now)
        log.commanded.append(command.positions)
        log.measured.append(measured)
        if on_tick is not None:
            on_tick(now, measured, command, images)
        world.advance(period)
        if waiting:
            waited_s += period
        log.steps += 1
        if task.is_success(world):
            log.success = True
            break
    log.duration_s = world.time
    return log
