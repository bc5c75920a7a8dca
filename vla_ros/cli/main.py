"""`vla-ros`: demo, nodes, policy server and benchmarks. Subcommands import their heavy dependencies only when run."""

from __future__ import annotations

import argparse
import sys

from vla_ros import __version__
from vla_ros.core.errors import VlaRosError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it or there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if no_default or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from vla_ros.bench import (
        closed_loop,
        generalization,
        grounding,
        inference,
        jtc_stream,
        load,
        mock_closed_loop,
        overhead,
        soak,
        transport,
    )
    from vla_ros.bench import serve as serve_bench
    from vla_ros.cli import demo, nodes, record
    from vla_ros.policies import finetune
    from vla_ros.policies.remote import cli as serve

    parser = argparse.ArgumentParser(prog="vla-ros", description="Drive ROS 2 robot arms with VLA policies.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"vla-ros {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    demo_parser = commands.add_parser("demo", help="closed loop in the MuJoCo simulator, with video and plot")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.main)

    serve_parser = commands.add_parser("serve", help="serve a policy over openpi's, Isaac-GR00T's or OpenVLA's "
                                       "protocol")
    serve.add_arguments(serve_parser)
    serve_parser.set_defaults(run=serve.main)

    finetune_parser = commands.add_parser("finetune", help="train a SmolVLA checkpoint further on a LeRobot dataset")
    finetune.add_arguments(finetune_parser)
    finetune_parser.set_defaults(run=finetune.main)

    record_parser = commands.add_parser("record", help="record demonstrations as a LeRobot v3 dataset")
    record.add_arguments(record_parser)
    record_parser.set_defaults(run=record.main)

    run_parser = commands.add_parser("run", help="the policy node, on rclpy or (no ROS installed) Cyclone DDS")
    nodes.add_run_arguments(run_parser)
    run_parser.set_defaults(run=nodes.run_main)

    sim_parser = commands.add_parser("sim", help="the MuJoCo robot node, on rclpy or (no ROS installed) Cyclone DDS")
    nodes.add_sim_arguments(sim_parser)
    sim_parser.set_defaults(run=nodes.sim_main)

    bench_parser = commands.add_parser("bench", help="benchmarks that print JSON figures")
    benches = bench_parser.add_subparsers(dest="bench", required=True, parser_class=_SubParser)
    overhead_parser = benches.add_parser("overhead", help="per-step pipeline overhead, everything but the model")
    overhead.add_arguments(overhead_parser)
    overhead_parser.set_defaults(run=overhead.main)
    closed_loop_parser = benches.add_parser("closed-loop", help="sync vs async inference and merge strategies, "
                                            "with added latency: success, stall time, jerk at seams")
    closed_loop.add_arguments(closed_loop_parser)
    closed_loop_parser.set_defaults(run=closed_loop.main)
    load_parser = benches.add_parser("load", help="the demo's closed loop on the machine as it is and beside a "
                                     "busy loop on every core: success, latency, stall side by side")
    load.add_arguments(load_parser)
    load_parser.set_defaults(run=load.main)
    grounding_parser = benches.add_parser("grounding", help="does the policy's first chunk head for the cube the "
                                          "instruction names? (offline, seconds)")
    grounding.add_arguments(grounding_parser)
    grounding_parser.set_defaults(run=grounding.main)
    inference_parser = benches.add_parser("inference", help="time per action chunk and load time of SmolVLA- "
                                          "and pi0-size models")
    inference.add_arguments(inference_parser)
    inference_parser.set_defaults(run=inference.main)
    transport_parser = benches.add_parser("transport", help="pip-only DDS between two processes: image and "
                                          "joint state latency, throughput and loss")
    transport.add_arguments(transport_parser)
    transport_parser.set_defaults(run=transport.main)
    serve_bench_parser = benches.add_parser("serve", help="one policy server, several robots: throughput and "
                                            "latency, batched vs one request at a time")
    serve_bench.add_arguments(serve_bench_parser)
    serve_bench_parser.set_defaults(run=serve_bench.main)
    soak_parser = benches.add_parser("soak", help="the policy node's logic driving the simulator in real time for "
                                     "a long time: memory growth and missed control deadlines")
    soak.add_arguments(soak_parser)
    soak_parser.set_defaults(run=soak.main)
    jtc_parser = benches.add_parser("jtc", help="the command stream through ros2_control's real "
                                    "joint_trajectory_controller on mock hardware (needs ROS 2 and ros2_control)")
    jtc_stream.add_arguments(jtc_parser)
    jtc_parser.set_defaults(run=jtc_stream.main)
    generalization_parser = benches.add_parser("generalization", help="success on what training never showed: "
                                               "held-out layouts, an unseen colour, distractors, lighting, camera "
                                               "pose, held-out arms")
    generalization.add_arguments(generalization_parser)
    generalization_parser.set_defaults(run=generalization.main)
    mock_loop_parser = benches.add_parser("mock-closed-loop", help="a policy closing the loop through the real "
                                          "controllers: <robot>.launch.py sim:=mock, episodes and success")
    mock_closed_loop.add_arguments(mock_loop_parser)
    mock_loop_parser.set_defaults(run=mock_closed_loop.main)
    return parser


class _SubParser(argparse.ArgumentParser):
    """Every subcommand's parser shows defaults in its --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except VlaRosError as exc:
        # Operator-facing: the message already says what is wrong and what to do; a traceback would bury it.
        print(f"vla-ros: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
