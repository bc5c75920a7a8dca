"""`vla-ros bench jtc`: how smoothly ros2_control's joint_trajectory_controller (JTC) follows our command stream.

Runs the real controller_manager on mock hardware (`MockHardware`, mock_components/GenericSystem) and streams a
smooth 0.5 Hz, 0.3 rad sine on the arm joints at the robot's control rate through the node's own control path
(`ActionPipeline`: chunk scheduler, safety filter, trajectory building, `trajectory_to_msg`), optionally with
0-15 ms publish jitter and a 100 ms gap each second. It records the arm controller's ~/controller_state
(`reference`: the position the controller wants at the
update's stamp; it writes the same spline one update ahead to the hardware) and measures, after a warm-up:

- tracking error of the output against the intended sine, and the lag that minimises it;
- velocity dips (speed below half the intended while the intended speed is above half its peak) and full
  stops (below 5 % of the peak), as onsets per joint per 10 s;
- acceleration and jerk of the output (finite differences over the controller's stamps), RMS and max;
- the largest output speed as a fraction of the joint's velocity limit (the safety filter's limits must hold
  at the controller's output);
- messages the controller rejected (its warnings and errors in the controller_manager log).

Schemes: `single_point` is the stream before the lookahead (one positions-only point per tick, stamp 0);
`lookahead` is `Command.lookahead` (stamped, with velocities, ending at rest); `lookahead_open_end` is the
same with the last point's velocity left nonzero, to show that Jazzy's default JTC rejects it.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import report_json
from vla_ros.core.embodiment import CommandInterface, load_embodiment
from vla_ros.core.features import PolicyFeatures
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.trajectory import JointTrajectory

SINE_AMPLITUDE_RAD = 0.3
SINE_FREQUENCY_HZ = 0.5
JITTER_MAX_S = 0.015
GAP_S = 0.1  # once a second the stream stops this long (a stalled node)
WARMUP_S = 2.0
SCHEMES = ("single_point", "lookahead", "lookahead_open_end")


@dataclass(frozen=True)
class StreamCase:
    scheme: str
    update_rate_hz: int
    disturbed: bool  # jitter and gaps
    open_loop: bool  # JTC open_loop_control
    lookahead_steps: int = 10

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")


@dataclass(frozen=True)
class StreamResult:
    tracking_rms_mrad: float
    tracking_max_mrad: float
    lag_ms: float
    dips_per_10s: float  # the worst joint
    stops_per_10s: float  # the worst joint
    acc_rms: float  # rad/s^2
    acc_max: float
    jerk_rms: float  # rad/s^3
    jerk_max: float
    max_speed_over_limit: float  # largest |output velocity| / velocity limit over joints
    rejected: int  # controller warnings and errors while streaming
    messages: int  # trajectories published
    state_samples: int
    tick_late_p99_ms: float  # how late the streamer's ticks came beyond the injected jitter (machine load)
    tick_late_max_ms: float
    realtime: bool  # the streamer ran with SCHED_FIFO (root), so load on the machine hardly delays it


def intended(times: np.ndarray, home: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray]:
    """The intended motion at `times` (K,): positions and velocities (K, J); joint j's phase is j * 2pi / J / 2."""
    phase = np.arange(len(home)) * np.pi / len(home)
    w = 2 * np.pi * SINE_FREQUENCY_HZ
    arg = w * (np.asarray(times)[:, None] - start) + phase
    return home + SINE_AMPLITUDE_RAD * (np.sin(arg) - np.sin(phase)), SINE_AMPLITUDE_RAD * w * np.cos(arg)


def _onsets(mask: np.ndarray) -> np.ndarray:
    """Rising edges of a (K, J) boolean mask, per joint."""
    return np.sum(mask[1:] & ~mask[:-1], axis=0) + mask[0]


def analyse(
    stamps: np.ndarray, output: np.ndarray, home: np.ndarray, start: float, velocity_limits: np.ndarray
) -> dict:
    """Metrics of the controller output `output` (K, J) at `stamps` (K,) against the intended sine."""
    keep = np.concatenate([[True], np.diff(stamps) > 0])  # a repeated stamp carries no new sample
    stamps, output = stamps[keep], output[keep]
    want, want_velocity = intended(stamps, home, start)
    error = output - want
    lags = np.arange(-0.1, 0.2, 0.001)
    lag_rms = [np.sqrt(np.mean((output - intended(stamps - lag, home, start)[0]) ** 2)) for lag in lags]
    dt = np.diff(stamps)
    velocity = np.diff(output, axis=0) / dt[:, None]
    mid = (stamps[1:] + stamps[:-1]) / 2
    _, want_mid = intended(mid, home, start)
    peak = SINE_AMPLITUDE_RAD * 2 * np.pi * SINE_FREQUENCY_HZ
    fast = np.abs(want_mid) > 0.5 * peak
    speed = np.abs(velocity)
    dips = _onsets(fast & (speed < 0.5 * np.abs(want_mid)))
    stops = _onsets(fast & (speed < 0.05 * peak))
    acceleration = np.diff(velocity, axis=0) / ((dt[1:] + dt[:-1]) / 2)[:, None]
    jerk = np.diff(acceleration, axis=0) / dt[1:-1, None]
    per_10s = 10.0 / (stamps[-1] - stamps[0])
    return {
        "tracking_rms_mrad": 1e3 * float(np.sqrt(np.mean(error**2))),
        "tracking_max_mrad": 1e3 * float(np.max(np.abs(error))),
        "lag_ms": 1e3 * float(lags[int(np.argmin(lag_rms))]),
        "dips_per_10s": float(np.max(dips) * per_10s),
        "stops_per_10s": float(np.max(stops) * per_10s),
        "acc_rms": float(np.sqrt(np.mean(acceleration**2))),
        "acc_max": float(np.max(np.abs(acceleration))),
        "jerk_rms": float(np.sqrt(np.mean(jerk**2))),
        "jerk_max": float(np.max(np.abs(jerk))),
        "max_speed_over_limit": float(np.max(speed / velocity_limits)),
        "state_samples": int(len(stamps)),
    }


def _controller_warnings(log: str, controller: str) -> int:
    return sum(1 for line in log.splitlines() if f"[{controller}]" in line and ("[WARN]" in line or "[ERROR]" in line))


def run_stream(case: StreamCase, *, robot: str = "so101", duration_s: float = 10.0, seed: int = 0) -> StreamResult:
    """Stream the sine through the real JTC for `duration_s` after the warm-up; rclpy must be importable."""
    import rclpy
    from control_msgs.msg import JointTrajectoryControllerState
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg
    from trajectory_msgs.msg import JointTrajectoryPoint

    from vla_ros.ros.convert import joint_state_from_msg, trajectory_to_msg
    from vla_ros.ros.mock_bringup import MockHardware
    from vla_ros.ros.mock_control import JTC_PARAMETERS

    embodiment = load_embodiment(robot)
    period = embodiment.control_period_s
    outputs = [o for o in embodiment.outputs if o.interface is CommandInterface.JOINT_TRAJECTORY]
    arm = outputs[0]
    arm_index = [embodiment.joint_names.index(name) for name in arm.joints]
    controller = arm.name.strip("/").split("/")[-2]
    jtc = dict(JTC_PARAMETERS, open_loop_control=case.open_loop)
    lookahead = None if case.scheme == "single_point" else case.lookahead_steps
    chunk = round(1.0 / period)  # a second of steps per chunk, refilled at half
    features = PolicyFeatures(
        state_dim=len(embodiment.joint_names),
        action_dim=len(embodiment.joint_names),
        chunk_size=chunk,
        action_dt_s=period,
        camera_keys=(),
    )
    pipeline = ActionPipeline(embodiment, features, PipelineConfig(lookahead_steps=lookahead))
    home = embodiment.home
    sine_home = home[arm_index]
    rng = np.random.default_rng(seed)
    realtime = _try_realtime()
    late: list[float] = []

    with MockHardware(embodiment, update_rate_hz=case.update_rate_hz, jtc_parameters=jtc) as hardware:
        hardware.wait_active()
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("vla_ros_jtc_bench", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        states: list[tuple[float, list]] = []
        latest: dict = {}
        node.create_subscription(
            JointTrajectoryControllerState,
            f"/{controller}/controller_state",
            lambda m: states.append(
                (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m.joint_names, list(m.reference.positions))
            ),
            100,
        )
        node.create_subscription(JointState, "/joint_states", lambda m: latest.update(msg=m), 10)
        publishers = [
            (
                node.create_publisher(JointTrajectoryMsg, o.name, 10),
                [embodiment.joint_names.index(n) for n in o.joints],
                o.wire_joint_names,
            )
            for o in outputs
        ]
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            deadline = time.monotonic() + 10
            while "msg" not in latest and time.monotonic() < deadline:
                time.sleep(0.01)
            if "msg" not in latest:
                raise RuntimeError("no /joint_states from the mock hardware within 10 s")
            now = node.get_clock().now().nanoseconds * 1e-9
            _, names, measured = joint_state_from_msg(latest["msg"])
            measured = measured[[names.index(n) for n in embodiment.joint_names]]
            pipeline.reset(measured)
            start = now + 0.2
            total = WARMUP_S + duration_s
            log_offset = len(hardware.log("controller_manager"))
            messages = 0
            for tick in range(int(total / period)):
                nominal = start + tick * period
                if case.disturbed and (nominal - start) % 1.0 < GAP_S:
                    continue
                due = nominal + (rng.uniform(0.0, JITTER_MAX_S) if case.disturbed else 0.0)
                time.sleep(max(0.0, due - node.get_clock().now().nanoseconds * 1e-9))
                now = node.get_clock().now().nanoseconds * 1e-9
                late.append(now - due)
                stamp, names, positions = joint_state_from_msg(latest["msg"])
                measured = positions[[names.index(n) for n in embodiment.joint_names]]
                if pipeline.scheduler.needs_refill(now):
                    times = now + np.arange(chunk) * period
                    targets = np.tile(home, (chunk, 1))
                    targets[:, arm_index] = intended(times, sine_home, start)[0]
                    pipeline.scheduler.add_chunk(targets, observation_stamp=now, dt=period, now=now)
                command = pipeline.step(now, measured=measured, observation_stamp=stamp)
                trajectory = command.trajectory if lookahead is None else command.lookahead
                if case.scheme == "lookahead_open_end":
                    trajectory = _open_end(trajectory)
                for publisher, index, wire in publishers:
                    publisher.publish(
                        trajectory_to_msg(
                            trajectory, JointTrajectoryMsg, JointTrajectoryPoint, joint_names=wire, joint_indices=index
                        )
                    )
                messages += 1
            stream_end = node.get_clock().now().nanoseconds * 1e-9
            time.sleep(0.5)
            rejected = _controller_warnings(hardware.log("controller_manager")[log_offset:], controller)
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)
            spinner.join(5)
            if realtime:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    joint_names = states[0][1] if states else []
    order = [joint_names.index(name) for name in arm.wire_joint_names]
    measured_from = start + WARMUP_S
    samples = [
        (t, [p[i] for i in order])
        for t, _, p in states
        if measured_from <= t <= stream_end and len(p) == len(joint_names)
    ]
    stamps = np.array([t for t, _ in samples])
    output = np.array([p for _, p in samples])
    metrics = analyse(stamps, output, sine_home, start, embodiment.velocity_limits[arm_index])
    late_ms = 1e3 * np.array(late)
    return StreamResult(
        **metrics,
        rejected=rejected,
        messages=messages,
        realtime=realtime,
        tick_late_p99_ms=float(np.percentile(late_ms, 99)),
        tick_late_max_ms=float(late_ms.max()),
    )


def _try_realtime() -> bool:
    """Run this process's threads (those started from here on) at a low real-time priority, below the
    controller manager's (50): the streamer's timing is then the injected jitter, not the machine's load."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError, AttributeError):
        return False
    return True


def _open_end(trajectory: JointTrajectory) -> JointTrajectory:
    """The lookahead with its last point moving, at the velocity of this tick's command."""
    *body, last = trajectory.points
    return replace(trajectory, points=(*body, replace(last, velocities=body[1].velocities.copy())))


def default_cases() -> list[StreamCase]:
    cases = []
    for rate in (100, 500):
        for disturbed in (False, True):
            for scheme, open_loop in (("single_point", False), ("lookahead", False), ("lookahead", True)):
                cases.append(StreamCase(scheme, rate, disturbed, open_loop))
    cases.append(StreamCase("lookahead_open_end", 100, False, False))
    return cases


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per case (after warm-up)")
    parser.add_argument("--quick", action="store_true", help="only 100 Hz")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_DOMAIN_ID", "42")
    results = []
    for case in default_cases():
        if args.quick and case.update_rate_hz != 100:
            continue
        result = run_stream(case, robot=args.robot, duration_s=args.duration)
        row = {**asdict(case), **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(result).items()}}
        results.append(row)
        print(row, flush=True)
    load = os.getloadavg()
    report_json(
        {
            "robot": args.robot,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "cases": results,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
