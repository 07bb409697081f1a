#!/usr/bin/env bash
# The README's main job on the embedded default (run by `make demo` after setup).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m lapo_learning.demo "$@"
