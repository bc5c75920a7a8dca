"""The `main` of every rclpy node executable: build the node, spin it, shut down cleanly."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from vla_ros.core.errors import VlaRosError


def run_node(make_node: Callable[[], Node], name: str, *, args: list[str] | None = None,
             executor: Callable[[], Executor] = SingleThreadedExecutor) -> None:
    """A configuration error while building the node ends the process with the message (exit 1), no traceback."""
    rclpy.init(args=args)
    try:
        try:
            node = make_node()
        except (VlaRosError, ParameterException) as exc:
            rclpy.logging.get_logger(name).fatal(str(exc))
            raise SystemExit(1) from None
        spinner = executor()
        spinner.add_node(node)
        try:
            spinner.spin()
        finally:
            spinner.shutdown()
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
