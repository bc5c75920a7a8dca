"""Observation in, safe joint command out: the ROS-free control path shared by the policy node and the demo.

The policy call itself stays outside (it may run in the same thread, another thread, or on a server):

    if pipeline.needs_chunk(now):
        batch, request = pipeline.prepare(observation)      # adapter: joints by name, units, images
        pipeline.accept_chunk(policy.predict_chunk(batch), request, now=now)
    command = pipeline.step(now, measured=..., observation_stamp=...)   # scheduler -> safety -> trajectory
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.features import PolicyFeatures, PolicyObservation, RobotObservation
from vla_ros.core.safety import SafetyConfig, SafetyFilter, SafetyReport
from vla_ros.core.scheduler import ChunkReceipt, ChunkScheduler, MergeStrategy, SchedulerConfig
from vla_ros.core.trajectory import JointTrajectory, build_trajectory


@dataclass(frozen=True)
class ChunkRequest:
    """What a chunk must be interpreted against: the observation's time and the robot state captured with it."""

    observation_stamp: float  # s
    state: np.ndarray  # (n,) joint units, embodiment order


@dataclass(frozen=True)
class Command:
    """One control tick's output."""

    positions: np.ndarray  # (n,) joint units, embodiment order: the safe target
    velocities: np.ndarray  # (n,) joint units / s implied by the step from the previous command
    trajectory: JointTrajectory  # ready for a joint_trajectory_controller
    report: SafetyReport
    send: bool  # False in dry-run: publish to a preview only


@dataclass(frozen=True)
class PipelineConfig:
    merge: MergeStrategy = MergeStrategy.BLEND
    refill_threshold_steps: int | None = None  # None: half a chunk, LeRobot's async default
    dry_run: bool = False


class ActionPipeline:
    """Adapter, chunk scheduler, safety filter and trajectory building for one embodiment and one policy."""

    def __init__(
        self, embodiment: EmbodimentConfig, features: PolicyFeatures, config: PipelineConfig = PipelineConfig()
    ):
        self.embodiment = embodiment
        self.adapter = EmbodimentAdapter(embodiment, features)
        threshold = config.refill_threshold_steps
        self.scheduler = ChunkScheduler(
            SchedulerConfig(
                control_period_s=embodiment.control_period_s,
                refill_threshold_steps=features.chunk_size // 2 if threshold is None else threshold,
                merge=config.merge,
            )
        )
        safety = embodiment.safety
        self.safety = SafetyFilter(
            SafetyConfig(
                joint_names=embodiment.joint_names,
                lower=embodiment.lower_limits,
                upper=embodiment.upper_limits,
                max_velocity=embodiment.velocity_limits,
                max_acceleration=embodiment.acceleration_limits,
                control_period_s=embodiment.control_period_s,
                max_tracking_error=embodiment.tracking_error_limits,
                observation_timeout_s=safety.observation_timeout_s,
                dry_run=config.dry_run,
            )
        )
        self._chunk_pending = False
        self.last_chunk: tuple[float, np.ndarray] | None = None  # (observation stamp, (H, n) joint targets)

    def reset(self, measured: np.ndarray) -> None:
        """Start an episode holding the measured position (n,), with nothing queued."""
        self.scheduler.clear()
        self.safety.reset(measured)
        self._chunk_pending = False

    def needs_chunk(self, now: float) -> bool:
        """True when the queue runs low and no chunk is already being computed."""
        return not self._chunk_pending and self.scheduler.needs_refill(now)

    def prepare(self, observation: RobotObservation) -> tuple[PolicyObservation, ChunkRequest]:
        """The policy's input for `observation`, and the request to hand back with the resulting chunk."""
        batch, state = self.adapter.to_policy_observation(observation)
        self._chunk_pending = True
        return batch, ChunkRequest(observation_stamp=observation.stamp, state=state)

    def accept_chunk(self, actions: np.ndarray, request: ChunkRequest, *, now: float) -> ChunkReceipt:
        """Queue a policy's (H, action_dim) chunk computed for `request`; steps already in the past are dropped."""
        self._chunk_pending = False
        targets = self.adapter.actions_to_robot(actions, request.state)
        self.last_chunk = (request.observation_stamp, targets)  # for previews; the scheduler keeps its own copy
        return self.scheduler.add_chunk(
            targets, observation_stamp=request.observation_stamp, dt=self.adapter.features.action_dt_s, now=now
        )

    def chunk_failed(self) -> None:
        """The policy raised or timed out: allow a new request; the arm holds meanwhile."""
        self._chunk_pending = False

    def step(self, now: float, *, measured: np.ndarray, observation_stamp: float) -> Command:
        """The safe command for the control tick at `now`, given the latest measured joint positions (n,)."""
        previous = self.safety.last_command
        target = self.scheduler.pop_command(now)
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
