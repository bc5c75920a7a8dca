"""Policies over openpi's websocket protocol: `vla-ros serve` (server.py) and the ws:// client backend (client.py).

Needs the `remote` extra (websockets, msgpack); nothing here imports them until used.
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
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
