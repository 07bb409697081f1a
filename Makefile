# Two commands do everything on a fresh machine (see README):
#   make demo   - the main job on the embedded default
#   make test   - the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test bench clean

setup:
	bash scripts/setup_env.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -rs

bench: setup
	$(PY) bench/train_throughput.py
	$(PY) bench/lapo_vs_bc.py
	$(PY) bench/recorder_throughput.py --duration 60
	$(PY) bench/policy_latency.py --threads 1
	$(PY) bench/sim_success.py

clean:
	rm -rf results demo_output .pytest_cache
