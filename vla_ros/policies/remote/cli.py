"""`vla-ros serve`: one policy on a port, for robots on other machines and for the clients users already have:
openpi's websocket protocol (`openpi-client`), Isaac-GR00T's ZMQ protocol, or OpenVLA's HTTP `/act`.

Kept apart from the servers so that building the CLI's parser needs neither websockets, msgpack nor pyzmq.
"""

from __future__ import annotations

import argparse
import logging
import os

from vla_ros.policies.device import add_device_arguments
from vla_ros.policies.remote import TOKEN_ENV

logger = logging.getLogger("vla_ros.serve")

PROTOCOLS = ("openpi", "gr00t", "openvla")
DEFAULT_PORTS = {"openpi": 8000, "gr00t": 5555, "openvla": 8000}  # each project's own default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True,
                        help="policy spec: builtin or a checkpoint directory (expert needs the simulator)")
    parser.add_argument("--robot", required=True,
                        help="robot config name or YAML file: the policy's units, rates and cameras come from it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for all)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="openpi",
                        help="openpi: websocket (openpi-client, ws:// specs); gr00t: Isaac-GR00T's ZMQ policy server "
                             "(gr00t:// specs); openvla: OpenVLA's HTTP POST /act (openvla+http:// specs) "
                             "(default: %(default)s)")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default: the protocol's own: openpi 8000, gr00t 5555, openvla 8000)")
    parser.add_argument("--token", default=None,
                        help=f"shared secret clients must send (default: ${TOKEN_ENV}; prefer the variable: "
                             "arguments are visible to other users in the process list)")
    parser.add_argument("--max-message-mb", type=float, default=32.0,
                        help="largest observation accepted, in MiB (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="concurrent requests run in one forward pass, where the policy allows (1: never batch; "
                             "default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="how long a request waits for others to share its forward pass, at most 5 ms "
                             "(default: %(default)s)")
    parser.add_argument("--embodiment-tag", default=None,
                        help="gr00t: the embodiment tag this server stands for, logged with its modality keys "
                             "(GR00T's protocol does not carry it; default: new_embodiment)")
    parser.add_argument("--openvla-chunked", action="store_true",
                        help="openvla: answer with the whole chunk (OpenVLA-OFT) instead of one action (OpenVLA)")
    add_device_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.errors import ConfigError
    from vla_ros.policies.factory import PolicyOptions, make_policy

    spec = args.policy.strip()
    if spec == "expert":
        raise ConfigError("policy 'expert' reads the simulator's ground truth and cannot be served: serve a learned "
                          "policy (builtin or a checkpoint directory)")
    if spec.startswith(("ws://", "wss://", "gr00t://", "openvla+http://")):
        raise ConfigError(f"'{spec}' is already a policy server: point the clients at it directly")
    if args.embodiment_tag is not None and args.protocol != "gr00t":
        raise ConfigError("--embodiment-tag applies to --protocol gr00t only")
    if args.openvla_chunked and args.protocol != "openvla":
        raise ConfigError("--openvla-chunked applies to --protocol openvla only")
    from vla_ros.policies.remote.batching import BatchConfig  # needs the remote extra
    from vla_ros.policies.remote.server import ServeConfig

    config = ServeConfig(host=args.host, port=DEFAULT_PORTS[args.protocol] if args.port is None else args.port,
                         token=args.token or os.environ.get(TOKEN_ENV) or None,
                         max_message_bytes=int(args.max_message_mb * 2**20),
                         batch=BatchConfig(max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1e3))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embodiment = load_embodiment(args.robot)
    options = PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads)
    policy = make_policy(spec, embodiment=embodiment, options=options)
    try:
        server = make_server(args.protocol, policy, config, embodiment=embodiment,
                             embodiment_tag=args.embodiment_tag, openvla_chunked=args.openvla_chunked)
        from vla_ros.policies.remote.service import run_until_signalled

        name = policy.metadata.name
        health = f" (health: http://{config.host}:{{}}/healthz)" if args.protocol != "gr00t" else ""
        run_until_signalled(server, on_listening=lambda port: logger.info(
            "serving policy '%s' on %s, %s protocol%s%s", name, server.url, args.protocol, health.format(port),
            ", token required" if config.token else ""))
        logger.info("stopped after %d requests", server.requests_served)
    finally:
        policy.close()
    return 0


def make_server(protocol: str, policy, config, *, embodiment, embodiment_tag: str | None = None,
                openvla_chunked: bool = False):
    """The server of `protocol` for `policy` (library code for the CLI and the benchmarks)."""
    if protocol == "openpi":
        from vla_ros.policies.remote.server import PolicyServer

        return PolicyServer(policy, config, robot=embodiment.robot)
    if protocol == "gr00t":
        from vla_ros.policies.remote.gr00t_server import DEFAULT_EMBODIMENT_TAG, Gr00tServer

        return Gr00tServer(policy, config, embodiment=embodiment,
                           embodiment_tag=embodiment_tag or DEFAULT_EMBODIMENT_TAG)
    if protocol == "openvla":
        from vla_ros.policies.remote.openvla_server import OpenVlaServer

        return OpenVlaServer(policy, config, embodiment=embodiment, chunked=openvla_chunked)
    from vla_ros.core.errors import ConfigError

    raise ConfigError(f"unknown protocol '{protocol}': choose one of {', '.join(PROTOCOLS)}")
