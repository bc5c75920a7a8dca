"""`vla-ros bench serve`: one policy server, several robots: throughput and per-request latency, batched or not.

For each number of clients (1, 2, 4, 8 by default) and each server setting (batched: concurrent requests share a
forward pass, `--max-batch` and `--max-wait-ms`; unbatched: one request at a time), every client sends
`--requests` observations one after another, as a robot waiting for its chunk does, over loopback. Latency is
the client's wall time per request (encode, send, queue, model, reply, decode); throughput is all requests over
the wall time of the round. Clients are threads of this process, as is the server; the model runs in its one
worker thread. The machine's load average and busy fraction are reported with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from pathlib import Path

from vla_ros.bench.machine import CpuTimes, busy_fraction, load_average
from vla_ros.bench.stats import report_json, summarize_ms

PROTOCOLS = ("openpi", "gr00t")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vla_ros.policies.device import add_device_arguments

    parser.add_argument("--policy", default="builtin", help="policy spec to serve (default: %(default)s)")
    parser.add_argument("--robot", default="so101", help="robot whose observations the clients send")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="openpi", help="server protocol")
    parser.add_argument("--clients", default="1,2,4,8", help="numbers of concurrent clients (comma-separated)")
    parser.add_argument("--requests", type=int, default=12, help="requests per client and round, after 2 warm-up")
    parser.add_argument("--max-batch", type=int, default=8, help="batched rounds: most requests per forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="batched rounds: wait for company (<= 5)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    add_device_arguments(parser)


def run(*, policy_spec: str, robot: str, protocol: str, clients: list[int], requests: int, max_batch: int,
        max_wait_s: float, device: str = "auto", dtype: str = "auto", threads: int | None = None) -> dict:
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.factory import PolicyOptions, make_policy
    from vla_ros.policies.remote.batching import BatchConfig, can_batch

    embodiment = load_embodiment(robot)
    policy = make_policy(policy_spec, embodiment=embodiment,
                         options=PolicyOptions(device=device, dtype=dtype, threads=threads))
    rows = []
    try:
        for count in clients:
            for batched in (False, True):
                batch = BatchConfig(max_batch=max_batch if batched else 1, max_wait_s=max_wait_s if batched else 0.0)
                rows.append(_round(policy, embodiment, protocol, batch, count, requests))
    finally:
        policy.close()
    return {
        "policy": policy.metadata.name, "policy_description": policy.metadata.description,
        "policy_batches": can_batch(policy), "threads": policy.metadata.threads, "robot": embodiment.robot,
        "protocol": protocol, "requests_per_client": requests, "max_batch": max_batch,
        "max_wait_ms": max_wait_s * 1e3, "rounds": rows,
    }


def _round(policy, embodiment, protocol: str, batch, count: int, requests: int) -> dict:
    from vla_ros.core.adapter import EmbodimentAdapter
    from vla_ros.policies.factory import make_policy
    from vla_ros.policies.remote.cli import make_server
    from vla_ros.policies.remote.server import ServeConfig
    from vla_ros.policies.remote.service import BackgroundServer

    server = make_server(protocol, policy, ServeConfig(port=0, batch=batch), embodiment=embodiment)
    runner = BackgroundServer(server)
    latencies: list[list[float]] = [[] for _ in range(count)]
    errors: list[str] = []
    with runner:
        remotes = [make_policy(runner.url, embodiment=embodiment) for _ in range(count)]
        try:
            batches = []
            for i, remote in enumerate(remotes):
                adapter = EmbodimentAdapter(embodiment, remote.metadata.features)
                batches.append([adapter.to_policy_observation(embodiment.example_observation(
                    seed=i * 100 + k, instruction="touch the red cube"))[0] for k in range(4)])
            start_barrier = threading.Barrier(count + 1)

            def client(i: int) -> None:
                remote, observations = remotes[i], batches[i]
                try:
                    for k in range(2):  # warm-up: connections, first-use allocations
                        remote.predict_chunk(observations[k % 4])
                    start_barrier.wait()
                    for k in range(requests):
                        started = time.perf_counter()
                        remote.predict_chunk(observations[k % 4])
                        latencies[i].append((time.perf_counter() - started) * 1e3)
                except Exception as exc:  # noqa: BLE001 - reported in the results
                    errors.append(f"{type(exc).__name__}: {exc}")
                    start_barrier.abort()

            threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
            for thread in threads:
                thread.start()
            with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: its error is reported
                start_barrier.wait()
            batcher = getattr(server, "_batcher", None)
            counted = (batcher.requests_run, batcher.batches_run) if batcher is not None else (0, 0)
            cpu_start, started = CpuTimes.now(), time.perf_counter()
            for thread in threads:
                thread.join()
            wall_s = time.perf_counter() - started
            cpu_end = CpuTimes.now()
            if batcher is not None:  # the timed requests only, not the warm-up
                counted = (batcher.requests_run - counted[0], batcher.batches_run - counted[1])
        finally:
            for remote in remotes:
                remote.close()
    done = sum(len(values) for values in latencies)
    return {
        "clients": count, "batched": batch.max_batch > 1,
        "throughput_per_s": round(done / wall_s, 3) if wall_s > 0 else 0.0,
        "latency_ms": summarize_ms([ms for values in latencies for ms in values]),
        "mean_batch_size": round(counted[0] / counted[1], 3) if counted[1] else None,
        "load_average_1min": load_average(), "cpu_busy_fraction": busy_fraction(cpu_start, cpu_end),
        "errors": errors[:3],
    }


def table(results: dict) -> str:
    """The rounds as a Markdown table (docs/benchmarks.md)."""
    lines = ["| clients | server | throughput (req/s) | latency p50 (ms) | latency p99 (ms) | mean batch "
             "| load (1 min) |", "|---|---|---|---|---|---|---|"]
    for row in results["rounds"]:
        lines.append(f"| {row['clients']} | {'batched' if row['batched'] else 'one at a time'} | "
                     f"{row['throughput_per_s']:.2f} | {row['latency_ms']['p50']:.0f} | "
                     f"{row['latency_ms']['p99']:.0f} | {row['mean_batch_size'] or 0:.2f} | "
                     f"{row['load_average_1min'] if row['load_average_1min'] is not None else 'n/a'} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import sys

    from vla_ros.core.errors import ConfigError

    try:
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        clients = []
    if not clients or min(clients) < 1 or args.requests < 1:
        raise ConfigError(f"--clients needs positive whole numbers (got {args.clients!r}) and --requests >= 1")
    results = run(policy_spec=args.policy, robot=args.robot, protocol=args.protocol, clients=clients,
                  requests=args.requests, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1e3,
                  device=args.device, dtype=args.dtype, threads=args.threads)
    report_json(results, args.json)
    print("\n" + table(results), file=sys.stderr)
    return 0 if not any(row["errors"] for row in results["rounds"]) else 1

