"""`vla-ros serve`: one policy on a websocket port, for robots on other machines and for `openpi-client`.

Kept apart from server.py so that building the CLI's parser needs neither websockets nor msgpack.
"""

from __future__ import annotations

import argparse
import logging
import os

from vla_ros.policies.device import add_device_arguments
from vla_ros.policies.remote import TOKEN_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True,
                        help="policy spec: builtin or a checkpoint directory (expert needs the simulator)")
    parser.add_argument("--robot", required=True,
                        help="robot config name or YAML file: the policy's units, rates and cameras come from it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s, openpi's)")
    parser.add_argument("--token", default=None,
                        help=f"shared secret clients must send (default: ${TOKEN_ENV}; prefer the variable: "
                             "arguments are visible to other users in the process list)")
    parser.add_argument("--max-message-mb", type=float, default=32.0,
                        help="largest observation accepted, in MiB (default: %(default)s)")
    add_device_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.errors import ConfigError
    from vla_ros.policies.factory import PolicyOptions, make_policy

    spec = args.policy.strip()
    if spec == "expert":
        raise ConfigError("policy 'expert' reads the simulator's ground truth and cannot be served: serve a learned "
                          "policy (builtin or a checkpoint directory)")
    if spec.startswith(("ws://", "wss://")):
        raise ConfigError(f"'{spec}' is already a policy server: point the clients at it directly")
    from vla_ros.policies.remote.server import PolicyServer, ServeConfig  # needs the remote extra

    config = ServeConfig(host=args.host, port=args.port, token=args.token or os.environ.get(TOKEN_ENV) or None,
                         max_message_bytes=int(args.max_message_mb * 2**20))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embodiment = load_embodiment(args.robot)
    options = PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads)
    policy = make_policy(spec, embodiment=embodiment, options=options)
    try:
        PolicyServer(policy, config, robot=embodiment.robot).run()
    finally:
        policy.close()
    return 0
