#!/usr/bin/env bash
# The README's main job on the embedded default (run by `make demo` after setup): the MuJoCo
# bimanual sim records scripted demonstrations through the recorder node, lapo_learning trains
# the sim recipe on them, the in-process evaluator keeps the checkpoint that does best on
# validation seeds, and the policy node runs it back on the sim (success rate, returns).
# Outputs in demo_output/sim/; `--help` lists the flags to scale it up (episodes, steps, ...).
#
# Alternative without ROS or MuJoCo (synthetic task, learning only):
#   .venv/bin/python -m lapo_learning.demo
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
# One torch thread per process unless told otherwise: the loop's processes share the CPU, and
# oversubscribed OpenMP threads made training here 10x slower (1.4 vs 15 steps/s beside one other job).
# The training phase, which runs alone, takes every core (--train_threads).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m lapo_ros.sim.loop "$@"
