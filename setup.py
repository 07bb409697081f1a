"""ament_python package `lapo_ros` that also carries the ROS-free `lapo_learning` package.

Works with colcon on a ROS 2 install and with `pip install -e .` where no ROS is installed.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lapo_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["lapo_ros", "lapo_ros.*", "lapo_learning", "lapo_learning.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "h5py",
        "pyyaml",
        "tqdm",
        "pillow",
        "matplotlib",
        "torch",
        "torchvision",
        "tensorboard",
    ],
    # convert: python -m lapo_learning.convert (from-rosbag2 needs rosbags, to-lerobot pyarrow and av)
    extras_require={"sim": ["gym-aloha"], "test": ["pytest"], "convert": ["rosbags", "pyarrow", "av"]},
    zip_safe=True,
    maintainer="lapo maintainers",
    maintainer_email="maintainers@lapo.dev",
    description="Record multimodal bimanual demonstrations, train multimodal LAPO, deploy on the robot.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "recorder = lapo_ros.recorder:main",
            "policy = lapo_ros.policy:main",
            "sim_robot = lapo_ros.sim.robot_node:main",
            "sim_loop = lapo_ros.sim.loop:main",
            "scripted_demonstrator = lapo_ros.sim.demonstrator:main",
            "sim_evaluate = lapo_ros.sim.evaluate:main",
            "lapo_train = lapo_learning.train:main",
            "lapo_create_dataset = lapo_learning.create_dataset:main",
            "lapo_convert = lapo_learning.convert.__main__:main",
        ],
    },
)
