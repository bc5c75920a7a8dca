"""`vla-ros bench transport`: the pip-only DDS backend between two processes on loopback.

A 640x480 RGB sensor_msgs/Image stream and a 7-joint sensor_msgs/JointState stream at 500 Hz go from this process
to a subscriber process, both on `DdsNode` with the QoS the nodes use (reliable publisher, best-effort sensor-data
subscriber). One-way latency is the subscriber's CLOCK_MONOTONIC at the callback minus the publisher's, carried in
header.stamp (one machine: one monotonic clock). Reference: a plain memory copy of the same image bytes, and the
time to serialize and deserialize the messages. Goals: image p99 <= 2 ms; JointState at 500 Hz with no loss.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import save_figure, summarize_ms

LOOPBACK_CONFIG = Path(__file__).resolve().parents[2] / "config" / "cyclonedds_loopback.xml"
IMAGE_TOPIC, JOINT_TOPIC, DONE_TOPIC = "/bench/image", "/bench/joint_states", "/bench/done"
JOINTS = [f"joint{i}" for i in range(1, 8)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=300, help="images to send")
    parser.add_argument("--image-rate-hz", type=float, default=30.0)
    parser.add_argument("--joint-rate-hz", type=float, default=500.0)
    parser.add_argument("--joint-seconds", type=float, default=5.0, help="how long to stream joint states")
    parser.add_argument("--domain-id", type=int, default=87, help="DDS domain of the benchmark (loopback only)")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="folder for the plot")


def _stamp(msg_type, nanoseconds: int):
    return msg_type(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _subscriber(domain_id: int, ready, results) -> None:
    """Child process: record one-way latencies until the publisher says it is done."""
    from vla_ros.dds.messages import message_type
    from vla_ros.dds.node import DdsGraph, DdsNode
    from vla_ros.dds.qos import QosSpec

    graph = DdsGraph(domain_id)
    node = DdsNode("bench_subscriber", graph)
    latencies: dict[str, list[float]] = {"image": [], "joint_state": []}
    image_ok = []

    def record(kind: str, msg) -> None:
        now = time.monotonic_ns()
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies[kind].append((now - sent) * 1e-6)
        if kind == "image":
            image_ok.append(len(msg.data) == msg.height * msg.step)

    sensor_data = QosSpec(depth=5, reliable=False)  # the policy node's camera and joint state subscriptions
    node.create_subscription(message_type("sensor_msgs/msg/Image"), IMAGE_TOPIC, lambda m: record("image", m),
                             sensor_data)
    node.create_subscription(message_type("sensor_msgs/msg/JointState"), JOINT_TOPIC,
                             lambda m: record("joint_state", m), sensor_data)
    node.create_subscription(message_type("std_msgs/msg/String"), DONE_TOPIC, lambda m: node.shutdown(), QosSpec())
    ready.set()
    node.spin()
    results.put({"latency_ms": latencies, "images_intact": all(image_ok)})
    node.destroy_node()
    graph.close()


def _wait_matched(publisher, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the subscriber process never matched {publisher.topic_name}")
        time.sleep(0.01)


def _paced(count: int, rate_hz: float):
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


def serialization_ms(msg, repeats: int = 200) -> tuple[dict, dict]:
    payload = msg.serialize()
    serialize, deserialize = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        msg.serialize()
        serialize.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        type(msg).deserialize(payload)
        deserialize.append((time.perf_counter() - start) * 1e3)
    return summarize_ms(serialize), summarize_ms(deserialize)


def memcpy_ms(data: np.ndarray, repeats: int = 500) -> dict:
    target = np.empty_like(data)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, data)
        times.append((time.perf_counter() - start) * 1e3)
    return summarize_ms(times)


def measure(args: argparse.Namespace) -> dict:
    os.environ.setdefault("CYCLONEDDS_URI", LOOPBACK_CONFIG.as_uri())  # the child inherits it (spawn)
    from vla_ros.dds.messages import message_type
    from vla_ros.dds.node import DdsGraph, DdsNode
    from vla_ros.dds.qos import QosSpec

    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    child = context.Process(target=_subscriber, args=(args.domain_id, ready, results), daemon=True)
    child.start()
    Image, JointState, Time = (message_type(f"{t}") for t in  # noqa: N806 - message classes
                               ("sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "builtin_interfaces/msg/Time"))
    graph = DdsGraph(args.domain_id)
    node = DdsNode("bench_publisher", graph)
    sensor = QosSpec(depth=5)  # the simulator's sensor publishers: reliable, keep last 5
    images = node.create_publisher(Image, IMAGE_TOPIC, QosSpec(depth=2))
    joints = node.create_publisher(JointState, JOINT_TOPIC, sensor)
    done = node.create_publisher(message_type("std_msgs/msg/String"), DONE_TOPIC, QosSpec())
    if not ready.wait(60):
        raise RuntimeError("the subscriber process did not start")
    for publisher in (images, joints, done):
        _wait_matched(publisher)

    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=rgb.tobytes())
    joint_state = JointState(name=JOINTS, position=[0.1] * 7, velocity=[0.0] * 7)
    image_ser, image_de = serialization_ms(image)
    joint_ser, joint_de = serialization_ms(joint_state)

    started = time.monotonic()
    for _ in _paced(args.images, args.image_rate_hz):
        image.header.stamp = _stamp(Time, time.monotonic_ns())
        images.publish(image)
    image_seconds = time.monotonic() - started
    joint_count = int(args.joint_seconds * args.joint_rate_hz)
    started = time.monotonic()
    for i in _paced(joint_count, args.joint_rate_hz):
        joint_state.position = [0.001 * i] * 7
        joint_state.header.stamp = _stamp(Time, time.monotonic_ns())
        joints.publish(joint_state)
    joint_seconds = time.monotonic() - started
    time.sleep(0.5)  # let the last samples arrive before the end marker
    done.publish(message_type("std_msgs/msg/String")(data="done"))
    received = results.get(timeout=60)
    child.join(timeout=10)
    node.destroy_node()
    graph.close()

    image_latency, joint_latency = received["latency_ms"]["image"], received["latency_ms"]["joint_state"]
    image_mb = rgb.nbytes / 1e6
    results = {
        "benchmark": "transport",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "middleware": "Cyclone DDS (vla_ros pip-only backend), loopback, two processes",
        "image": {
            "size": "640x480 rgb8", "bytes": rgb.nbytes, "sent": args.images, "received": len(image_latency),
            "rate_hz": round(args.images / image_seconds, 1), "intact": received["images_intact"],
            "one_way_latency_ms": summarize_ms(image_latency),
            "throughput_mb_s": round(len(image_latency) * image_mb / image_seconds, 1),
            "serialize_ms": image_ser, "deserialize_ms": image_de,
            "memcpy_reference_ms": memcpy_ms(rgb),
            "goal_p99_le_2ms": bool(image_latency) and float(np.percentile(image_latency, 99)) <= 2.0,
        },
        "joint_state": {
            "joints": len(JOINTS), "sent": joint_count, "received": len(joint_latency),
            "lost": joint_count - len(joint_latency), "rate_hz": round(joint_count / joint_seconds, 1),
            "one_way_latency_ms": summarize_ms(joint_latency),
            "serialize_ms": joint_ser, "deserialize_ms": joint_de,
            "goal_500hz_no_loss": joint_count == len(joint_latency) and joint_count / joint_seconds >= 0.98 * 500,
        },
    }
    results["plot"] = str(_plot(image_latency, joint_latency, args.out))
    return results


def _plot(image_ms: list[float], joint_ms: list[float], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, values, title in ((axes[0], image_ms, "640x480 RGB image"), (axes[1], joint_ms, "7-joint JointState")):
        axis.hist(values, bins=50)
        if values:
            axis.axvline(float(np.percentile(values, 99)), color="red", linestyle="--", label="p99")
            axis.legend()
        axis.set_xlabel("one-way latency [ms]")
        axis.set_title(title)
    return save_figure(fig, out / "transport.png", dpi=80)


def main(args: argparse.Namespace) -> int:
    print(json.dumps(measure(args), indent=2))
    return 0
