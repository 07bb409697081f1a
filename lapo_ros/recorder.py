"""Demonstration recorder: cameras + joint states + commanded actions -> one HDF5 file per episode.

A timer samples the newest message of every stream every 1/record_rate s (node clock, so it
follows /clock under use_sim_time); a sample with a missing or stale stream (older than max_age)
is skipped and counted per stream. Samples go through a bounded queue to a writer thread
(`lapo_learning.episode_writer.BackgroundWriter`), so callbacks never wait for the disk; a full
queue drops samples and says so in the log and in the status.

Services (relative to the node): `~/start` (std_srvs/Trigger), `~/stop` (std_srvs/SetBool:
data=True success, False failure), `~/discard` (std_srvs/Trigger). Status: a periodic log line
and `~/status` (diagnostic_msgs/DiagnosticArray).

    python -m lapo_ros.recorder --ros-args --params-file config/recorder.yaml -p output_dir:=/data/demos
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from lapo_learning.episode_writer import COMPRESSIONS, BackgroundWriter, EpisodeConfig
from lapo_ros.node_runner import run_node
from lapo_ros.observation_inputs import (InputError, ObservationInputs, ParameterError,
                                         declare_input_parameters)
from lapo_ros.stream_sampler import Sample

EPISODE_PATTERN = re.compile(r"^episode_(\d+)\.hdf5$")


@dataclass(frozen=True)
class RecorderParams:
    output_dir: Path
    record_rate: float
    auto_start: bool
    max_episode_steps: int  # 0 = no limit
    compression: str
    queue_size: int
    flush_period: float
    status_period: float
    min_free_disk_mb: float


def declare_recorder_parameters(node: Node) -> RecorderParams:
    def declare(name: str, default: Any, description: str) -> Any:
        return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value

    params = RecorderParams(
        output_dir=Path(os.path.expanduser(declare(
            "output_dir", "recordings", "directory of the episode files episode_NNNN.hdf5"))),
        record_rate=float(declare("record_rate", 30.0, "samples per second (node clock)")),
        auto_start=bool(declare("auto_start", False,
                                "start an episode at startup and after every time-out")),
        max_episode_steps=int(declare("max_episode_steps", 0,
                                      "samples after which an episode ends as a time-out; 0 = no limit")),
        compression=declare("compression", "lzf", f"image compression: {', '.join(COMPRESSIONS)}"),
        queue_size=int(declare("queue_size", 90,
                               "samples the writer may lag behind before new samples are dropped")),
        flush_period=float(declare("flush_period", 0.5,
                                   "seconds between flushes to disk (the most a hard kill can lose)")),
        status_period=float(declare("status_period", 5.0, "seconds between status messages")),
        min_free_disk_mb=float(declare("min_free_disk_mb", 500.0,
                                       "stop the episode cleanly when the disk has less free space (MB)")),
    )
    if not params.record_rate > 0:
        raise ParameterError(f"parameter 'record_rate' must be > 0 Hz, got {params.record_rate}")
    if params.max_episode_steps < 0:
        raise ParameterError(f"parameter 'max_episode_steps' must be >= 0, got {params.max_episode_steps}")
    if params.compression not in COMPRESSIONS:
        raise ParameterError(f"parameter 'compression' must be one of {list(COMPRESSIONS)}, "
                             f"got {params.compression!r}")
    if params.queue_size < 1:
        raise ParameterError(f"parameter 'queue_size' must be >= 1, got {params.queue_size}")
    if not params.flush_period >= 0:
        raise ParameterError(f"parameter 'flush_period' must be >= 0 s, got {params.flush_period}")
    if not params.status_period > 0:
        raise ParameterError(f"parameter 'status_period' must be > 0 s, got {params.status_period}")
    if not params.min_free_disk_mb >= 0:
        raise ParameterError(f"parameter 'min_free_disk_mb' must be >= 0, got {params.min_free_disk_mb}")
    if params.output_dir.exists() and not params.output_dir.is_dir():
        raise ParameterError(f"parameter 'output_dir': {params.output_dir} exists and is not a directory")
    return params


def next_episode_index(output_dir: Path) -> int:
    """1 + the highest episode number in `output_dir` (files are never overwritten)."""
    numbers = [int(m.group(1)) for p in output_dir.glob("episode_*.hdf5")
               if (m := EPISODE_PATTERN.match(p.name))]
    return max(numbers, default=0) + 1


class Recorder(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.log = self.get_logger()
        self.inputs_params = declare_input_parameters(self)
        self.params = declare_recorder_parameters(self)
        self.params.output_dir.mkdir(parents=True, exist_ok=True)
        self.inputs = ObservationInputs(self, self.inputs_params, with_actions=True, with_reward=True)
        self.has_reward = "reward" in self.inputs.topics
        self.writer = BackgroundWriter(self.params.queue_size, self._on_writer_event)
        self._writer_error: str | None = None  # set on the writer thread, handled on the timer
        self._next_index = next_episode_index(self.params.output_dir)
        self.episode: int | None = None  # number of the episode being recorded
        self.steps = 0  # samples accepted in the current episode
        self._episode_skipped: dict[str, int] = {}
        self._episode_dropped = 0
        self._status_samples = 0  # samples accepted since the last status
        self._status_time = self.get_clock().now()
        self._last_drop_warning = 0

        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(SetBool, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.status_pub = self.create_publisher(DiagnosticArray, "~/status", 10)
        self.create_timer(1.0 / self.params.record_rate, self._tick)
        self.create_timer(self.params.status_period, self._status)
        self.log.info(
            f"recording {json.dumps(self.inputs.topics)} at {self.params.record_rate} Hz into "
            f"{self.params.output_dir.resolve()} (max_age {self.inputs_params.max_age} s, "
            f"images {self.inputs_params.image_size or 'raw size'})")
        if self.params.auto_start:
            self.start_episode()

    # --- episodes -------------------------------------------------------------------------
    def start_episode(self) -> str:
        self._next_index = max(self._next_index, next_episode_index(self.params.output_dir))
        self.episode, self._next_index = self._next_index, self._next_index + 1
        self.steps = 0
        self._episode_skipped = dict(self.inputs.skipped)
        self._episode_dropped = self.writer.stats.dropped
        self._writer_error = None
        path = self.params.output_dir / f"episode_{self.episode:04d}.hdf5"
        ip = self.inputs_params
        config = EpisodeConfig(
            joint_names=ip.joint_names, action_names=ip.action_names,
            rate_hz=self.params.record_rate, streams=tuple(self.inputs.topics),
            has_reward=self.has_reward, compression=self.params.compression,
            flush_every=max(1, round(self.params.flush_period * self.params.record_rate)),
            min_free_bytes=int(self.params.min_free_disk_mb * 1e6),
            attrs={"topics": json.dumps(self.inputs.topics), "max_age": ip.max_age,
                   "sync_policy": ip.sync_policy, "action_type": ip.action_type,
                   "episode": self.episode})
        self.writer.start_episode(path, config)
        text = f"episode {self.episode} started -> {path}"
        self.log.info(text)
        return text

    def _episode_attrs(self) -> dict[str, Any]:
        skipped = {s: self.inputs.skipped[s] - self._episode_skipped.get(s, 0) for s in self.inputs.topics}
        return {"skipped": json.dumps(skipped),
                "dropped": self.writer.stats.dropped - self._episode_dropped}

    def end_episode(self, outcome: str) -> str:
        """Close the current episode cleanly with outcome success/failure/timeout."""
        text = f"episode {self.episode} ended ({outcome}) after {self.steps} samples"
        self.writer.end_episode(outcome, self._episode_attrs())
        self.episode = None
        self.log.info(text)
        return text

    def abort_episode(self, reason: str) -> None:
        """Close the current episode as incomplete (interrupted): the loader skips it."""
        if self.episode is not None:
            self.log.warning(f"episode {self.episode} interrupted ({reason}) after "
                                      f"{self.steps} samples: kept, marked incomplete")
            self.writer.abort_episode(reason, self._episode_attrs())
            self.episode = None

    def _on_writer_event(self, kind: str, info: dict[str, Any]) -> None:  # writer thread
        if kind == "error":
            self._writer_error = info["message"]
            self.log.error(f"episode writer: {info['message']}")
        elif info["path"] is None:
            self.log.warning(f"episode ended with no samples ({info['outcome']}): no file written")
        else:
            state = "complete" if info["complete"] else "INCOMPLETE"
            self.log.info(f"wrote {info['path']}: {info['samples']} samples, "
                                   f"{info['outcome']}, {state}")

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.episode is not None:
            response.success, response.message = False, f"episode {self.episode} is already recording"
        else:
            response.success, response.message = True, self.start_episode()
        return response

    def _on_stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.episode is None:
            response.success, response.message = False, "no episode is recording"
        else:
            response.success = True
            response.message = self.end_episode("success" if request.data else "failure")
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.episode is None:
            response.success, response.message = False, "no episode is recording"
        else:
            self.writer.discard_episode()
            response.success, response.message = True, f"episode {self.episode} discarded"
            self.log.info(response.message)
            self.episode = None
        return response

    # --- sampling -------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.episode is None:
            return
        if self._writer_error is not None:
            self.log.error(f"episode {self.episode} stopped by a write error; "
                                    "the samples written before it are kept (marked incomplete)")
            self.episode = None
            return
        sample = self.inputs.sample(self.get_clock().now())  # InputError propagates: fatal
        if sample is None:
            return
        self._record(sample)

    def _record(self, sample: Sample) -> None:
        assert sample.action is not None
        if not self.writer.submit(sample.images, sample.joint, sample.action, sample.reward,
                                  sample.time, sample.stamps):
            dropped = self.writer.stats.dropped
            if dropped >= 2 * self._last_drop_warning:  # 1, 2, 4, 8...: loud but not flooding
                self.log.warning(f"writer is behind (queue of {self.params.queue_size} full): "
                                          f"{dropped} samples dropped so far")
                self._last_drop_warning = dropped
            return
        self.steps += 1
        self._status_samples += 1
        if self.params.max_episode_steps and self.steps >= self.params.max_episode_steps:
            self.end_episode("timeout")
            if self.params.auto_start:
                self.start_episode()

    # --- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.get_clock().now()
        elapsed = (now - self._status_time).nanoseconds * 1e-9
        rate = self._status_samples / elapsed if elapsed > 0 else 0.0
        self._status_samples, self._status_time = 0, now
        stats = self.writer.stats
        return {
            "episode": self.episode, "recording": self.episode is not None, "samples": self.steps,
            "rate_hz": round(rate, 2), "skipped": {s: self.inputs.skipped[s] for s in self.inputs.topics},
            "dropped": stats.dropped, "written": stats.written, "queued": stats.queued,
            "writer_lag_s": round(self.writer.reset_lag(), 4), "writer_error": self._writer_error,
            "received": self.inputs.received(),
        }

    def _status(self) -> None:
        st = self.status()
        self.log.info(
            f"episode {st['episode'] if st['recording'] else '-'}: {st['samples']} samples, "
            f"{st['rate_hz']} Hz, skipped {st['skipped']}, dropped {st['dropped']}, "
            f"writer lag {st['writer_lag_s']} s")
        diag = DiagnosticStatus(name=f"{self.get_name()}: recorder", hardware_id="lapo_recorder")
        if st["writer_error"]:
            diag.level, diag.message = DiagnosticStatus.ERROR, f"write error: {st['writer_error']}"
        elif st["dropped"]:
            diag.level, diag.message = DiagnosticStatus.WARN, f"{st['dropped']} samples dropped (disk too slow)"
        else:
            diag.level = DiagnosticStatus.OK
            diag.message = "recording" if st["recording"] else "idle"
        diag.values = [KeyValue(key=k, value=json.dumps(v) if isinstance(v, dict) else str(v))
                       for k, v in st.items()]
        msg = DiagnosticArray(status=[diag])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def close(self) -> None:
        """Mark an episode in progress incomplete and let the writer finish all queued work."""
        # After an external shutdown the context, and with it the node logger's rosout publisher, is gone.
        self.log = rclpy.logging.get_logger(f"{self.get_name()}.shutdown")
        self.abort_episode("interrupted")
        if not self.writer.close(timeout=30.0):
            self.log.error("the episode writer did not finish within 30 s")


def main(args: list[str] | None = None) -> int:
    return run_node(Recorder, "recorder", (ParameterError, InputError), args, cleanup=Recorder.close)


if __name__ == "__main__":
    sys.exit(main())
