"""The one lifecycle every lapo node's `main` uses: init, spin, clean exit, exit code."""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from typing import Callable, Sequence, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

N = TypeVar("N", bound=Node)

# How often the spin loop looks at the stop flag: the longest a signal waits to be acted on.
STOP_POLL_S = 0.1
# How long destroying the node and shutting the context down may take after cleanup (well under a
# second normally). Once, in CI, the policy node did not exit within 20 s of SIGINT and logged
# nothing after it; a node that outlives its Ctrl-C keeps launch waiting and then gets SIGKILL.
# Cleanup has stopped the commands and closed the files by then, so the process exits anyway,
# with every thread's stack logged to find the hang by.
TEARDOWN_TIMEOUT_S = 5.0


def run_node(make_node: Callable[[], N], name: str, fatal_errors: tuple[type[BaseException], ...],
             args: Sequence[str] | None = None, cleanup: Callable[[N], None] | None = None,
             fatal_prefix: str = "", teardown_timeout: float = TEARDOWN_TIMEOUT_S) -> int:
    """Spin the node until Ctrl-C, SIGTERM or shutdown; return the process exit code.

    Ctrl-C/SIGTERM exit 0, as launch_testing's assertExitCodes expects. They only set a flag
    that the spin loop polls, so no KeyboardInterrupt is ever raised: with rclpy's own handlers
    it is raised wherever the main thread is, and inside a subscription take pybind11 turns it
    into a RuntimeError that escapes `except KeyboardInterrupt` (seen in CI). An expected error (bad parameter, bad input) is
    logged as FATAL with its message, no traceback, and exits 1. `cleanup` runs before the node
    is destroyed, with the context still up; the teardown after it gets `teardown_timeout` seconds.
    """
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
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
    except BaseException:
        code = 1  # what the deadline exits with if the teardown hangs while this propagates
        raise
    finally:
        if received:
            rclpy.logging.get_logger(name).info(f"{received[0]} received: stopping")
        if node is not None and cleanup is not None:
            cleanup(node)
        deadline = _exit_after(teardown_timeout, name, code)
        try:
            if node is not None:
                executor.remove_node(node)
                node.destroy_node()
            executor.shutdown()
            rclpy.try_shutdown()
        finally:
            deadline.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _exit_after(timeout: float, name: str, code: int) -> threading.Timer:
    """A started timer that, unless cancelled first, logs every thread's stack and ends the process."""
    def expire() -> None:
        rclpy.logging.get_logger(name).error(
            f"destroying the node and shutting down ROS took over {timeout:g} s: exiting with code {code} "
            "without waiting for it; the stack of every thread follows")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return timer
