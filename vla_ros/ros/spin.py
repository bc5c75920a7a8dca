"""The `main` of every rclpy node executable: build the node, spin it, shut down cleanly."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from vla_ros.core.errors import VlaRosError

# How often the spin loop looks at the stop flag: the longest a Ctrl-C waits before shutdown starts.
STOP_CHECK_S = 0.1


def run_node(make_node: Callable[[], Node], name: str, *, args: list[str] | None = None,
             executor: Callable[[], Executor] = SingleThreadedExecutor, exit_after: bool = False) -> None:
    """Spin `make_node()` until Ctrl-C (SIGINT) or SIGTERM, then shut down in order and return (exit 0).

    A configuration error while building the node ends the process with the message (exit 1), no traceback.
    Shutdown order: stop spinning (callbacks in flight finish), let the node stop its own work while the ROS context is
    still valid (`on_process_exit()`, where the node has one: the policy node holds the arm and stops its timers and
    inference thread), destroy the node, shut the context down. A terminal's Ctrl-C reaches every process of a launch
    and launch forwards it once more: signals after the first are ignored.

    `exit_after`: once all that is done, end the process at once (exit 0) instead of returning: the interpreter's own
    teardown of a loaded model (torch) takes 7-12 s on a busy 2-core machine, past launch's 5 s before it escalates
    to SIGTERM and reports the node as failing to terminate.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    try:
        try:
            node = make_node()
        except (VlaRosError, ParameterException) as exc:
            rclpy.logging.get_logger(name).fatal(str(exc))
            raise SystemExit(1) from None
        spinner = executor()
        spinner.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():
                spinner.spin_once(timeout_sec=STOP_CHECK_S)
        except ExternalShutdownException:
            pass
        finally:
            # Ignored from here on, as the process ends: Python's own finalisation resets a handler it runs to the
            # default (die of the signal), and a terminal's Ctrl-C is followed by launch's own SIGINT.
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_IGN)
            # rclpy 7.1's Executor.shutdown() neither waits for callbacks already handed to MultiThreadedExecutor's
            # thread pool nor keeps the guard condition they trigger when done: let them finish first.
            pool = getattr(spinner, "_executor", None)
            if pool is not None:
                pool.shutdown(wait=True)
            spinner.shutdown()
            exit_hook = getattr(node, "on_process_exit", None)
            if exit_hook is not None and rclpy.ok():
                exit_hook()
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    if exit_after:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
