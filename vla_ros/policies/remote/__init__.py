"""Policies on policy servers, and `vla-ros serve`, over three protocols (docs/policy-servers.md):

- openpi's websocket protocol: protocol.py, server.py, client.py (ws://);
- Isaac-GR00T's ZMQ protocol: gr00t_protocol.py, gr00t_server.py, gr00t_client.py (gr00t://);
- OpenVLA's HTTP protocol: openvla_protocol.py, openvla_server.py, openvla_client.py, end_effector.py
  (openvla+http://).

Shared: batching.py (one model worker, concurrent requests batched), service.py (running a server),
reconnect.py (a client's view of a server that went away), cli.py (`vla-ros serve`).
Needs the `remote` extra (websockets, msgpack, pyzmq); nothing here imports them until used.
"""

from __future__ import annotations

TOKEN_ENV = "VLA_ROS_SERVE_TOKEN"  # the shared secret, read by both `vla-ros serve` and the client backend

_LAZY = {
    "connect_policy": "vla_ros.policies.remote.client",
    "RemotePolicy": "vla_ros.policies.remote.client",
    "RemoteConfig": "vla_ros.policies.remote.client",
    "PolicyServer": "vla_ros.policies.remote.server",
    "ServeConfig": "vla_ros.policies.remote.server",
    "ServerThread": "vla_ros.policies.remote.server",
    "BackgroundServer": "vla_ros.policies.remote.service",
    "Gr00tServer": "vla_ros.policies.remote.gr00t_server",
    "Gr00tRemotePolicy": "vla_ros.policies.remote.gr00t_client",
    "OpenVlaServer": "vla_ros.policies.remote.openvla_server",
    "OpenVlaRemotePolicy": "vla_ros.policies.remote.openvla_client",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
