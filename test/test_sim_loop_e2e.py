"""The whole sim loop (lapo_ros.sim.loop) in a reduced configuration, with real nodes, DDS and HDF5.

Record 2 short demonstrations -> train 30 steps -> 1 short evaluation episode, then check that
the pieces connected: valid episode files, a final checkpoint, a policy that moved the simulated
arms, and no child process left behind. Plus the loop's error paths and its pure helpers.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lapo_learning import load_policy
from lapo_learning.dataset_format import open_episode, validate_file
from lapo_ros.sim.episode_stats import EpisodeResult, EpisodeTracker, parse_sim_status, summarize_returns
from lapo_ros.sim.evaluate import SimEvalConfig, evaluate
from lapo_ros.sim.processes import InterruptGate

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_LOOP, DOMAIN_BAD_CHECKPOINT = 71, 72


def run_loop(out: Path, domain_id: int, *flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lapo_ros.sim.loop", "--out", str(out), "--domain_id", str(domain_id), *flags]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def nodes_in_domain(domain_id: int) -> list[str]:
    """Live `lapo_ros.*` processes whose environment has this ROS_DOMAIN_ID (what the loop gives its children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if "lapo_ros." in cmdline and f"ROS_DOMAIN_ID={domain_id}".encode() in environ:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("sim_loop")
    result = run_loop(out, DOMAIN_LOOP, "--episodes", "2", "--max_episode_steps", "30", "--steps", "30",
                      "--algo", "lapo", "--image_size", "48", "48", "--render_size", "48", "64",
                      "--checkpoints", "2", "--select_episodes", "2", "--eval_episodes", "1", "--eval_time", "2.0",
                      "--train_threads", "1", "--failure_prob", "1.0", "--failure_mode", "left_miss")
    return out, result


@pytest.mark.slow
def test_loop_connects_the_pieces(loop_run) -> None:
    out, result = loop_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    files = sorted((out / "dataset").glob("episode_*.hdf5"))
    assert len(files) == 2
    for f in files:
        assert validate_file(f) == [], f
        with open_episode(f) as h:
            # By default the loop records what a real robot's recorder has, no reward topic: the sparse
            # outcome reward, all 0 in an episode that did not succeed.
            assert h.attrs["reward_source"] == "sparse_outcome" and not h["rewards"][:].any()
            assert h.attrs["failure_mode"] == "left_miss"  # what the sim's demonstrator played, for analyses
            actions = h["actions"][:]
        # Paused from the reset to the recorder's start, each episode is recorded from its first
        # tick: it opens with the demonstrator's 0.3 s hold at the reset pose (started while the
        # sim ran, the recording began 0.35-0.6 s in, after it), then the arms move.
        assert np.abs(np.diff(actions[:6], axis=0)).max() == 0, f
        assert np.abs(actions[-1] - actions[0]).max() > 0.01, f
    recording = json.loads((out / "recording_summary.json").read_text())
    # The recorder cut each demonstration at 30 samples (1 s of sim time, before any grasp).
    assert [e["outcome"] for e in recording["per_episode"]] == ["timeout", "timeout"]
    assert recording["rewards"] == "outcome"
    assert [e["failure_mode"] for e in recording["per_episode"]] == ["left_miss", "left_miss"]
    assert all(e["commands"] > 0 for e in recording["per_episode"])  # the demonstrator published

    run_dir = out / "results" / "Expsim" / "multimodal_robot"
    policy = load_policy(run_dir / "model_final_lapo.pth")
    # The sim recipe: the model sees the top camera's crop and the wrist cameras at 48x64.
    assert policy.schema.image_size == (48, 64) and policy.schema.joint_dim == 16
    assert policy.schema.crops == {"global_image": (0.3, 0.2, 0.5, 0.6)}
    assert policy.chunk_size == 30  # the main job trains with action chunks: the node ensembles them
    params = json.loads((run_dir / "params.json").read_text())
    # LAPO's part of the recipe: decaying learning rates, weights read from the reward-to-go against
    # its mean at the same step, the low weight only for a clearly worse sample, and nearly none;
    # batches drawn by those weights
    assert (params["lr_schedule"], params["advantage_estimate"], params["advantage_margin"], params["expectile"],
            params["aux_action_weight"], params["advantage_sampling"]) == ("cosine", "mc_step", -0.085, 0.99, 1.0, True)
    assert params["threads"] == 1  # --train_threads reaches the training run
    assert (run_dir / "training_curves.png").is_file()
    # Both saved checkpoints ran the validation seeds in-process; the evaluated one is the choice.
    rollouts = json.loads((run_dir / "rollouts.json").read_text())
    assert rollouts["validation_seeds"] == [3001, 3002]
    assert [c["step"] for c in rollouts["checkpoints"]] == [15, 30]
    assert all(c["episodes"] == 2 for c in rollouts["checkpoints"])

    summary = json.loads((out / "eval" / "eval_summary.json").read_text())
    assert summary["episodes"] == 1 and (out / "eval" / "eval_episodes.png").is_file()
    assert summary["checkpoint"] == rollouts["chosen"]
    episode = summary["per_episode"][0]
    assert episode["seed"] == 1001  # --eval_seed 1000, first reset
    assert episode["commands"] > 10  # the policy node drove the sim...
    assert episode["max_joint_change"] > 0.05  # ...and the arms left the reset pose (rad)
    assert "success rate" in result.stderr and "AverageReturn" in result.stderr


@pytest.mark.slow
def test_in_process_evaluator_is_deterministic_and_agrees_with_the_ros_loop(loop_run) -> None:
    """The fast evaluator on the loop's checkpoint and seed: the same episode for any number of
    workers, and the ROS loop's episode (policy node over DDS) within the scheduling noise."""
    out, result = loop_run
    assert result.returncode == 0, result.stderr[-3000:]
    ros_summary = json.loads((out / "eval" / "eval_summary.json").read_text())
    checkpoint = Path(ros_summary["checkpoint"])  # the one the loop chose and ran in the policy node
    cfg = SimEvalConfig.from_config_files(render_size=(48, 64), image_size=(48, 48), time_limit=2.0)
    one = evaluate(checkpoint, [1001, 1002, 1003], cfg, workers=1, progress=False)
    assert evaluate(checkpoint, [1003, 1001], cfg, workers=2, progress=False) == [one[2], one[0]]
    assert len({r.max_joint_change for r in one}) == 3  # the cube poses differ, so do the episodes

    ros = ros_summary["per_episode"][0]
    mine = one[0]
    assert mine.seed == ros["seed"] == 1001 and mine.sim_duration == pytest.approx(2.0)
    # One command per policy tick at the recording rate over the same sim time (the ROS loop polls
    # the sim's status every 0.1 s of wall time, so it may run a few ticks longer).
    policy_log = (out / "logs" / "eval_lapo_policy.log").read_text(errors="replace")
    assert abs(mine.commands - ros["commands"]) <= 10, (  # the log: why it stopped
        f"{ros['commands']} commands through the nodes, {mine.commands} in-process; {mine}; {ros}; "
        f"policy log: {policy_log[-3000:]}")
    assert mine.max_joint_change == pytest.approx(ros["max_joint_change"], rel=0.1), (mine, ros)
    assert mine.episode_return == ros["episode_return"]


@pytest.mark.slow
def test_loop_leaves_no_child_running(loop_run) -> None:
    out, _ = loop_run
    assert nodes_in_domain(DOMAIN_LOOP) == []
    for node in ("record_dataset_sim_robot", "record_dataset_recorder", "eval_lapo_sim_robot", "eval_lapo_policy"):
        text = (out / "logs" / f"{node}.log").read_text()
        assert "Traceback" not in text, text[-3000:]


def run_with_corrupt_checkpoint(loop_run, tmp_path: Path, *flags: str,
                                timeout: float) -> tuple[Path, subprocess.CompletedProcess]:
    """The loop on the recorded dataset with a model_final_lapo.pth that is not a checkpoint."""
    out, _ = loop_run
    shutil.copytree(out / "dataset", tmp_path / "dataset")
    run_dir = tmp_path / "results" / "Expsim" / "multimodal_robot"
    run_dir.mkdir(parents=True)
    (run_dir / "model_final_lapo.pth").write_bytes(b"not a checkpoint")
    result = run_loop(tmp_path, DOMAIN_BAD_CHECKPOINT, "--skip_recording", "--skip_training", "--algo", "lapo", *flags,
                      timeout=timeout)
    assert result.returncode == 1
    assert nodes_in_domain(DOMAIN_BAD_CHECKPOINT) == []
    return run_dir, result


@pytest.mark.slow
def test_policy_that_refuses_to_start_is_named(loop_run, tmp_path: Path) -> None:
    """A corrupt checkpoint: the policy node exits, the loop says so (with its log) and stops the sim."""
    _, result = run_with_corrupt_checkpoint(loop_run, tmp_path, "--select_episodes", "0", "--render_size", "48", "64",
                                            "--eval_episodes", "1", timeout=180)
    assert "node policy exited with code 1" in result.stderr, result.stderr[-3000:]
    assert "model_final_lapo.pth" in result.stderr  # the policy's own error, from its log


@pytest.mark.slow
def test_checkpoint_the_sim_cannot_run_is_named_before_any_node_starts(loop_run, tmp_path: Path) -> None:
    """Choosing among saved checkpoints runs them in-process first: a corrupt one is named there."""
    run_dir, result = run_with_corrupt_checkpoint(loop_run, tmp_path, timeout=120)
    assert f"cannot evaluate {run_dir / 'model_final_lapo.pth'} on the sim" in result.stderr, result.stderr[-3000:]
    assert "not a readable lapo checkpoint" in result.stderr
    assert "starting sim_robot" not in result.stderr  # no node was started for it


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    result = run_loop(tmp_path, DOMAIN_BAD_CHECKPOINT, "--skip_recording", timeout=60)
    assert result.returncode == 1
    assert f"{tmp_path / 'dataset'}: the recorder wrote no episode files" in result.stderr


def test_parse_sim_status() -> None:
    s = parse_sim_status(True, "episode=3 seed=1003 reward=4 demonstrator=done sim_time=12.340")
    assert (s.success, s.episode, s.seed, s.reward, s.demonstrator, s.sim_time) == (True, 3, 1003, 4.0, "done", 12.34)
    assert s.failure == ""  # no demonstrator's failure field
    botched = "episode=3 seed=1003 reward=2 demonstrator=done failure=wrong_height sim_time=12.340"
    assert parse_sim_status(False, botched).failure == "wrong_height"
    assert parse_sim_status(True, botched.replace("wrong_height", "none")).failure == ""
    with pytest.raises(ValueError, match="no field 'sim_time'"):
        parse_sim_status(False, "episode=3 seed=1003 reward=4 demonstrator=done")
    with pytest.raises(ValueError, match="malformed"):
        parse_sim_status(False, "episode=x seed=1 reward=0 demonstrator=off sim_time=0")


def test_tracker_and_summary() -> None:
    t = EpisodeTracker()
    for r in (0.0, 2.0, 1.0):
        t.add_reward(r)
    t.add_joints([0.0, 1.0])
    t.add_joints([0.2, 0.7])
    t.add_command()
    assert (t.reward_max, t.reward_sum, t.reward_count, t.commands) == (2.0, 3.0, 3, 1)
    assert t.max_joint_change == pytest.approx(0.3)
    with pytest.raises(ValueError, match="3 positions"):
        t.add_joints([0.0, 0.0, 0.0])
    t.reset()
    assert (t.reward_max, t.reward_count, t.commands, t.max_joint_change) == (0.0, 0, 0, 0.0)

    results = [EpisodeResult(seed=i, success=i == 0, episode_return=ret, reward_sum=0.0, reward_ticks=0,
                             sim_duration=1.0, commands=1, max_joint_change=0.1) for i, ret in enumerate((4.0, 2.0))]
    s = summarize_returns(results)
    assert (s["AverageReturn"], s["StdReturn"], s["success_rate"], s["episodes"]) == (3.0, 1.0, 0.5, 2)
    # ACT's criterion counts stage 4 reached at any instant, also where the hand-over was not held
    dropped = EpisodeResult(seed=2, success=False, episode_return=4.0, reward_sum=0.0, reward_ticks=0,
                            sim_duration=1.0, commands=1, max_joint_change=0.1)
    s = summarize_returns([*results, dropped])
    assert s["success_rate"] == pytest.approx(1 / 3) and s["act_success_rate"] == pytest.approx(2 / 3)
    assert s["act_success_ci95"][0] < 2 / 3 < s["act_success_ci95"][1]
    with pytest.raises(ValueError):
        summarize_returns([])


@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_interrupt_gate_holds_a_signal_until_rclpy_returns(sig: int, raised: type) -> None:
    gate = InterruptGate()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    gate.install()
    try:
        after_signal = []
        with pytest.raises(raised):
            with gate.held():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # the handler runs here; it must not raise inside held()
                after_signal.append(True)
        assert after_signal == [True]
        with pytest.raises(raised):  # outside held() it raises at once
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
        with gate.held():  # nothing left pending
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
