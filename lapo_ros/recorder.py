"""Demonstration recorder: cameras + joint states + commanded actions -> one HDF5 file per episode.

A timer samples the newest message of every stream every 1/record_rate s (node clock, so it
follows /clock under use_sim_time); a sample with a missing or stale stream (older than max_age),
or with NaN/inf joints, action or reward, is skipped and counted per stream. An episode's first
sample waits for camera frames and joint states stamped after its `~/start`. A pause longer than
max_gap_periods record periods marks the next row `after_gap` (no transition across it). Samples
go through a bounded queue to a writer thread (`lapo_learning.episode_writer.BackgroundWriter`),
so callbacks never wait for the disk; a full queue drops samples and says so in the log and in
the status. The output directory must be writable at start-up and at every `~/start`.

Services (relative to the node): `~/start` (std_srvs/Trigger), `~/stop` (std_srvs/SetBool:
data=True success, False failure), `~/discard` (std_srvs/Trigger). Status: a periodic log line
and `~/status` (diagnostic_msgs/DiagnosticArray): WARN while samples are skipped or dropped,
ERROR when nothing is recorded or a write failed, naming the stream (and topic) at fault.

    python -m lapo_ros.recorder --ros-args --params-file config/recorder.yaml -p output_dir:=/data/demos
"""
from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from lapo_learning.episode_writer import BackgroundWriter, check_writable_dir, next_episode_index
from lapo_learning.recording import (RECORDER_PARAMETERS, InputError, ParameterError, RecorderParams,
                                     episode_config, episode_end_attrs, recorder_params)
from lapo_learning.stream_sampler import Sample
from lapo_ros.node_runner import run_node
from lapo_ros.observation_inputs import ObservationInputs, declare_input_parameters, declare_parameters


def declare_recorder_parameters(node: Node) -> RecorderParams:
    """Declare the recorder's own parameters on `node` and validate them (ParameterError), the
    output directory included (it must be writable at start-up)."""
    params = recorder_params(declare_parameters(node, RECORDER_PARAMETERS))
    if params.output_dir.exists() and not params.output_dir.is_dir():
        raise ParameterError(f"parameter 'output_dir': {params.output_dir} exists and is not a directory")
    try:
        check_writable_dir(params.output_dir)
    except OSError as exc:
        raise ParameterError(f"parameter 'output_dir': {exc.strerror}") from exc
    return params


class Recorder(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.log = self.get_logger()
        self.inputs_params = declare_input_parameters(self)
        self.params = declare_recorder_parameters(self)
        self.inputs = ObservationInputs(self, self.inputs_params, with_actions=True, with_reward=True,
                                        reject_nonfinite=True)
        self.has_reward = "reward" in self.inputs.topics
        self.writer = BackgroundWriter(self.params.queue_size, self._on_writer_event)
        self._writer_error: str | None = None  # set on the writer thread, handled on the timer
        self._next_index = next_episode_index(self.params.output_dir)
        self.episode: int | None = None  # number of the episode being recorded
        self.steps = 0  # samples accepted in the current episode
        self._episode_start = self.get_clock().now()  # observations must be newer than this
        self._episode_skipped: dict[str, int] = {}
        self._episode_nonfinite: dict[str, int] = {}
        self._episode_dropped = 0
        self._status_samples = 0  # samples accepted since the last status
        self._status_time = self.get_clock().now()
        self._status_skipped: dict[str, int] = {}  # counters at the last status
        self._status_nonfinite: dict[str, int] = {}
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
            f"images {self.inputs_params.image_size or 'raw size'}, "
            f"reward {'from ' + self.inputs_params.reward_topic if self.has_reward else 'sparse, from the outcome'})")
        if self.params.auto_start:
            self.start_episode()

    # --- episodes -------------------------------------------------------------------------
    def output_problem(self) -> str | None:
        """Why no episode can be written now (directory not writable, disk full), or None."""
        try:
            check_writable_dir(self.params.output_dir)
        except OSError as exc:
            return exc.strerror
        free = shutil.disk_usage(self.params.output_dir).free
        if free < self.params.min_free_disk_mb * 1e6:
            return (f"{self.params.output_dir}: only {free / 1e6:.0f} MB free on the disk "
                    f"(min_free_disk_mb {self.params.min_free_disk_mb:g})")
        return None

    def start_episode(self) -> tuple[bool, str]:
        """Start the next episode; (False, why) when the output directory cannot take it."""
        problem = self.output_problem()
        if problem is not None:
            self.log.error(f"cannot start an episode: {problem}")
            return False, f"cannot start an episode: {problem}"
        self._next_index = max(self._next_index, next_episode_index(self.params.output_dir))
        self.episode, self._next_index = self._next_index, self._next_index + 1
        self.steps = 0
        self._episode_start = self.get_clock().now()
        self._episode_skipped = dict(self.inputs.skipped)
        self._episode_nonfinite = dict(self.inputs.nonfinite)
        self._episode_dropped = self.writer.stats.dropped
        self._writer_error = None
        path = self.params.output_dir / f"episode_{self.episode:04d}.hdf5"
        self.writer.start_episode(path, episode_config(self.inputs_params, self.params, self.episode))
        text = f"episode {self.episode} started -> {path}"
        self.log.info(text)
        return True, text

    def _episode_attrs(self) -> dict[str, Any]:
        skipped = {s: self.inputs.skipped[s] - self._episode_skipped.get(s, 0) for s in self.inputs.topics}
        nonfinite = {s: self.inputs.nonfinite[s] - self._episode_nonfinite.get(s, 0) for s in self.inputs.topics}
        return episode_end_attrs(skipped, nonfinite, self.writer.stats.dropped - self._episode_dropped)

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
            gaps = f", {info['gaps']} gap(s) marked" if info["gaps"] else ""
            self.log.info(f"wrote {info['path']}: {info['samples']} samples{gaps}, {info['outcome']}, {state}")

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.episode is not None:
            response.success, response.message = False, f"episode {self.episode} is already recording"
        else:
            response.success, response.message = self.start_episode()
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
        sample = self.inputs.sample(self.get_clock().now(), newer_than=self._episode_start)  # InputError: fatal
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
        """Counters since start-up, the rate and the skips since the previous call, and the level
        (OK/WARN/ERROR) with a message naming the streams that block recording."""
        now = self.get_clock().now()
        elapsed = (now - self._status_time).nanoseconds * 1e-9
        rate = self._status_samples / elapsed if elapsed > 0 else 0.0
        samples = self._status_samples
        self._status_samples, self._status_time = 0, now
        topics = self.inputs.topics
        skipped = {s: self.inputs.skipped[s] for s in topics}
        nonfinite = {s: self.inputs.nonfinite[s] for s in topics}
        new_skipped = {s: n - self._status_skipped.get(s, 0) for s, n in skipped.items() if n > self._status_skipped.get(s, 0)}
        new_nonfinite = {s: n - self._status_nonfinite.get(s, 0) for s, n in nonfinite.items()
                         if n > self._status_nonfinite.get(s, 0)}
        self._status_skipped, self._status_nonfinite = skipped, nonfinite
        stats = self.writer.stats
        st = {
            "episode": self.episode, "recording": self.episode is not None, "samples": self.steps,
            "rate_hz": round(rate, 2), "skipped": skipped, "nonfinite": nonfinite,
            "dropped": stats.dropped, "written": stats.written, "queued": stats.queued,
            "writer_lag_s": round(self.writer.reset_lag(), 4), "writer_error": self._writer_error,
            "received": self.inputs.received(),
        }
        st["level"], st["message"] = self._assess(st, now.nanoseconds * 1e-9, elapsed, samples,
                                                  new_skipped, new_nonfinite)
        return st

    def _assess(self, st: dict[str, Any], now: float, elapsed: float, samples: int,
                new_skipped: dict[str, int], new_nonfinite: dict[str, int]) -> tuple[int, str]:
        topics = self.inputs.topics
        reasons = []
        for s, n in new_skipped.items():
            why = self.inputs.sampler.problem(s, now) or "stale or missing at times"
            reasons.append(f"{s} ({topics[s]}): {why} [{n} samples]")
        reasons += [f"{s} ({topics[s]}): NaN/inf values [{n} samples]" for s, n in new_nonfinite.items()]
        if st["writer_error"]:
            return DiagnosticStatus.ERROR, f"write error: {st['writer_error']}"
        if st["recording"] and reasons and samples == 0:
            return DiagnosticStatus.ERROR, f"nothing recorded in the last {elapsed:.1f} s: " + "; ".join(reasons)
        if st["recording"] and reasons:
            return (DiagnosticStatus.WARN, f"recording, samples skipped in the last {elapsed:.1f} s: "
                    + "; ".join(reasons))
        if st["dropped"]:
            return DiagnosticStatus.WARN, f"{st['dropped']} samples dropped (disk too slow)"
        if not st["recording"]:
            blocking = [f"{s} ({topics[s]}): {why}" for s in topics
                        if (why := self.inputs.sampler.problem(s, now)) is not None]
            if blocking:
                return DiagnosticStatus.WARN, "idle; a recording would skip every sample: " + "; ".join(blocking)
            return DiagnosticStatus.OK, "idle"
        return DiagnosticStatus.OK, "recording"

    def _status(self) -> None:
        st = self.status()
        skipped = {s: n for s, n in st["skipped"].items() if n}
        nonfinite = {s: n for s, n in st["nonfinite"].items() if n}
        line = (f"episode {st['episode'] if st['recording'] else '-'}: {st['samples']} samples, "
                f"{st['rate_hz']} Hz, skipped {skipped or 0}, non-finite {nonfinite or 0}, "
                f"dropped {st['dropped']}, writer lag {st['writer_lag_s']} s")
        if st["level"] == DiagnosticStatus.OK:  # one call site per severity: rclpy requires it
            self.log.info(line)
        elif st["level"] == DiagnosticStatus.WARN:
            self.log.warning(f"{st['message']} ({line})")
        else:
            self.log.error(f"{st['message']} ({line})")
        diag = DiagnosticStatus(name=f"{self.get_name()}: recorder", hardware_id="lapo_recorder",
                                level=st["level"], message=st["message"])
        diag.values = [KeyValue(key=k, value=json.dumps(v) if isinstance(v, dict) else str(v))
                       for k, v in st.items() if k not in ("level", "message")]
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
