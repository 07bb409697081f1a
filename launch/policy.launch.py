"""Run a trained lapo policy on the robot (or the sim).

    ros2 launch lapo_ros policy.launch.py checkpoint:=results/Exp0001/multimodal_robot/model_final_lapo.pth
    ros2 launch lapo_ros policy.launch.py checkpoint:=... device:=cuda use_sim_time:=true

The node starts disabled unless the config sets `autostart`; enable it with
`ros2 service call /policy/enable std_srvs/srv/SetBool "{data: true}"`.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    default_config = str(Path(get_package_share_directory("lapo_ros")) / "config" / "policy.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", description="checkpoint (.pth) written by lapo_learning.train"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file (topics, joints, command type, safety limits)"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device for inference: cpu or cuda"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="follow /clock (the sim) instead of the wall clock"),
        Node(
            package="lapo_ros",
            executable="policy",
            name="policy",
            output="screen",
            emulate_tty=True,
            # Later entries win: the launch arguments override the file.
            parameters=[
                LaunchConfiguration("config"),
                {
                    "checkpoint": LaunchConfiguration("checkpoint"),
                    "device": LaunchConfiguration("device"),
                    "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                },
            ],
        ),
    ])
