"""Joint vectors from/to JointState, Float64MultiArray and JointTrajectory, matched by name."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lapo_learning.messages import JointIndexer
from lapo_ros.joint_msgs import array_to_command, command_msg_class, command_to_array

NAMES = ["a", "b", "c"]


def test_indexer_reorders_by_name_and_follows_changes() -> None:
    idx = JointIndexer(NAMES)
    out = idx(JointState(name=["c", "a", "b"], position=[3.0, 1.0, 2.0]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(idx(JointState(name=["b", "c", "a"], position=[2.0, 3.0, 1.0])), [1, 2, 3])


def test_indexer_errors_name_the_joints() -> None:
    idx = JointIndexer(NAMES)
    with pytest.raises(ValueError, match=r"lacks configured joints \['c'\]"):
        idx(JointState(name=["a", "b"], position=[1.0, 2.0]))
    with pytest.raises(ValueError, match=r"has unknown joints \['gripper'\]"):
        idx(JointState(name=["a", "b", "c", "gripper"], position=[1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="3 names but 2 positions"):
        idx(JointState(name=["a", "b", "c"], position=[1.0, 2.0]))
    with pytest.raises(ValueError, match="duplicate"):
        idx(JointState(name=["a", "a", "c"], position=[1.0, 2.0, 3.0]))


def test_command_to_array_for_each_type() -> None:
    np.testing.assert_array_equal(
        command_to_array(JointState(name=["b", "a", "c"], position=[2.0, 1.0, 3.0]), NAMES), [1, 2, 3])
    np.testing.assert_array_equal(command_to_array(Float64MultiArray(data=[1.0, 2.0, 3.0]), NAMES), [1, 2, 3])
    traj = JointTrajectory(joint_names=["c", "b", "a"], points=[
        JointTrajectoryPoint(positions=[3.0, 2.0, 1.0]), JointTrajectoryPoint(positions=[9.0, 9.0, 9.0])])
    np.testing.assert_array_equal(command_to_array(traj, NAMES), [1, 2, 3])


def test_command_to_array_errors() -> None:
    with pytest.raises(ValueError, match="has 2 values, expected 3"):
        command_to_array(Float64MultiArray(data=[1.0, 2.0]), NAMES)
    with pytest.raises(ValueError, match="no points"):
        command_to_array(JointTrajectory(joint_names=NAMES), NAMES)
    with pytest.raises(ValueError, match=r"JointTrajectory has unknown joints \['x'\]"):
        command_to_array(JointTrajectory(joint_names=["a", "b", "c", "x"],
                                         points=[JointTrajectoryPoint(positions=[1.0, 2.0, 3.0, 4.0])]), NAMES)
    with pytest.raises(ValueError, match="unknown command message type 'twist'"):
        command_msg_class("twist")


@pytest.mark.parametrize("msg_type,cls", [("float64_multi_array", Float64MultiArray),
                                          ("joint_trajectory", JointTrajectory), ("joint_state", JointState)])
def test_array_to_command_roundtrip(msg_type: str, cls: type) -> None:
    values = np.array([0.5, -1.25, 2.0], dtype=np.float32)
    msg = array_to_command(values, NAMES, msg_type, stamp=Time(sec=7, nanosec=5), time_from_start=1.5)
    assert isinstance(msg, cls)
    np.testing.assert_array_equal(command_to_array(msg, NAMES), values)
    if cls is not Float64MultiArray:
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 5)
    if cls is JointTrajectory:
        tfs = msg.points[0].time_from_start
        assert (tfs.sec, tfs.nanosec) == (1, 500_000_000)
    with pytest.raises(ValueError, match="2 values for 3 joints"):
        array_to_command(values[:2], NAMES, msg_type)
