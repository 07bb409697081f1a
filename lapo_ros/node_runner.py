"""The one lifecycle every lapo node's `main` uses: init, spin, clean exit, exit code."""
from __future__ import annotations

import signal
import threading
from typing import Callable, Sequence, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

N = TypeVar("N", bound=Node)

# How often the spin loop looks at the stop flag: the longest a signal waits to be acted on.
STOP_POLL_S = 0.1


def run_node(make_node: Callable[[], N], name: str, fatal_errors: tuple[type[BaseException], ...],
             args: Sequence[str] | None = None, cleanup: Callable[[N], None] | None = None,
             fatal_prefix: str = "") -> int:
    """Spin the node until Ctrl-C, SIGTERM or shutdown; return the process exit code.

    Ctrl-C/SIGTERM exit 0, as launch_testing's assertExitCodes expects. They only set a flag
    that the spin loop polls, so no KeyboardInterrupt is ever raised: with rclpy's own handlers
    it is raised wherever the main thread is, and inside a subscription take pybind11 turns it
    into a RuntimeError that escapes `except KeyboardInterrupt` (seen in CI). An expected error (bad parameter, bad input) is
    logged as FATAL with its message, no traceback, and exits 1. `cleanup` runs before the node
    is destroyed, with the context still up.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    executor = SingleThreadedExecutor()
    node: N | None = None
    code = 0
    try:
        node = make_node()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:
        pass
    except fatal_errors as exc:
        rclpy.logging.get_logger(name).fatal(f"{fatal_prefix}{exc}")
        code = 1
    finally:
        if node is not None:
            if cleanup is not None:
                cleanup(node)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
