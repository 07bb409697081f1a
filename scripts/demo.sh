#!/usr/bin/env bash
# The README's main job on the embedded default (run by `make demo` after setup): the MuJoCo
# bimanual sim records scripted demonstrations through the recorder node, lapo_learning trains
# LAPO on them, and the policy node runs the checkpoint back on the sim (success rate, returns).
# Outputs in demo_output/sim/; `--help` lists the flags to scale it up (episodes, steps, ...).
#
# Alternative without ROS or MuJoCo (synthetic task, learning only):
#   .venv/bin/python -m lapo_learning.demo
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
exec .venv/bin/python -m lapo_ros.sim.loop "$@"
