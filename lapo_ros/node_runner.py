"""The one lifecycle every lapo node's `main` uses: init, spin, clean exit, exit code."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def run_node(make_node: Callable[[], N], name: str, fatal_errors: tuple[type[BaseException], ...],
             args: Sequence[str] | None = None, cleanup: Callable[[N], None] | None = None,
             fatal_prefix: str = "") -> int:
    """Spin the node until Ctrl-C, SIGTERM or shutdown; return the process exit code.

    Ctrl-C/SIGTERM (rclpy's handlers shut the context down) exit 0, as launch_testing's
    assertExitCodes expects. An expected error (bad parameter, bad input) is logged as FATAL with
    its message, no traceback, and exits 1. `cleanup` runs before the node is destroyed.
    """
    rclpy.init(args=args)
    node: N | None = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except fatal_errors as exc:
        rclpy.logging.get_logger(name).fatal(f"{fatal_prefix}{exc}")
        code = 1
    finally:
        if node is not None:
            if cleanup is not None:
                cleanup(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return code
