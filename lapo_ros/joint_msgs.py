"""Joint vectors from and to ROS command messages, always matched by joint name.

The reading is ROS-free (`lapo_learning.messages`, also used by `convert from-rosbag2`); this
module maps the ROS message classes to it and builds command messages.
"""
from __future__ import annotations

import array
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lapo_learning.messages import command_to_array as shared_command_to_array

# The command message classes by the names of lapo_learning.messages.COMMAND_TYPES.
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


def command_to_array(msg: Any, joint_names: Sequence[str]) -> np.ndarray:
    """float32[J] of a JointState / Float64MultiArray / JointTrajectory command, in joint order."""
    for name, cls in COMMAND_TYPES.items():
        if isinstance(msg, cls):
            return shared_command_to_array(msg, joint_names, name)
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
