"""Record demonstrations: cameras, joint states and commanded actions into HDF5 episodes.

    ros2 launch lapo_ros record.launch.py output_dir:=/data/demos
    ros2 launch lapo_ros record.launch.py config:=my_robot.yaml
    ros2 launch lapo_ros record.launch.py use_sim_time:=true reward_topic:=/reward   # the sim

Episodes are started and stopped with services:
    ros2 service call /recorder/start std_srvs/srv/Trigger
    ros2 service call /recorder/stop std_srvs/srv/SetBool "{data: true}"   # true = success
    ros2 service call /recorder/discard std_srvs/srv/Trigger
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    default_config = str(Path(get_package_share_directory("lapo_ros")) / "config" / "recorder.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file (topics, joint order, rate, image size)"),
        DeclareLaunchArgument("output_dir", default_value="recordings",
                              description="directory of the episode files (created if missing)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="follow /clock (the sim) instead of the wall clock"),
        DeclareLaunchArgument("reward_topic", default_value="",
                              description="std_msgs Float32 reward topic (the sim: /reward); empty = no "
                                          "reward topic, the sparse reward from each episode's outcome "
                                          "(a real robot). Overrides the config file, as output_dir does"),
        Node(
            package="lapo_ros",
            executable="recorder",
            name="recorder",
            output="screen",
            emulate_tty=True,
            # Later entries win: the launch arguments override the file.
            parameters=[
                LaunchConfiguration("config"),
                {
                    "output_dir": ParameterValue(LaunchConfiguration("output_dir"), value_type=str),
                    "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                    "reward.topic": ParameterValue(LaunchConfiguration("reward_topic"), value_type=str),
                },
            ],
        ),
    ])
