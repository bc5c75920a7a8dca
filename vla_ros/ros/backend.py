"""Which middleware the nodes run on: rclpy (a ROS 2 install) or vla_ros's own DDS participant (pip only).

The node logic (`policy_core`, `sim_core`) is written against an rclpy-shaped node: `create_publisher`,
`create_subscription`, `create_timer`, `get_clock`, `get_logger`. With rclpy that is the rclpy node itself; without
it, `vla_ros.dds.node.DdsNode` offers the same methods on Cyclone DDS. A `Backend` adds the two things that differ:
the message classes and the QoS profiles. Services and actions exist only on rclpy; the node shells add them there.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from vla_ros.core.errors import ConfigError

BACKEND_CHOICES = ("auto", "rclpy", "dds")
BACKEND_ENV = "VLA_ROS_BACKEND"

# Every message type the nodes use on topics, by the attribute name the node code uses.
MESSAGE_TYPES = {
    "Time": "builtin_interfaces/msg/Time",
    "Header": "std_msgs/msg/Header",
    "String": "std_msgs/msg/String",
    "Bool": "std_msgs/msg/Bool",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
    "Clock": "rosgraph_msgs/msg/Clock",
    "JointState": "sensor_msgs/msg/JointState",
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "CameraInfo": "sensor_msgs/msg/CameraInfo",
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "JointTrajectoryPoint": "trajectory_msgs/msg/JointTrajectoryPoint",
    "DiagnosticArray": "diagnostic_msgs/msg/DiagnosticArray",
    "DiagnosticStatus": "diagnostic_msgs/msg/DiagnosticStatus",
    "KeyValue": "diagnostic_msgs/msg/KeyValue",
    "ActionChunk": "vla_ros/msg/ActionChunk",
    "PolicyStatus": "vla_ros/msg/PolicyStatus",
}


@dataclass(frozen=True)
class QosProfiles:
    """The QoS of each kind of topic, as backend objects."""

    command: Any  # controllers' command topics: reliable, keep last 10 (JTC ignores best-effort publishers)
    sensor_data: Any  # subscribing to sensors: best effort, keep last 5 (matches reliable publishers too)
    sensor: Any  # publishing sensors: reliable, keep last 5 (matches reliable and best-effort subscribers)
    image: Any  # publishing images: reliable, keep last 2
    clock: Any  # /clock: reliable, keep last 1
    latched: Any  # reliable, transient local, keep last 1
    default: Any  # ROS default: reliable, volatile, keep last 10


@dataclass(frozen=True)
class Backend:
    name: str
    msg: SimpleNamespace  # message classes, e.g. backend.msg.JointState
    qos: QosProfiles


def rclpy_backend() -> Backend:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    def message(full_name: str) -> type:
        package, kind, name = full_name.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)

    reliable = ReliabilityPolicy.RELIABLE
    return Backend(
        name="rclpy",
        msg=SimpleNamespace(**{attr: message(full) for attr, full in MESSAGE_TYPES.items()}),
        qos=QosProfiles(
            command=QoSProfile(depth=10, reliability=reliable),
            sensor_data=qos_profile_sensor_data,
            sensor=QoSProfile(depth=5, reliability=reliable),
            image=QoSProfile(depth=2, reliability=reliable),
            clock=QoSProfile(depth=1, reliability=reliable),
            latched=QoSProfile(depth=1, reliability=reliable, durability=DurabilityPolicy.TRANSIENT_LOCAL),
            default=QoSProfile(depth=10, reliability=reliable),
        ),
    )


def dds_backend() -> Backend:
    from vla_ros.dds.messages import message_type
    from vla_ros.dds.qos import QosSpec

    return Backend(
        name="dds",
        msg=SimpleNamespace(**{attr: message_type(full) for attr, full in MESSAGE_TYPES.items()}),
        qos=QosProfiles(
            command=QosSpec(depth=10),
            sensor_data=QosSpec(depth=5, reliable=False),
            sensor=QosSpec(depth=5),
            image=QosSpec(depth=2),
            clock=QosSpec(depth=1),
            latched=QosSpec(depth=1, transient_local=True),
            default=QosSpec(depth=10),
        ),
    )


NO_RCLPY = "rclpy does not import (no ROS 2 setup sourced)"
NO_INTERFACES = ("rclpy imports, but vla_ros's interfaces (vla_ros.msg/srv/action) do not: this vla_ros was installed "
                 "by pip, and only a colcon build generates them")


def rclpy_missing() -> str | None:
    """Why the rclpy backend cannot run here (NO_RCLPY, NO_INTERFACES), or None where it can."""
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return NO_RCLPY
    try:
        for kind in ("msg", "srv", "action"):
            importlib.import_module(f"vla_ros.{kind}")
    except ImportError:
        return NO_INTERFACES
    return None


def choose_backend(requested: str | None = None) -> str:
    """'rclpy' or 'dds': as requested (argument, else $VLA_ROS_BACKEND), or rclpy where it can run, saying why not."""
    choice = (requested or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in BACKEND_CHOICES:
        raise ConfigError(f"unknown middleware backend '{choice}': use one of {', '.join(BACKEND_CHOICES)} "
                          f"(--backend or ${BACKEND_ENV})")
    if choice == "dds":
        return choice
    missing = rclpy_missing()
    if missing is None:
        return "rclpy"
    if choice == "rclpy":
        raise ConfigError(f"backend 'rclpy' asked for, but {missing}. Fix: source your ROS 2 setup "
                          f"(/opt/ros/<distro>/setup.bash) and the install/setup.bash of a colcon workspace that "
                          f"built vla_ros, or use --backend dds to run without ROS")
    if missing is NO_INTERFACES:  # a ROS user may expect rclpy here: say why it is DDS
        logging.getLogger(__name__).warning(
            f"{missing}; using the pip-only DDS backend (for rclpy, build vla_ros with colcon and source the "
            f"workspace's install/setup.bash; --backend dds silences this)")
    return "dds"
