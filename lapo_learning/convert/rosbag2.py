"""ROS 2 bags -> lapo episode files, as the recorder would have written them live (`convert from-rosbag2`).

The bag is read with the pure-Python `rosbags` library (sqlite3 and mcap storage, compressed or
not; message types from the definitions stored in the bag). Its messages go, in the order and at
the times they were logged, through the recorder's own code (`lapo_learning.recording`): the
same parameter file, the same stream caches (image conversion and resize, joints matched by name,
the command type, the reward) and the same sampler at `record_rate`, with `max_age`, per-stream
stamps and skip counts, and the same episode files. The log time plays the recorder's clock: a
message's arrival time, and the time of the sampler's ticks, every 1/record_rate s from the first
message of an episode.

Episodes: one bag is one episode; `split_on_gap` starts a new one after a pause of that many
seconds without any configured message; `episode_marks` takes them from a std_msgs/Bool topic
(true starts an episode, false ends it with the configured outcome) or std_msgs/String topic
(start, stop, success, failure, discard), as the recorder's start/stop/discard services would.
`max_episode_steps` ends an episode as a time-out, as live. Only messages are deserialized that
end up in a sample.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lapo_learning.convert import ConvertError, require
from lapo_learning.convert.episodes import EpisodeOutput, Row
from lapo_learning.episode_writer import OUTCOMES
from lapo_learning.messages import COMMAND_TYPES
from lapo_learning.recording import (CAMERA_TYPES, INPUT_PARAMETERS, JOINT_STATE_TYPE, RECORDER_PARAMETERS,
                                     REWARD_TYPES, InputError, InputParams, RecorderParams, episode_config,
                                     episode_end_attrs, input_params, read_parameter_file, recorder_params,
                                     stream_caches)
from lapo_learning.stream_sampler import ACTION_STREAM, JOINT_STREAM, REWARD_STREAM, StreamSampler

log = logging.getLogger(__name__)

MARK_TYPES = ("std_msgs/msg/Bool", "std_msgs/msg/String")
STRING_MARKS = ("start", "stop", "discard", *OUTCOMES)


@dataclass(frozen=True)
class BagOptions:
    config: Path  # the recorder's parameter file
    outcome: str = "success"  # how an episode ends without a mark saying otherwise
    split_on_gap: float | None = None  # s without any configured message that starts a new episode
    episode_marks: str | None = None  # topic of std_msgs/Bool or String episode marks


def read_config(path: Path) -> tuple[InputParams, RecorderParams]:
    """The recorder's parameters from its YAML parameter file (ParameterError naming the file)."""
    values = read_parameter_file(path, INPUT_PARAMETERS + RECORDER_PARAMETERS)
    inputs, params = input_params(values), recorder_params(values)
    if inputs.sync_policy != "newest":
        raise ConvertError(f"{path}: sync_policy {inputs.sync_policy!r} is not supported by the converter "
                           "(it pairs camera messages with ROS's message_filters); use 'newest'")
    return inputs, params


def _expected_types(inputs: InputParams) -> dict[str, tuple[str, str]]:
    """Stream -> (ROS message type, the parameter that sets it)."""
    types = {c.name: (CAMERA_TYPES[c.msg_type], f"cameras.{c.name}.type = {c.msg_type}") for c in inputs.cameras}
    types[JOINT_STREAM] = (JOINT_STATE_TYPE, "joint_states_topic")
    types[ACTION_STREAM] = (COMMAND_TYPES[inputs.action_type], f"action.type = {inputs.action_type}")
    types[REWARD_STREAM] = (REWARD_TYPES[inputs.reward_type], f"reward.type = {inputs.reward_type}")
    return types


def _header_stamp(raw: memoryview | bytes) -> float:
    """The header stamp of a CDR-serialized message whose first field is std_msgs/Header, read
    from the bytes (so messages that are never sampled are never deserialized)."""
    endian = "<" if raw[1] == 1 else ">"  # CDR encapsulation: 0x0001 little, 0x0000 big endian
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec + nanosec * 1e-9


class BagConversion:
    """One bag through the recorder's sampler into episodes of `out`."""

    def __init__(self, bag: Path, reader: Any, inputs: InputParams, params: RecorderParams,
                 options: BagOptions, out: EpisodeOutput) -> None:
        self.bag, self.reader, self.inputs, self.params, self.options, self.out = (
            bag, reader, inputs, params, options, out)
        self.topics = inputs.topics(with_actions=True, with_reward=True)
        self._check_topics()
        self.streams_of: dict[str, list[str]] = {}  # topic -> streams it feeds
        for stream, topic in self.topics.items():
            self.streams_of.setdefault(topic, []).append(stream)
        self.caches = stream_caches(inputs, with_actions=True, with_reward=True, decode=self._decode)
        self.sampler = StreamSampler(self.caches, inputs.max_age, reject_nonfinite=True)
        self.period = 1.0 / params.record_rate
        self.next_tick: float | None = None  # None: no episode recording
        self.steps = 0
        self._counts: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def _check_topics(self) -> None:
        available = {topic: info.msgtype for topic, info in self.reader.topics.items()}
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(available.items())) or "none"
        expected = _expected_types(self.inputs)
        for stream, topic in self.topics.items():
            msgtype, parameter = expected[stream]
            if topic not in available:
                raise ConvertError(f"{self.bag}: no topic {topic} (the {stream} stream in {self.options.config}); "
                                   f"the bag has: {listing}")
            if available[topic] != msgtype:
                raise ConvertError(f"{self.bag}: topic {topic} has type {available[topic]}, but {self.options.config} "
                                   f"expects {msgtype} for the {stream} stream ({parameter})")
        marks = self.options.episode_marks
        if marks is not None:
            if marks not in available:
                raise ConvertError(f"{self.bag}: no --episode_marks topic {marks}; the bag has: {listing}")
            if available[marks] not in MARK_TYPES:
                raise ConvertError(f"{self.bag}: --episode_marks topic {marks} has type {available[marks]}, "
                                   f"expected one of {list(MARK_TYPES)}")
        self.msgtypes = available
        self.has_header = {t: self._first_field_is_header(m) for t, m in available.items()}

    def _first_field_is_header(self, msgtype: str) -> bool:
        fields = self.reader.typestore.fielddefs[msgtype][1]
        return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"

    def _decode(self, topic: str, raw: Any) -> Any:
        return self.reader.deserialize(raw, self.msgtypes[topic])

    # --- episodes, as the recorder's services would drive them -----------------------------
    def _start(self, now: float) -> None:
        self.out.start(lambda number: episode_config(self.inputs, self.params, number))
        self.next_tick, self.steps = now + self.period, 0
        self._counts = (dict(self.sampler.skipped), dict(self.sampler.nonfinite))

    def _end_attrs(self) -> dict[str, Any]:
        skipped0, nonfinite0 = self._counts
        return episode_end_attrs({s: self.sampler.skipped[s] - skipped0.get(s, 0) for s in self.topics},
                                 {s: self.sampler.nonfinite[s] - nonfinite0.get(s, 0) for s in self.topics}, 0)

    def _end(self, outcome: str) -> None:
        if self.next_tick is not None:
            self.out.end(outcome, self._end_attrs())
            self.next_tick = None

    def _discard(self) -> None:
        if self.next_tick is not None:
            self.out.discard()
            self.next_tick = None

    def _mark(self, msg: Any, now: float) -> None:
        text = msg.data if isinstance(msg.data, str) else ("start" if msg.data else "stop")
        text = text.strip().lower()
        if text not in STRING_MARKS:
            raise ConvertError(f"{self.bag}: --episode_marks topic {self.options.episode_marks} says {msg.data!r}, "
                               f"expected one of {list(STRING_MARKS)}")
        if text == "start":
            if self.next_tick is None:  # like ~/start while recording: refused
                self._start(now)
        elif text == "discard":
            self._discard()
        else:
            self._end(self.options.outcome if text == "stop" else text)

    # --- the recorder's timer -----------------------------------------------------------
    def _ticks_until(self, now: float) -> None:
        while self.next_tick is not None and self.next_tick <= now:
            tick, self.next_tick = self.next_tick, self.next_tick + self.period
            sample = self.sampler.sample(tick)
            if sample is None:
                continue
            assert sample.action is not None
            self.out.append(Row(sample.images, sample.joint, sample.action, sample.reward, sample.time, sample.stamps))
            self.steps += 1
            if self.params.max_episode_steps and self.steps >= self.params.max_episode_steps:
                self._end("timeout")
                if self.options.episode_marks is None or self.params.auto_start:
                    self._start(tick)

    def run(self) -> None:
        wanted = set(self.topics.values()) | ({self.options.episode_marks} - {None})
        connections = [c for c in self.reader.connections if c.topic in wanted]
        last: float | None = None
        marks = self.options.episode_marks
        for connection, timestamp, raw in self.reader.messages(connections=connections):
            now = timestamp * 1e-9
            self._ticks_until(now)
            if connection.topic == marks:
                self._mark(self.reader.deserialize(raw, connection.msgtype), now)
                continue
            gap = self.options.split_on_gap
            if marks is None and (last is None or (gap is not None and now - last > gap)):
                self._end(self.options.outcome)  # the pause ends the episode: no ticks across it
                self._start(now)
            last = now
            stamp = _header_stamp(raw) if self.has_header[connection.topic] else None
            for stream in self.streams_of[connection.topic]:
                self.caches[stream].update(raw, stamp, now)
        if marks is None:
            self._end(self.options.outcome)
        elif self.next_tick is not None:
            log.warning("%s: the bag ends before the episode's end mark", self.bag)
            self.out.abort("interrupted", self._end_attrs())
            self.next_tick = None


def convert_bags(bags: list[Path], output: Path, options: BagOptions) -> list[Path]:
    """Every bag of `bags` into lapo episode files in `output`; see the module docstring."""
    highlevel = require("rosbags.highlevel", "from-rosbag2")
    typesys = require("rosbags.typesys", "from-rosbag2")
    if options.outcome not in OUTCOMES:
        raise ConvertError(f"--outcome must be one of {list(OUTCOMES)}, got {options.outcome!r}")
    if options.split_on_gap is not None and not options.split_on_gap > 0:
        raise ConvertError(f"--split_on_gap must be > 0 s, got {options.split_on_gap}")
    if options.split_on_gap is not None and options.episode_marks is not None:
        raise ConvertError("--split_on_gap and --episode_marks exclude each other")
    inputs, params = read_config(options.config)
    for bag in bags:
        if not bag.exists():
            raise ConvertError(f"{bag}: no such bag (a rosbag2 directory or .mcap/.db3 file)")
    out = EpisodeOutput(output)
    try:
        for bag in bags:
            _convert_bag(bag, highlevel, typesys, inputs, params, options, out)
    except BaseException as exc:
        out.abort("conversion_failed", {"error": " ".join(str(exc).split())})
        raise
    finally:
        written = out.close()
    return written


def _convert_bag(bag: Path, highlevel: Any, typesys: Any, inputs: InputParams, params: RecorderParams,
                 options: BagOptions, out: EpisodeOutput) -> None:
    try:
        reader = highlevel.AnyReader([bag], default_typestore=typesys.get_typestore(typesys.Stores.LATEST))
        reader.open()
    except Exception as exc:  # rosbags' errors for unreadable bags share no base class
        raise ConvertError(f"{bag}: cannot be read as a ROS 2 bag ({exc})") from exc
    try:
        conversion = BagConversion(bag, reader, inputs, params, options, out)
        conversion.run()
    except InputError as exc:
        raise ConvertError(f"{bag}: {exc}") from exc
    finally:
        reader.close()
    log.info("%s: %d samples taken, skipped per stream %s", bag, conversion.sampler.sampled,
             dict(conversion.sampler.skipped) or 0)
