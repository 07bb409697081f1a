"""Policy node: runs a trained lapo checkpoint on the robot at a fixed control rate.

    python -m lapo_ros.policy --ros-args -p checkpoint:=model_final_lapo.pth --params-file config/policy.yaml
    ros2 service call /policy/enable std_srvs/srv/SetBool "{data: true}"

Observations come from the same subscriptions and sampler as the recorder
(`lapo_ros.observation_inputs`): each tick takes the newest message of every stream, skips the
tick when one is missing or older than `max_age` or a joint is not finite, runs
`Policy.select_action`, passes the action through `lapo_ros.safety.SafetyFilter` (tracking
watchdog, non-finite rejection, joint limits, per-tick change) and publishes it on `action.topic`
as `action.type` (the same parameters the recorder reads the commanded actions from). Every skipped
or rejected tick restarts the next command from the measured position. It starts disabled unless
`autostart`; `~/enable` switches it and re-arms a tripped watchdog. Diagnostics (health level,
latency percentiles, rate, skip/reject/clamp counts) go to `~/diagnostics` and the log.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool

from lapo_learning.checkpoint import CheckpointError
from lapo_learning.policy import Policy, load_policy
from lapo_learning.recording import InputError, InputParams, ParameterError
from lapo_learning.schema import ObservationSchema, SchemaMismatch
from lapo_ros.joint_msgs import array_to_command, command_msg_class
from lapo_ros.node_runner import run_node
from lapo_ros.observation_inputs import ObservationInputs, declare_input_parameters
from lapo_ros.policy_diagnostics import LoopStatistics, TickGap, loop_health
from lapo_ros.safety import JointLimits, SafetyConfig, SafetyFilter, resolve_limits

NODE_NAME = "policy"
STALE_WARN_PERIOD_S = 2.0  # throttle of the "input stale" warning


def _declare(node: Node, name: str, default: Any, description: str) -> Any:
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def _double_array(node: Node, name: str, description: str) -> tuple[float, ...]:
    """An optional float list parameter (() when unset: ROS cannot infer the type of an empty default)."""
    node.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(description=description))
    try:
        return tuple(node.get_parameter(name).value or ())
    except ParameterUninitializedException:
        return ()


@dataclass(frozen=True)
class PolicyParams:
    """The policy node's own parameters (the inputs' are `observation_inputs.InputParams`)."""

    checkpoint: str
    device: str
    torch_threads: int
    control_rate: float  # 0 = the checkpoint's recording rate
    default_control_rate: float
    autostart: bool
    ensemble_decay: float
    max_delta_per_tick: float
    joint_lower_limits: tuple[float, ...]  # () = from the training actions
    joint_upper_limits: tuple[float, ...]
    limit_margin: float
    tracking_max_error: float
    tracking_timeout: float
    trajectory_time_from_start: float  # 0 = one control period
    diagnostics_period: float
    diagnostics_log_every: int

    def validate(self) -> None:
        if not self.checkpoint:
            raise ParameterError("parameter 'checkpoint' is not set: give the .pth file written by lapo_learning.train")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(f"parameter 'device' is {self.device!r} but CUDA is not available here; use cpu")
        for name in ("torch_threads", "control_rate", "ensemble_decay", "limit_margin", "trajectory_time_from_start"):
            if not getattr(self, name) >= 0:
                raise ParameterError(f"parameter '{name}' must be >= 0, got {getattr(self, name)}")
        for name in ("default_control_rate", "max_delta_per_tick", "tracking_max_error", "tracking_timeout",
                     "diagnostics_period", "diagnostics_log_every"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"parameter '{name}' must be > 0, got {getattr(self, name)}")


def declare_policy_parameters(node: Node) -> PolicyParams:
    """Declare the policy parameters on `node`, read and validate them (ParameterError on bad ones)."""
    params = PolicyParams(
        checkpoint=_declare(node, "checkpoint", "", "checkpoint (.pth) written by lapo_learning.train"),
        device=_declare(node, "device", "cpu", "torch device for inference: cpu, cuda or cuda:N"),
        torch_threads=_declare(node, "torch_threads", 0, "CPU threads for inference; 0 = torch's default"),
        control_rate=_declare(node, "control_rate", 0.0,
                              "command rate (Hz); 0 = the recording rate stored in the checkpoint"),
        default_control_rate=_declare(node, "default_control_rate", 30.0,
                                      "command rate (Hz) when control_rate is 0 and the checkpoint has none"),
        autostart=_declare(node, "autostart", False, "publish commands from the start (else wait for ~/enable)"),
        ensemble_decay=_declare(node, "ensemble_decay", 0.01,
                                "checkpoints with action chunks: temporal-ensembling weight decay, "
                                "weights exp(-decay*i) with i = 0 the oldest prediction (ACT's 0.01)"),
        max_delta_per_tick=_declare(node, "max_delta_per_tick", 0.05,
                                    "largest change of any joint command per tick (command units, e.g. rad); "
                                    "the first tick after enabling or after a paused tick is measured from the joint state"),
        joint_lower_limits=_double_array(node, "joint_lower_limits",
                                         "per-action lower limits (set them for a real robot); unset = the "
                                         "training actions' 0.5th percentile - margin"),
        joint_upper_limits=_double_array(node, "joint_upper_limits",
                                         "per-action upper limits (set them for a real robot); unset = the "
                                         "training actions' 99.5th percentile + margin"),
        limit_margin=_declare(node, "limit_margin", 0.05,
                              "default limits widen the training actions' robust range by this fraction of it"),
        tracking_max_error=_declare(node, "tracking_max_error", 0.3,
                                    "tracking watchdog: largest distance (command units, e.g. rad) allowed "
                                    "between the last published command and a joint's measured position"),
        tracking_timeout=_declare(node, "tracking_timeout", 0.5,
                                  "tracking watchdog: seconds a joint may stay beyond tracking_max_error "
                                  "before the node stops publishing until re-enabled"),
        trajectory_time_from_start=_declare(node, "trajectory_time_from_start", 0.0,
                                            "joint_trajectory only: time_from_start of the point (s); "
                                            "0 = one control period"),
        diagnostics_period=_declare(node, "diagnostics_period", 1.0, "seconds between ~/diagnostics messages"),
        diagnostics_log_every=_declare(node, "diagnostics_log_every", 10,
                                       "log the diagnostics every N diagnostics messages"),
    )
    params.validate()
    return params


class PolicyNode(Node):
    """Thin ROS adapter: parameters, subscriptions (ObservationInputs), timer, publisher, service.

    Construction raises ValueError subclasses with a message naming the problem (ParameterError,
    CheckpointError, SchemaMismatch): `main` turns them into a refusal to start.
    """

    def __init__(self, parameter_overrides: Sequence[Parameter] | None = None, namespace: str = "") -> None:
        super().__init__(NODE_NAME, namespace=namespace, parameter_overrides=list(parameter_overrides or []))
        self.inputs_params: InputParams = declare_input_parameters(self)
        self.params = p = declare_policy_parameters(self)
        if p.torch_threads:
            torch.set_num_threads(p.torch_threads)

        self.policy: Policy = load_policy(p.checkpoint, p.device, ensemble_decay=p.ensemble_decay)
        inputs = self.inputs_params
        configured = ObservationSchema(
            image_size=self.policy.schema.image_size, joint_names=inputs.joint_names,
            action_names=inputs.action_names, cameras=tuple(c.name for c in inputs.cameras))
        # Raises SchemaMismatch naming e.g. the joint count or the differing names.
        self.policy.schema.require_compatible(configured, f"checkpoint {p.checkpoint} vs the node's configuration")
        self.action_names = inputs.action_names
        missing = [n for n in self.action_names if n not in inputs.joint_names]
        if missing:
            raise ParameterError(f"action joints {missing} are not in parameter 'joint_names': the first command "
                                 "after enabling is rate limited from their measured position, so they must be measured")
        self.measured_index = np.array([inputs.joint_names.index(n) for n in self.action_names])

        try:
            self.limits: JointLimits = resolve_limits(self.action_names, p.joint_lower_limits, p.joint_upper_limits,
                                                      self.policy.stats, p.limit_margin)
            self.safety = SafetyFilter(SafetyConfig(self.limits.lower, self.limits.upper, p.max_delta_per_tick,
                                                    p.tracking_max_error, p.tracking_timeout))
        except ValueError as exc:
            raise ParameterError(f"joint limits: {exc}") from exc
        self.policy.warm_up()  # the first control tick must not pay for lazy set-up
        self.rate_hz = p.control_rate or self.policy.schema.rate_hz or p.default_control_rate
        self.period = 1.0 / self.rate_hz
        recorded_hz = self.policy.schema.rate_hz
        if self.policy.chunk_size > 1 and recorded_hz and abs(self.rate_hz - recorded_hz) > 1e-6:
            self.get_logger().warning(
                f"control rate {self.rate_hz:g} Hz differs from the recording rate {recorded_hz:g} Hz: the "
                f"checkpoint predicts chunks of {self.policy.chunk_size} recording periods, so the ensembled "
                "steps will not line up with the ticks")
        self.time_from_start = p.trajectory_time_from_start or self.period
        self.stats = LoopStatistics(self.rate_hz)
        self.tick_gap = TickGap(self.period)
        self.enabled = False
        self.stopped = False
        self.fault: str | None = None  # why the node stopped itself (tracking watchdog), until re-enabled

        self.inputs = ObservationInputs(self, inputs, with_actions=False, with_reward=False)
        self.publisher = self.create_publisher(command_msg_class(inputs.action_type), inputs.action_topic, 10)
        self.diag_publisher = self.create_publisher(DiagnosticArray, "~/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.timer = self.create_timer(self.period, self._tick)
        self._diag_count = 0
        self._counts_at_last_diag = dict(self.stats.counts)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"loaded {p.checkpoint} (step {self.policy.step}, {self.policy.schema.action_dim} actions, "
            f"device {p.device}); commands {inputs.action_type} on {inputs.action_topic} at {self.rate_hz:g} Hz; "
            f"max_delta_per_tick {p.max_delta_per_tick:g}; tracking watchdog {p.tracking_max_error:g} for "
            f"{p.tracking_timeout:g} s")
        limits = f"joint limits in force, from {self.limits.source}: {self.limits.describe(self.action_names)}"
        if self.limits.from_training:
            self.get_logger().warning(f"{limits}. Configure joint limits for a real robot (parameters "
                                      "joint_lower_limits/joint_upper_limits)")
        else:
            self.get_logger().info(limits)
        self._set_enabled(p.autostart)

    # Enable/disable -------------------------------------------------------------------------------
    def _set_enabled(self, enabled: bool) -> None:
        if enabled and not self.enabled:
            # Re-enabling starts again from the measured position (a tripped watchdog re-armed),
            # with fresh period statistics and no action chunks from before.
            self.safety.rearm()
            if self.fault:
                self.get_logger().info(f"re-enabled after: {self.fault}")
            self.fault = None
            self.policy.reset()
            self.tick_gap.reset()
            self.stats.start(self._now_s())
        self.enabled = enabled
        self.get_logger().info("enabled: publishing commands" if enabled else "disabled: not publishing")

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.stopped:
            response.success, response.message = False, "shutting down: cannot be enabled"
            return response
        self._set_enabled(bool(request.data))
        response.success = True
        response.message = "enabled" if self.enabled else "disabled"
        return response

    def shutdown(self) -> None:
        """Stop for good: nothing is published after this, whatever ~/enable is asked."""
        self.stopped = True
        self.enabled = False
        self.destroy_timer(self.timer)

    # Control loop ---------------------------------------------------------------------------------
    def _pause(self, counter: str, message: str) -> None:
        """A tick that publishes nothing: the robot may move meanwhile, so the next command starts
        again from the measured position, and older chunks' steps no longer line up with the ticks."""
        self.stats.count(counter)
        self.safety.reset()
        self.policy.reset()
        self.get_logger().warning(f"not publishing: {message}", throttle_duration_sec=STALE_WARN_PERIOD_S)

    def _tick(self) -> None:
        if not self.enabled:
            return
        now = self.get_clock().now()
        if self.tick_gap.late(now.nanoseconds * 1e-9):
            self.stats.count("late_ticks")
            self.policy.reset()  # the held chunks' steps were meant for ticks that never fired
        sample = self.inputs.sample(now)  # raises InputError (fatal) on unusable messages
        if sample is None:
            self._pause("stale_skips", f"no usable input: {self._stale_inputs(now.nanoseconds * 1e-9)}")
            return
        nonfinite = [n for n, v in zip(self.inputs_params.joint_names, sample.joint) if not np.isfinite(v)]
        if nonfinite:
            self._pause("nonfinite_joints", f"measured position of {nonfinite} is not finite "
                                            f"(on {self.inputs_params.joint_states_topic})")
            return
        images = [sample.images[cam] for cam in self.policy.schema.cameras]
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                action = self.policy.select_action(*images, sample.joint)
        except ValueError as exc:
            self._pause("errors", f"inference failed: {exc}")
            return
        self.stats.add_latency(time.perf_counter() - start)
        result = self.safety.apply(action, sample.joint[self.measured_index], now.nanoseconds * 1e-9)
        if result.tracking_fault is not None:
            self._trip(result.tracking_fault.describe(self.action_names, self.params.tracking_max_error))
            return
        if result.rejected_nonfinite:
            self._pause("nonfinite_rejections", "policy output is not finite")
            return
        if result.n_clamped:
            self.stats.count("clamped")
        if result.n_rate_limited:
            self.stats.count("rate_limited")
        stamp = None if self.inputs_params.action_type == "joint_trajectory" else now.to_msg()  # 0 = start now
        self.publisher.publish(array_to_command(result.command, self.action_names, self.inputs_params.action_type,
                                                stamp=stamp, time_from_start=self.time_from_start))
        self.stats.add_publish(self._now_s())  # after publishing: the jitter includes inference

    def _trip(self, fault: str) -> None:
        """Stop publishing until an operator re-enables (the watchdog stays tripped until then)."""
        self.stats.count("tracking_faults")
        self.policy.reset()
        self.fault = fault
        self.enabled = False
        self.get_logger().error(f"{fault}: call ~/enable to resume")

    # Diagnostics ----------------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stale_inputs(self, now: float) -> str:
        """'none', or each input that would block a tick now and why: readable while disabled,
        so an operator (or the sim loop) can tell the node is ready before enabling it."""
        problems = [(topic, self.inputs.sampler.problem(stream, now)) for stream, topic in self.inputs.topics.items()]
        return "; ".join(f"{topic}: {why}" for topic, why in problems if why) or "none"

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary(self._now_s())
        recent = {k: v - self._counts_at_last_diag[k] for k, v in summary.counts.items()}
        level, message = loop_health(self.enabled, self.fault, recent, summary.latency_p99_ms, 1e3 * self.period)
        status = DiagnosticStatus(name=f"{self.get_name()}: control loop", hardware_id=self.get_fully_qualified_name(),
                                  level=level.to_bytes(1, "little"), message=message)
        values = {
            "enabled": str(self.enabled),
            "limits_from": self.limits.source,
            "nominal_rate_hz": f"{self.rate_hz:g}",
            "achieved_rate_hz": f"{summary.achieved_rate_hz:.2f}",
            "inference_latency_p50_ms": f"{summary.latency_p50_ms:.2f}",
            "inference_latency_p99_ms": f"{summary.latency_p99_ms:.2f}",
            "period_jitter_p99_ms": f"{summary.period_jitter_p99_ms:.2f}",
            "stale_inputs": self._stale_inputs(self._now_s()),
            **{k: str(v) for k, v in summary.counts.items()},
            **{f"skipped_{stream}": str(self.inputs.skipped[stream]) for stream in self.inputs.topics},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_publisher.publish(msg)
        self._diag_count += 1
        self._counts_at_last_diag = summary.counts
        if self._diag_count % self.params.diagnostics_log_every == 0:
            self.get_logger().info(f"{'enabled' if self.enabled else 'disabled'}: {message}; "
                                   f"{self.stats.log_line(self._now_s())}")


def main(args: list[str] | None = None) -> int:
    # Each fatal error says what is wrong: a bad parameter, a bad checkpoint, a checkpoint that does
    # not fit the configuration, or (at run time) a topic whose messages do not fit it.
    return run_node(PolicyNode, NODE_NAME, (ParameterError, CheckpointError, SchemaMismatch, InputError),
                    args, cleanup=PolicyNode.shutdown, fatal_prefix="refusing to run: ")


if __name__ == "__main__":
    sys.exit(main())
