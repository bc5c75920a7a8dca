"""A ROS 2 node without ROS: topics on Cyclone DDS, wire-compatible with rmw_cyclonedds_cpp (Humble, Jazzy).

`DdsNode` offers the part of rclpy's Node API that the node cores use (`create_publisher`, `create_subscription`,
`create_timer`, `get_clock`, `get_logger`, `get_name`), so `PolicyNodeCore` and `MujocoRobotCore` run on it
unchanged. What makes ROS 2 tools see it as a node (facts: shared/reference/ros2-wire.md):

- topic `/a/b` is DDS topic `rt/a/b`, of DDS type `pkg::msg::dds_::Name_`, in plain CDR;
- the participant's user data is `enclave=/;`, each endpoint's `typehash=RIHS01_<hash>;`;
- `ros_discovery_info` carries which readers and writers belong to which node (`ros2 node list`).

One participant per process (`DdsGraph`), as rmw does; callbacks run one at a time on the executor thread of
`spin`, like rclpy's single-threaded executor. Services and actions are not offered: they stay with rclpy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cyclonedds.core import GuardCondition, InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from vla_ros.core.errors import ConfigError
from vla_ros.dds.messages import message_type, type_hash
from vla_ros.dds.qos import QosSpec

DISCOVERY_TOPIC = "ros_discovery_info"
DISCOVERY_QOS = QosSpec(depth=1, transient_local=True)
CLOCK_QOS = QosSpec(depth=1, reliable=False)  # rclpy's /clock subscription: best effort, keep last 1
TAKE_BATCH = 64  # samples taken from a reader per wake-up
IDLE_WAIT_S = 0.1  # the executor wakes at least this often (shutdown, timers added from other threads)
SIM_TIME_POLL_S = 0.01  # with use_sim_time and timers: the longest wait between checks of the simulated clock


# glibc serves allocations above 128 kB with a fresh mmap and returns them with munmap on free: every 0.9 MB image
# (de)serialized then costs ~225 page faults (0.8 ms per copy measured here, against 0.08 ms from the heap).
# Keeping such buffers in the heap makes a camera stream's steady state allocation-free at the OS level.
LARGE_BUFFER_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for this setting
LARGE_BUFFER_TRIM_THRESHOLD = 128 * 1024 * 1024  # keep up to this much freed heap before returning it to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)


def keep_large_buffers_in_heap() -> bool:
    """Tune glibc's malloc for large messages; False where it is not glibc (then nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, LARGE_BUFFER_TRIM_THRESHOLD))


def ros_distro() -> str:
    """'humble' or 'jazzy' (ROS_DISTRO, else jazzy): their ros_discovery_info Gids differ (24 vs 16 bytes)."""
    distro = os.environ.get("ROS_DISTRO", "jazzy").strip().lower() or "jazzy"
    return "humble" if distro == "humble" else "jazzy"


def domain_id_from_env() -> int:
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not value:
        return 0
    if not value.isdigit() or not 0 <= int(value) <= 232:
        raise ConfigError(f"ROS_DOMAIN_ID={value!r} is not a domain id: use an integer from 0 to 232")
    return int(value)


def fully_qualified_name(topic: str, *, namespace: str, node_name: str) -> str:
    """ROS 2 name resolution: '~/x' is private to the node, 'x' is in the node's namespace, '/x' is absolute."""
    base = namespace.rstrip("/")
    if topic.startswith("~"):
        name = f"{base}/{node_name}{topic[1:]}"
    elif topic.startswith("/"):
        name = topic
    else:
        name = f"{base}/{topic}"
    if not name.startswith("/") or "//" in name or name.endswith("/"):
        raise ConfigError(f"'{topic}' does not resolve to a valid ROS 2 topic name (got '{name}')")
    return name


def ros_type_name(msg_type: type) -> str:
    """'sensor_msgs/msg/JointState' of the class of DDS type 'sensor_msgs::msg::dds_::JointState_'."""
    package, kind, _, name = msg_type.__idl_typename__.split("::")
    return f"{package}/{kind}/{name.removesuffix('_')}"


class DdsGraph:
    """This process's DDS participant on the ROS 2 graph, and what ros_discovery_info says about its nodes."""

    def __init__(self, domain_id: int | None = None, *, distro: str | None = None):
        self.domain_id = domain_id_from_env() if domain_id is None else domain_id
        keep_large_buffers_in_heap()
        self.distro = distro or ros_distro()
        self.participant = DomainParticipant(self.domain_id, qos=Qos(Policy.Userdata(b"enclave=/;")))
        self._topics: dict[str, Topic] = {}
        self._nodes: list[DdsNode] = []
        self._lock = threading.Lock()
        self._info_type = message_type("rmw_dds_common/msg/ParticipantEntitiesInfo", distro=self.distro)
        self._discovery_writer = self._writer(self._info_type, DISCOVERY_TOPIC, DISCOVERY_QOS,
                                              "rmw_dds_common/msg/ParticipantEntitiesInfo")

    def topic(self, msg_type: type, dds_name: str) -> Topic:
        with self._lock:
            topic = self._topics.get(dds_name)
            if topic is None:
                topic = self._topics[dds_name] = Topic(self.participant, dds_name, msg_type)
            elif topic.data_type is not msg_type:
                raise ConfigError(f"topic {dds_name} is already used with type {topic.data_type.__name__}, "
                                  f"not {msg_type.__name__}")
            return topic

    def _writer(self, msg_type: type, dds_name: str, qos: QosSpec, ros_type: str) -> DataWriter:
        user_data = f"typehash={type_hash(ros_type)};".encode()
        return DataWriter(self.participant, self.topic(msg_type, dds_name), qos.to_cyclone(user_data=user_data))

    def writer(self, msg_type: type, topic: str, qos: QosSpec) -> DataWriter:
        return self._writer(msg_type, "rt" + topic, qos, ros_type_name(msg_type))

    def reader(self, msg_type: type, topic: str, qos: QosSpec) -> DataReader:
        user_data = f"typehash={type_hash(ros_type_name(msg_type))};".encode()
        return DataReader(self.participant, self.topic(msg_type, "rt" + topic), qos.to_cyclone(user_data=user_data))

    def add_node(self, node: DdsNode) -> None:
        with self._lock:
            self._nodes.append(node)
        self.announce()

    def remove_node(self, node: DdsNode) -> None:
        with self._lock:
            if node in self._nodes:
                self._nodes.remove(node)
        self.announce()

    def announce(self) -> None:
        """Publish which readers and writers belong to which node (latched: late joiners get the last one)."""
        gid_type = message_type("rmw_dds_common/msg/Gid", distro=self.distro)
        node_type = message_type("rmw_dds_common/msg/NodeEntitiesInfo", distro=self.distro)
        size = 24 if self.distro == "humble" else 16

        def gid(entity: Any):
            return gid_type(data=entity.guid.bytes.ljust(size, b"\0"))

        with self._lock:
            nodes = [node_type(node_namespace=n.namespace, node_name=n.get_name(),
                               reader_gid_seq=[gid(r) for r in n.readers()],
                               writer_gid_seq=[gid(w) for w in n.writers()]) for n in self._nodes]
        self._discovery_writer.write(self._info_type(gid=gid(self.participant), node_entities_info_seq=nodes))

    def close(self) -> None:
        # Deleting the participant deletes every entity it owns (readers, writers, topics).
        self.participant = None
        self._topics.clear()


@dataclass
class _Subscription:
    reader: DataReader
    condition: ReadCondition
    callback: Callable[[Any], None]
    topic: str


class _Publisher:
    def __init__(self, writer: DataWriter, topic: str):
        self.writer, self.topic_name = writer, topic

    def publish(self, msg: Any) -> None:
        self.writer.write(msg)

    def get_subscription_count(self) -> int:
        return len(self.writer.get_matched_subscriptions())


class _Timer:
    def __init__(self, period_s: float, callback: Callable[[], None], start: float):
        self.period_s, self.callback = period_s, callback
        self.next_due = start + period_s
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _TimePoint:
    """What rclpy's Clock.now() returns, as far as the cores use it."""

    def __init__(self, nanoseconds: int, time_type: type):
        self.nanoseconds, self._time_type = nanoseconds, time_type

    def to_msg(self) -> Any:
        return self._time_type(sec=self.nanoseconds // 1_000_000_000, nanosec=self.nanoseconds % 1_000_000_000)


class _Clock:
    """Wall clock (system time, as ROS stamps), or the latest /clock message with use_sim_time."""

    def __init__(self, use_sim_time: bool):
        self.use_sim_time = use_sim_time
        self.sim_nanoseconds = 0  # 0 until the first /clock message, as rclpy's ROS clock
        self._time_type = message_type("builtin_interfaces/msg/Time")

    def now(self) -> _TimePoint:
        return _TimePoint(self.sim_nanoseconds if self.use_sim_time else time.time_ns(), self._time_type)

    def seconds(self) -> float:
        return self.now().nanoseconds * 1e-9


class _Logger:
    """rclpy's logger methods over Python logging, prefixed as ROS 2 prints them."""

    def __init__(self, name: str):
        self._log = logging.getLogger(f"vla_ros.{name}")
        self._name = name

    def _emit(self, level: int, message: str) -> None:
        self._log.log(level, "[%s]: %s", self._name, message)

    def debug(self, message: str) -> None:
        self._emit(logging.DEBUG, message)

    def info(self, message: str) -> None:
        self._emit(logging.INFO, message)

    def warning(self, message: str) -> None:
        self._emit(logging.WARNING, message)

    warn = warning

    def error(self, message: str) -> None:
        self._emit(logging.ERROR, message)

    def fatal(self, message: str) -> None:
        self._emit(logging.CRITICAL, message)


class _Context:
    def __init__(self):
        self._running = True

    def ok(self) -> bool:
        return self._running

    def shutdown(self) -> None:
        self._running = False


class DdsNode:
    """A named node on `graph`; `spin()` runs its callbacks until `shutdown()`."""

    def __init__(self, name: str, graph: DdsGraph, *, namespace: str = "", use_sim_time: bool = False):
        self._name, self.namespace = name, namespace or "/"
        self.graph = graph
        self.context = _Context()
        self._logger = _Logger(name)
        self._clock = _Clock(use_sim_time)
        self._subscriptions: list[_Subscription] = []
        self._publishers: list[_Publisher] = []
        self._timers: list[_Timer] = []
        self._lock = threading.RLock()
        self._waitset = WaitSet(graph.participant)
        self._wake = GuardCondition(graph.participant)
        self._waitset.attach(self._wake)
        self.callback_errors = 0
        if use_sim_time:
            self.create_subscription(message_type("rosgraph_msgs/msg/Clock"), "/clock", self._on_clock, CLOCK_QOS)
        graph.add_node(self)

    # -- rclpy's Node API, the part the cores use ------------------------------------------------------------------

    def get_name(self) -> str:
        return self._name

    def get_logger(self) -> _Logger:
        return self._logger

    def get_clock(self) -> _Clock:
        return self._clock

    def resolve(self, topic: str) -> str:
        return fully_qualified_name(topic, namespace=self.namespace, node_name=self._name)

    def create_publisher(self, msg_type: type, topic: str, qos: QosSpec) -> _Publisher:
        name = self.resolve(topic)
        publisher = _Publisher(self.graph.writer(msg_type, name, qos), name)
        with self._lock:
            self._publishers.append(publisher)
        self.graph.announce()
        return publisher

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QosSpec) -> _Subscription:
        name = self.resolve(topic)
        reader = self.graph.reader(msg_type, name, qos)
        condition = ReadCondition(reader, ViewState.Any | InstanceState.Any | SampleState.NotRead)
        subscription = _Subscription(reader, condition, callback, name)
        with self._lock:
            self._subscriptions.append(subscription)
            self._waitset.attach(condition)
        self._wake.set(True)
        self.graph.announce()
        return subscription

    def create_timer(self, period_s: float, callback: Callable[[], None], **_rclpy_options: Any) -> _Timer:
        timer = _Timer(period_s, callback, self._timer_now())
        with self._lock:
            self._timers.append(timer)
        self._wake.set(True)
        return timer

    def destroy_timer(self, timer: _Timer) -> None:
        timer.cancel()
        with self._lock:
            if timer in self._timers:
                self._timers.remove(timer)

    def destroy_subscription(self, subscription: _Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
                self._waitset.detach(subscription.condition)
        self.graph.announce()

    def readers(self) -> list[DataReader]:
        with self._lock:
            return [s.reader for s in self._subscriptions]

    def writers(self) -> list[DataWriter]:
        with self._lock:
            return [p.writer for p in self._publishers]

    # -- executor ------------------------------------------------------------------------------------------------

    def spin(self) -> None:
        """Run subscription and timer callbacks on this thread until `shutdown()`."""
        while self.context.ok():
            self.spin_once(self._wait_time())

    def spin_once(self, timeout_s: float) -> None:
        if timeout_s > 0:
            self._waitset.wait(int(timeout_s * 1e9))
        self._wake.set(False)
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            for sample in subscription.reader.take(N=TAKE_BATCH, condition=subscription.condition):
                if isinstance(sample, InvalidSample):
                    continue  # a writer went away or an instance was disposed: news about the topic, no message
                self._run(subscription.callback, sample, where=f"subscription {subscription.topic}")
        self._run_due_timers()

    def shutdown(self) -> None:
        self.context.shutdown()
        self._wake.set(True)

    def destroy_node(self) -> None:
        self.shutdown()
        self.graph.remove_node(self)

    def _on_clock(self, msg: Any) -> None:
        self._clock.sim_nanoseconds = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec

    def _timer_now(self) -> float:
        # Timers run on the node's clock: simulated time with use_sim_time, else a steady clock.
        return self._clock.seconds() if self._clock.use_sim_time else time.monotonic()

    def _wait_time(self) -> float:
        with self._lock:
            due = [t.next_due for t in self._timers if not t.cancelled]
        if not due:
            return IDLE_WAIT_S
        if self._clock.use_sim_time:  # sim time moves with /clock messages, which wake the waitset; check often
            return SIM_TIME_POLL_S
        return max(0.0, min(min(due) - time.monotonic(), IDLE_WAIT_S))

    def _run_due_timers(self) -> None:
        now = self._timer_now()
        with self._lock:
            due = [t for t in self._timers if not t.cancelled and t.next_due <= now]
        for timer in due:
            # Like rclpy: a late timer fires once and is rescheduled from now, not in a burst to catch up.
            timer.next_due = max(timer.next_due + timer.period_s, now) if timer.period_s > 0 else now
            self._run(timer.callback, where="timer")

    def _run(self, callback: Callable, *args: Any, where: str) -> None:
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - one failing callback must not stop the node
            self.callback_errors += 1
            self._logger.error(f"{where} callback failed: {type(exc).__name__}: {exc}")
