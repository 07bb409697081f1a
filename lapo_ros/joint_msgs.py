"""Joint vectors from and to ROS messages, always matched by joint name.

`/joint_states` order depends on the broadcaster's configuration, so JointState messages are
indexed by name; Float64MultiArray carries no names and must already be in the configured order.
"""
from __future__ import annotations

import array
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

# Parameter values naming the command message types.
COMMAND_TYPES: dict[str, type] = {
    "float64_multi_array": Float64MultiArray,
    "joint_trajectory": JointTrajectory,
    "joint_state": JointState,
}


def command_msg_class(msg_type: str) -> type:
    """The message class for a command type name (see COMMAND_TYPES)."""
    try:
        return COMMAND_TYPES[msg_type]
    except KeyError:
        raise ValueError(f"unknown command message type {msg_type!r}, expected one of "
                         f"{sorted(COMMAND_TYPES)}") from None


def _name_order(msg_names: Sequence[str], joint_names: Sequence[str], what: str) -> np.ndarray:
    """Index into the message's arrays of every configured joint; error on missing/unknown names."""
    where = {name: i for i, name in enumerate(msg_names)}
    if len(where) != len(msg_names):
        raise ValueError(f"{what} has duplicate joint names: {list(msg_names)}")
    missing = [n for n in joint_names if n not in where]
    unknown = [n for n in msg_names if n not in set(joint_names)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"lacks configured joints {missing}")
        if unknown:
            parts.append(f"has unknown joints {unknown}")
        raise ValueError(f"{what} " + " and ".join(parts) +
                         f" (configured joint_names: {list(joint_names)})")
    return np.fromiter((where[n] for n in joint_names), dtype=np.int64, count=len(joint_names))


class JointIndexer:
    """Maps JointState messages to float32[J] in the configured joint order.

    The name -> index mapping is computed once per distinct name list (publishers keep theirs).
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        if not joint_names:
            raise ValueError("joint_names is empty")
        self.joint_names = tuple(joint_names)
        self._cached_names: tuple[str, ...] | None = None
        self._order = np.zeros(0, dtype=np.int64)

    def __call__(self, msg: JointState) -> np.ndarray:
        names = tuple(msg.name)
        if names != self._cached_names:
            self._order = _name_order(names, self.joint_names, "JointState")
            self._cached_names = names
        position = np.asarray(msg.position, dtype=np.float64)
        if len(position) != len(names):
            raise ValueError(f"JointState has {len(names)} names but {len(position)} positions")
        return position[self._order].astype(np.float32)


def command_to_array(msg: Any, joint_names: Sequence[str]) -> np.ndarray:
    """float32[J] of a JointState / Float64MultiArray / JointTrajectory command, in joint order."""
    if isinstance(msg, JointState):
        return JointIndexer(joint_names)(msg)
    if isinstance(msg, Float64MultiArray):
        if len(msg.data) != len(joint_names):
            raise ValueError(f"Float64MultiArray command has {len(msg.data)} values, "
                             f"expected {len(joint_names)} (one per joint in {list(joint_names)})")
        return np.asarray(msg.data, dtype=np.float32)
    if isinstance(msg, JointTrajectory):
        if not msg.points:
            raise ValueError("JointTrajectory command has no points")
        point = msg.points[0]
        if len(point.positions) != len(msg.joint_names):
            raise ValueError(f"JointTrajectory has {len(msg.joint_names)} joint_names but its first "
                             f"point has {len(point.positions)} positions")
        order = _name_order(tuple(msg.joint_names), joint_names, "JointTrajectory")
        return np.asarray(point.positions, dtype=np.float64)[order].astype(np.float32)
    raise ValueError(f"unsupported command message {type(msg).__name__}, expected one of "
                     f"{[c.__name__ for c in COMMAND_TYPES.values()]}")


def array_to_command(values: np.ndarray, joint_names: Sequence[str], msg_type: str,
                     stamp: Any = None, time_from_start: float = 0.0) -> Any:
    """A command message of type `msg_type` (see COMMAND_TYPES) carrying `values` in joint order.

    `stamp` (builtin_interfaces/Time) goes into the header of JointState/JointTrajectory; None
    leaves it zero, which joint_trajectory_controller reads as "start now". `time_from_start`
    (s) is the JointTrajectory point's time.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != len(joint_names):
        raise ValueError(f"command has {len(values)} values for {len(joint_names)} joints")
    cls = command_msg_class(msg_type)
    doubles = array.array("d", values.tolist())
    msg = cls()
    if cls is Float64MultiArray:
        msg.data = doubles
        return msg
    if stamp is not None:
        msg.header.stamp = stamp
    if cls is JointState:
        msg.name = list(joint_names)
        msg.position = doubles
        return msg
    msg.joint_names = list(joint_names)
    seconds = int(time_from_start)
    point = JointTrajectoryPoint(
        positions=doubles,
        time_from_start=Duration(sec=seconds, nanosec=int(round((time_from_start - seconds) * 1e9))))
    msg.points = [point]
    return msg
