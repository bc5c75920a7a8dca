"""rosbag2 (sqlite3 or mcap) and ROS 1 bags -> LeRobot episodes, one bag per episode, read with rosbags.

The bag's messages go to the same handlers and `EpisodeRecorder` as live topics, in the order they were logged (the
caller passes the recorder node's `RecorderInputs` handlers, so datasets/ needs nothing from ros/). The recorder
ticks at the control rate on the clock of the messages' header stamps (simulated time in a bag recorded from a
simulator, wall time from a real robot), so a converted episode holds the frames the live recorder would have
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vla_ros.core.errors import ConfigError
from vla_ros.core.recording import EpisodeRecorder

# (topic, deserialized message) -> None: feeds one message to the recorder
MessageHandler = Callable[[str, Any], None]


def convert_bag(bag: Path, handlers: Mapping[str, MessageHandler], recorder: EpisodeRecorder, *, instruction: str,
                control_period_s: float) -> int | None:
    """Record `bag` as one episode of `instruction`; returns its index, or None if no frame could be made.

    `handlers`: the handler of each topic to read; every one of them must be in the bag.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        reader = AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_JAZZY))
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own error types per format
        raise ConfigError(f"cannot open bag {bag}: {exc}") from None
    with reader:
        connections = [c for c in reader.connections if c.topic in handlers]
        missing = sorted(set(handlers) - {c.topic for c in connections})
        if missing:
            present = sorted({c.topic for c in reader.connections})
            raise ConfigError(f"bag {bag} has no messages on {missing}; it has {present}. Check the robot config's "
                              "topics (or --leader-topic)")
        recorder.start(instruction)
        next_tick = None
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            handlers[connection.topic](connection.topic, msg)
            stamp = _stamp(msg)
            if stamp is None:
                continue
            if next_tick is None:
                next_tick = stamp
            while next_tick <= stamp:
                recorder.tick(next_tick)
                next_tick += control_period_s
    return recorder.stop()


def _stamp(msg) -> float | None:
    header = getattr(msg, "header", None)
    if header is None:
        return None
    seconds = header.stamp.sec + header.stamp.nanosec * 1e-9
    return seconds if seconds > 0 else None  # header stamp 0 (streamed commands): no clock information
