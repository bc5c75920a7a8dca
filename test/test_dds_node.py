"""DdsNode on real Cyclone DDS (loopback, a domain per test): what a ROS 2 graph sees of it, and its executor.

Wire details checked against what rmw_cyclonedds_cpp expects (shared/reference/ros2-wire.md): `rt/` topic names,
`pkg::msg::dds_::Name_` type names, participant user data `enclave=/;`, endpoint user data `typehash=RIHS01_...;`,
and ros_discovery_info naming our node with the GUIDs of its readers and writers. A plain cyclonedds participant
reads DDS's own discovery data (the builtin topics), independent of our code.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")

from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsParticipant, BuiltinTopicDcpsPublication  # noqa: E402
from cyclonedds.core import Policy  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from polling import wait_for

from vla_ros.core.errors import ConfigError  # noqa: E402
from vla_ros.dds.messages import message_type, type_hash  # noqa: E402
from vla_ros.dds.node import DdsGraph, DdsNode, fully_qualified_name  # noqa: E402
from vla_ros.dds.qos import QosSpec  # noqa: E402

LOOPBACK_CONFIG = Path(__file__).resolve().parents[1] / "config" / "cyclonedds_loopback.xml"
String = message_type("std_msgs/msg/String")


@pytest.fixture
def graph(monkeypatch, request):
    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK_CONFIG.as_uri())
    domain_id = {"test_what_ros_2_tools_see": 63, "test_messages_flow_between_nodes": 64,
                 "test_timers_follow_sim_time": 65}[request.node.name]
    graph = DdsGraph(domain_id, distro="jazzy")
    yield graph
    graph.close()


def test_names_resolve_as_in_ros_2():
    assert fully_qualified_name("~/status", namespace="/", node_name="vla_policy") == "/vla_policy/status"
    assert fully_qualified_name("~/status", namespace="/arm", node_name="vla_policy") == "/arm/vla_policy/status"
    assert fully_qualified_name("joint_states", namespace="/arm", node_name="n") == "/arm/joint_states"
    assert fully_qualified_name("/clock", namespace="/arm", node_name="n") == "/clock"
    with pytest.raises(ConfigError, match="valid ROS 2 topic name"):
        fully_qualified_name("/a//b", namespace="/", node_name="n")


def test_what_ros_2_tools_see(graph):
    node = DdsNode("probe_node", graph)
    publisher = node.create_publisher(String, "~/chatter", QosSpec())
    subscription = node.create_subscription(String, "/heard", lambda msg: None, QosSpec(reliable=False))
    observer = DomainParticipant(graph.domain_id)
    participants = BuiltinDataReader(observer, BuiltinTopicDcpsParticipant)
    publications = BuiltinDataReader(observer, BuiltinTopicDcpsPublication)
    ours = {}

    def discovered() -> bool:
        for sample in publications.take(N=100):
            ours[sample.topic_name] = sample
        return "rt/probe_node/chatter" in ours and "ros_discovery_info" in ours

    assert wait_for(discovered), sorted(ours)
    chatter = ours["rt/probe_node/chatter"]
    assert chatter.type_name == "std_msgs::msg::dds_::String_"
    assert chatter.qos[Policy.Userdata].data == f"typehash={type_hash('std_msgs/msg/String')};".encode()
    assert chatter.key == publisher.writer.guid
    user_data = {}

    def participant_seen() -> bool:
        for sample in participants.take(N=100):
            policy = sample.qos[Policy.Userdata]
            user_data[sample.key] = policy.data if policy is not None else None
        return graph.participant.guid in user_data

    assert wait_for(participant_seen)
    assert user_data[graph.participant.guid] == b"enclave=/;"

    # ros_discovery_info: rmw_dds_common/ParticipantEntitiesInfo, latched, naming the node and its endpoints.
    info_type = message_type("rmw_dds_common/msg/ParticipantEntitiesInfo")
    reader = DataReader(observer, Topic(observer, "ros_discovery_info", info_type),
                        QosSpec(depth=1, transient_local=True).to_cyclone())
    infos = []
    assert wait_for(lambda: infos.extend(reader.take(N=10)) or any(
        i.gid.data == graph.participant.guid.bytes for i in infos))
    info = [i for i in infos if i.gid.data == graph.participant.guid.bytes][-1]
    [entry] = [n for n in info.node_entities_info_seq if n.node_name == "probe_node"]
    assert entry.node_namespace == "/"
    assert publisher.writer.guid.bytes in [g.data for g in entry.writer_gid_seq]
    assert subscription.reader.guid.bytes in [g.data for g in entry.reader_gid_seq]
    node.destroy_node()


def test_messages_flow_between_nodes(graph):
    talker, listener = DdsNode("talker", graph), DdsNode("listener", graph)
    JointState = message_type("sensor_msgs/msg/JointState")  # noqa: N806 - a message class
    received = []
    # Sensor-data QoS (best effort) on the subscriber matches a reliable publisher, as in ROS 2.
    listener.create_subscription(JointState, "/joint_states", received.append, QosSpec(depth=5, reliable=False))
    publisher = talker.create_publisher(JointState, "/joint_states", QosSpec(depth=5))
    thread = threading.Thread(target=listener.spin, daemon=True)
    thread.start()
    assert wait_for(lambda: publisher.get_subscription_count() == 1)
    for i in range(20):
        publisher.publish(JointState(name=["shoulder_pan"], position=[0.1 * i]))
        time.sleep(0.005)
    assert wait_for(lambda: len(received) == 20), len(received)
    assert [m.position[0] for m in received] == pytest.approx([0.1 * i for i in range(20)])

    # A failing callback is counted and logged; the node goes on taking messages.
    def explode(msg):
        raise ValueError("boom")

    listener.create_subscription(String, "/bad", explode, QosSpec())
    bad = talker.create_publisher(String, "/bad", QosSpec())
    assert wait_for(lambda: bad.get_subscription_count() == 1)
    bad.publish(String(data="x"))
    assert wait_for(lambda: listener.callback_errors == 1)
    publisher.publish(JointState(name=["shoulder_pan"], position=[9.0]))
    assert wait_for(lambda: len(received) == 21)
    listener.shutdown()
    thread.join(timeout=5.0)
    assert not thread.is_alive()


def test_timers_follow_sim_time(graph):
    node = DdsNode("sim_time_node", graph, use_sim_time=True)
    clock_node = DdsNode("clock", graph)
    Clock = message_type("rosgraph_msgs/msg/Clock")  # noqa: N806 - a message class
    clock = clock_node.create_publisher(Clock, "/clock", QosSpec(depth=1))
    fired = []
    node.create_timer(0.1, lambda: fired.append(node.get_clock().now().nanoseconds))
    thread = threading.Thread(target=node.spin, daemon=True)
    thread.start()
    assert wait_for(lambda: clock.get_subscription_count() == 1)
    time.sleep(0.3)
    assert fired == [], "a sim-time timer must not run before /clock moves"
    for step in range(1, 51):  # 0.5 s of simulated time, published faster than real time
        stamp = message_type("builtin_interfaces/msg/Time")(sec=0, nanosec=step * 10_000_000)
        clock.publish(Clock(clock=stamp))
        time.sleep(0.002)
    assert wait_for(lambda: node.get_clock().now().nanoseconds == 500_000_000)
    assert wait_for(lambda: len(fired) >= 4)
    assert 4 <= len(fired) <= 5  # every 0.1 s of simulated time: at 0.1, 0.2, 0.3, 0.4 (0.5)
    node.shutdown()
    thread.join(timeout=5.0)
