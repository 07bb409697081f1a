import os
import sys
from pathlib import Path

import pytest

# CPU rendering for MuJoCo in every test process (the Makefile sets it too).
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
sys.path.insert(0, str(Path(__file__).parent))

from learning_fixtures import make_sample  # noqa: E402


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory) -> Path:
    """A small clean sample dataset (40x40 images), made once per test session."""
    return make_sample(tmp_path_factory.mktemp("data") / "sample.hdf5")
