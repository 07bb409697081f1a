"""ROS 2 nodes of lapo: the demonstration recorder, the policy runner and the MuJoCo sim robot.

The ROS-free learning code lives in `lapo_learning`; these modules are thin adapters around it.
"""
import os

# MuJoCo picks its GL backend at first import: default to CPU rendering (OSMesa) before any
# lapo_ros module can import it. A user's MUJOCO_GL (egl on a GPU machine) wins.
os.environ.setdefault("MUJOCO_GL", "osmesa")
