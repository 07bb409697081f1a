"""Run the MuJoCo sim robot (optionally with its scripted teleoperator).

    ros2 launch lapo_ros sim.launch.py
    ros2 launch lapo_ros sim.launch.py demonstrator:=true noise_std:=0.02 failure_prob:=0.2
    ros2 launch lapo_ros sim.launch.py demonstrator:=true failure_prob:=1.0 failure_mode:=early_release

The sim publishes /clock: start the recorder and the policy with use_sim_time:=true. The sim node
itself always runs with use_sim_time false, since it is the clock source. It also publishes its
stage rewards on /reward, which the recorder only records when told to:
    ros2 launch lapo_ros record.launch.py use_sim_time:=true reward_topic:=/reward
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    default_config = str(Path(get_package_share_directory("lapo_ros")) / "config" / "sim.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file (image size, rates, topics)"),
        DeclareLaunchArgument("demonstrator", default_value="false", choices=["true", "false"],
                              description="a scripted teleoperator publishes the commands"),
        DeclareLaunchArgument("noise_std", default_value="0.0",
                              description="demonstrator command noise std (rad)"),
        DeclareLaunchArgument("failure_prob", default_value="0.0",
                              description="demonstrator: probability of a botched episode"),
        DeclareLaunchArgument("failure_mode", default_value="all",
                              description="demonstrator: how a botched episode fails, see config/sim.yaml "
                                          "(all: one mode per episode)"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of episode 0"),
        Node(
            package="lapo_ros",
            executable="sim_robot",
            name="sim_robot",
            output="screen",
            emulate_tty=True,
            # Later entries win: the launch arguments override the file.
            parameters=[
                LaunchConfiguration("config"),
                {
                    "demonstrator": ParameterValue(LaunchConfiguration("demonstrator"), value_type=bool),
                    "noise_std": ParameterValue(LaunchConfiguration("noise_std"), value_type=float),
                    "failure_prob": ParameterValue(LaunchConfiguration("failure_prob"), value_type=float),
                    "failure_mode": LaunchConfiguration("failure_mode"),
                    "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                    "use_sim_time": False,
                },
            ],
        ),
    ])
