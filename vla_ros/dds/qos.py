"""QoS as ROS 2 sets it on rmw_cyclonedds_cpp, so that our endpoints match ROS 2 nodes' ones."""

from __future__ import annotations

from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.util import duration

# rmw_cyclonedds_cpp: reliable writers block at most 100 ms when the history is full (RMW's default).
MAX_BLOCKING = duration(milliseconds=100)


@dataclass(frozen=True)
class QosSpec:
    """A ROS 2 QoS profile: keep last `depth`; reliable or best effort; volatile or transient local."""

    depth: int = 10
    reliable: bool = True
    transient_local: bool = False

    def to_cyclone(self, *, user_data: bytes | None = None) -> Qos:
        policies = [
            Policy.Reliability.Reliable(MAX_BLOCKING) if self.reliable else Policy.Reliability.BestEffort,
            Policy.Durability.TransientLocal if self.transient_local else Policy.Durability.Volatile,
            Policy.History.KeepLast(self.depth),
            # Plain CDR (XCDR1), which rmw_cyclonedds_cpp writes and expects.
            Policy.DataRepresentation(use_cdrv0_representation=True),
            # ROS 2 never disposes instances when a writer goes away (rmw_cyclonedds sets autodispose off).
            Policy.WriterDataLifecycle(autodispose=False),
        ]
        if user_data is not None:
            policies.append(Policy.Userdata(user_data))
        return Qos(*policies)
