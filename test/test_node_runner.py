"""run_node's signal handling, in a child process that signals itself at a known point.

A signal must never interrupt a callback half-way (with rclpy's own handlers a KeyboardInterrupt
lands wherever the main thread is; inside a subscription take pybind11 turns it into a
RuntimeError that crashed the recorder's exit in CI). It must end the spin loop after the
callback, run `cleanup` with the context still up and exit 0, and the teardown after cleanup
(destroying the node and the context) must not keep the process alive past its deadline.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import rclpy
    from rclpy.node import Node
    from lapo_ros.node_runner import run_node

    class SelfSignalling(Node):
        def __init__(self):
            super().__init__("self_signalling")
            self.ticks = 0
            self.create_timer(0.01, self.tick)

        def tick(self):
            self.ticks += 1
            if self.ticks == 3:
                os.kill(os.getpid(), signal.{sig})
                time.sleep(0.2)  # a signal handler that raises would interrupt this
                print("callback completed after the signal", flush=True)

    def cleanup(node):
        print(f"cleanup: ticks={{node.ticks}} context_ok={{node.context.ok()}}", flush=True)

    sys.exit(run_node(SelfSignalling, "self_signalling", (ValueError,), [], cleanup=cleanup))
""")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_spin_after_the_running_callback(sig: str) -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(1 + os.getpid() % 100))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(sig=sig)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    lines = proc.stdout.splitlines()
    # The callback ran to its end, no further tick ran, and cleanup saw a live context.
    assert lines == ["callback completed after the signal", "cleanup: ticks=3 context_ok=True"], out


HANGING_TEARDOWN = textwrap.dedent("""
    import os, signal, sys, time
    from rclpy.node import Node
    from lapo_ros.node_runner import run_node

    class HangsOnDestroy(Node):
        def __init__(self):
            super().__init__("hangs_on_destroy")
            self.create_timer(0.01, lambda: os.kill(os.getpid(), signal.SIGINT))

        def destroy_node(self):
            time.sleep(120)  # a middleware teardown that never returns

    sys.exit(run_node(HangsOnDestroy, "hangs_on_destroy", (), [], teardown_timeout=1.0,
                      cleanup=lambda node: print("cleanup ran", flush=True)))
""")


def test_a_hanging_teardown_ends_the_process_after_its_deadline() -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(1 + os.getpid() % 100))
    proc = subprocess.run([sys.executable, "-c", HANGING_TEARDOWN], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # the hang itself lasts 120 s
    out = proc.stdout + proc.stderr
    # Cleanup (the commands stopped, the files closed) ran first; the process then left at its
    # deadline, exit 0 as after any Ctrl-C, naming the hang and showing where it was stuck.
    assert proc.returncode == 0, out
    assert proc.stdout.splitlines() == ["cleanup ran"], out
    assert "SIGINT received: stopping" in proc.stderr, out
    assert "shutting down ROS took over 1 s" in proc.stderr, out
    assert "in destroy_node" in proc.stderr, out
