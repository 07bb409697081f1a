"""The recorder and the policy node must read the same inputs: what the policy sees is what was recorded.

Both nodes declare these parameters with one function (observation_inputs.declare_input_parameters);
this checks that the shipped YAML files give them the same values, so a topic, joint order or
image size edited in one file but not the other fails CI instead of skewing a deployment.
"""
from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "config"
# Inputs that define the observation/action; max_age may differ (the policy tolerates more lag).
SHARED = ("cameras", "joint_states_topic", "joint_names", "action_names", "action", "image_height", "image_width")


def params(name: str) -> dict:
    return yaml.safe_load((CONFIG / name).read_text())["/**"]["ros__parameters"]


def test_recorder_and_policy_configs_agree_on_inputs():
    recorder, policy = params("recorder.yaml"), params("policy.yaml")
    assert "joint_names" in recorder and len(recorder["joint_names"]) == 16
    for key in SHARED:
        assert recorder.get(key) == policy.get(key), f"config/recorder.yaml and config/policy.yaml differ in {key!r}"


def test_sim_topics_match_the_inputs():
    sim = yaml.safe_load((CONFIG / "sim.yaml").read_text())["sim_robot"]["ros__parameters"]
    recorder = params("recorder.yaml")
    assert sim["left_wrist_topic"] == recorder["cameras"]["left_image"]["topic"]
    assert sim["right_wrist_topic"] == recorder["cameras"]["right_image"]["topic"]
    assert sim["global_topic"] == recorder["cameras"]["global_image"]["topic"]
    assert sim["joint_states_topic"] == recorder["joint_states_topic"]
    assert sim["command_topic"] == recorder["action"]["topic"]


def test_shipped_recorder_config_needs_no_reward_topic():
    """A real robot has no reward topic: the shipped config records the sparse outcome reward (the
    sim loop and `record.launch.py reward_topic:=/reward` set the sim's topic explicitly)."""
    assert params("recorder.yaml")["reward"]["topic"] == ""
