"""Everything a policy node does, without ROS: observations in, safe commands out, inference beside the loop.

`PolicyRunner` joins the observation assembler, the action pipeline and a policy running in its own
thread, so that commanding continues from the queue while the next chunk is computed. The ROS node
converts messages, calls `add_joint_state`/`add_image` from its subscriptions and `tick` from its
control timer, and publishes what `tick` returns.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import VlaRosError
from vla_ros.core.observation import AssemblerConfig, Drop, ObservationAssembler
from vla_ros.core.pipeline import ActionPipeline, ChunkRequest, Command, PipelineConfig


@dataclass(frozen=True)
class TickResult:
    command: Command | None  # None: nothing to send (no joint state yet, or paused before the first one)
    hold_reason: str  # empty while the policy drives the arm


@dataclass
class Previews:
    """What the node may show once (rviz, rqt): each is set when new and taken by `take`."""

    policy_input: dict | None = None  # the last PolicyObservation sent to the policy
    chunk: tuple[float, np.ndarray, float] | None = None  # (observation stamp, (H, n) joint targets, latency s)

    def take(self) -> tuple[dict | None, tuple | None]:
        taken = self.policy_input, self.chunk
        self.policy_input = self.chunk = None
        return taken


@dataclass
class RunnerStats:
    chunks_received: int = 0
    policy_errors: int = 0
    inference_latency_s: float = 0.0  # last chunk
    inference_latency_sum_s: float = 0.0

    @property
    def inference_latency_mean_s(self) -> float:
        return self.inference_latency_sum_s / self.chunks_received if self.chunks_received else 0.0


class PolicyRunner:
    """One robot, one policy. Thread-safe: subscriptions, the control timer and the worker may run in parallel."""

    def __init__(self, embodiment: EmbodimentConfig, policy, *, pipeline_config: PipelineConfig | None = None,
                 assembler_config: AssemblerConfig | None = None, instruction: str = ""):
        self.embodiment = embodiment
        self.policy = policy
        self.pipeline = ActionPipeline(embodiment, policy.metadata.features, pipeline_config or PipelineConfig(),
                                       supports_prefix=policy.metadata.supports_prefix)
        self.assembler = ObservationAssembler(assembler_config or AssemblerConfig.from_embodiment(embodiment))
        self.stats = RunnerStats()
        self.previews = Previews()
        self.instruction = instruction
        self.paused = False
        self._lock = threading.Lock()  # guards pipeline, assembler and the fields below
        self._started = False  # the safety filter has a start position
        self._pending: tuple[ChunkRequest, np.ndarray | None, BaseException | None, float] | None = None
        self._worker = _InferenceWorker(policy, self._on_chunk)
        self.last_hold_reason = ""
        self.last_error = ""
        self.undecodable: Counter[str] = Counter()  # topic -> messages the node could not convert

    # -- inputs ----------------------------------------------------------------------------------------------------

    def add_joint_state(self, source: str, stamp: float, names, positions) -> Drop | None:
        """Merge a joint state of topic `source` (names as reported); the `Drop` if it was dropped (and counted)."""
        return self.assembler.add_joint_state(source, stamp, names, positions)

    def add_image(self, camera: str, stamp: float, image: np.ndarray) -> Drop | None:
        return self.assembler.add_image(camera, stamp, image)

    def count_undecodable(self, source: str) -> None:
        """A message that could not even be converted (bad encoding, wrong size): counted with the drops."""
        with self._lock:
            self.undecodable[source] += 1

    @property
    def inference_in_flight(self) -> bool:
        """The policy is computing a chunk; the next is requested only after it arrives."""
        return self._worker.busy

    @property
    def dropped_messages(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.assembler.drops.values()) + sum(self.undecodable.values())

    # -- operator commands -----------------------------------------------------------------------------------------

    def set_instruction(self, instruction: str) -> None:
        """Follow a new instruction from the next chunk on: what is queued was meant for the old one."""
        with self._lock:
            self.instruction = instruction
            self.pipeline.scheduler.clear()

    def pause(self) -> None:
        with self._lock:
            self.paused = True
            self.pipeline.scheduler.clear()

    def resume(self) -> None:
        with self._lock:
            self.paused = False

    def restart(self) -> None:
        """Start commanding afresh from where the arm is measured next (activation after the node stopped
        commanding: the arm may have been moved meanwhile), with nothing queued."""
        with self._lock:
            self.paused = False
            self._started = False
            self.pipeline.scheduler.clear()

    def reset(self) -> None:
        """Clear the chunk queue and restart the policy's episode; the arm holds until the next chunk."""
        with self._lock:
            self.pipeline.scheduler.clear()
            self.policy.reset()

    # -- the control tick --------------------------------------------------------------------------------------------

    def tick(self, now: float) -> TickResult:
        """The command for the control tick at `now` (seconds on the robot's clock)."""
        with self._lock:
            measured, age = self.assembler.measured_positions(now)
            if measured is None:
                return self._hold(None, self.assembler.last_hold_reason or "waiting for joint states")
            if not self._started:
                self.pipeline.reset(measured)
                self._started = True
            self._accept_pending(now)
            if not self.paused and self.pipeline.needs_chunk(now) and not self.inference_in_flight:
                observation = self.assembler.assemble(now, self.instruction)
                if observation is not None:
                    batch, request = self.pipeline.prepare(observation, now=now)
                    self._worker.submit(batch, request)
                    self.previews.policy_input = batch
            command = self.pipeline.step(now, measured=measured, observation_stamp=now - age)
            reason = "paused" if self.paused else self._hold_reason(command, now)
            return self._hold(command, reason)

    def hold_command(self, now: float) -> Command | None:
        """The command that brings the arm to rest within the limits when commanding stops (`ActionPipeline.
        hold_command`); None before the first command, without a lookahead, or without a joint state."""
        with self._lock:
            measured, _ = self.assembler.measured_positions(now)
            if measured is None or not self._started:
                return None
            return self.pipeline.hold_command(now, measured=measured)

    def _hold(self, command: Command | None, reason: str) -> TickResult:
        self.last_hold_reason = reason
        return TickResult(command=command, hold_reason=reason)

    def _hold_reason(self, command: Command, now: float) -> str:
        if not command.report.held:
            return ""
        if "stale_observation_hold" in command.report.interventions:
            return self.assembler.stale_joints(now) or "joint states are stale"
        if "no_action_hold" in command.report.interventions:
            return self.assembler.last_hold_reason or "waiting for the policy"
        return ", ".join(command.report.interventions)

    def _on_chunk(self, request: ChunkRequest, actions, error: BaseException | None, latency_s: float) -> None:
        # Worker thread: hand the result over; the control tick merges it at its own time.
        with self._lock:
            self._pending = (request, actions, error, latency_s)

    def _accept_pending(self, now: float) -> None:
        if self._pending is None:
            return
        request, actions, error, latency_s = self._pending
        self._pending = None
        if error is None:
            try:
                self.pipeline.accept_chunk(actions, request, now=now)
                self.previews.chunk = (*self.pipeline.last_chunk, latency_s)
                self.stats.chunks_received += 1
                self.stats.inference_latency_s = latency_s
                self.stats.inference_latency_sum_s += latency_s
                return
            except VlaRosError as exc:
                error = exc
        self.pipeline.chunk_failed()
        self.stats.policy_errors += 1
        self.last_error = f"{type(error).__name__}: {error}"

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Stop the inference thread, waiting at most `timeout_s` for a chunk in progress (then dropped)."""
        self._worker.close(timeout_s=timeout_s)


class _InferenceWorker:
    """Runs `policy.predict_chunk` (with the request's RTC prefix, if any) in one background thread, one at a time."""

    def __init__(self, policy, on_done):
        self._policy = policy
        self._on_done = on_done
        self._request = None
        self._wake = threading.Condition()
        self._closed = False
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="vla_ros_inference", daemon=True)
        self._thread.start()

    def submit(self, batch, request: ChunkRequest) -> None:
        with self._wake:
            self.busy = True
            self._request = (batch, request)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._request is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                batch, request = self._request
                self._request = None
            start = time.perf_counter()
            actions, error = None, None
            try:
                actions = self._policy.predict_chunk(batch, request.prefix)
            except Exception as exc:  # noqa: BLE001 - any policy failure means hold and report, never crash the node
                error = exc
            self._on_done(request, actions, error, time.perf_counter() - start)
            self.busy = False

    def close(self, *, timeout_s: float = 5.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=timeout_s)
