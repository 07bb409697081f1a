"""Training CLI outputs, learning, exact resume, and checkpoint round-trip through load_policy."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from lapo_learning import CheckpointError, load_policy
from lapo_learning.checkpoint import load_checkpoint, restore_agent
from lapo_learning.dataset import load_dataset
from lapo_learning.train import build_parser
from learning_fixtures import SMALL_IMAGE, run_train


def progress_rows(run_dir):
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(sample_file, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    run_dir = run_train(sample_file, results, "learn", 400, "--eval_freq", "100", "--save_freq", "200")
    return run_dir


def test_outputs_and_learning(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"progress.csv", "params.json", "model_best_lapo.pth", "model_final_lapo.pth",
            "model_200.pth", "model_400.pth", "training_curves.png"} <= names
    rows = progress_rows(trained)
    assert [int(r["step"]) for r in rows] == [100, 200, 300, 400]
    for key in ("critic_loss", "vae_loss", "actor_loss", "q_mean", "v_mean", "val_action_mse",
                "val_td_error", "val_weighted_action_mse", "selection_metric", "samples_per_s",
                "sample_time_frac"):
        assert key in rows[0]
    last = rows[-1]
    # a short CPU run beats the mean-action predictor on held-out episodes
    assert float(last["val_action_mse"]) < 0.8 * float(last["val_mean_action_mse"])
    params = json.loads((trained / "params.json").read_text())
    assert params["algo"] == "lapo" and params["schema"]["image_size"] == list(SMALL_IMAGE)


def test_checkpoint_round_trip_gives_identical_actions(trained, sample_file):
    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    p1 = load_policy(trained / "model_final_lapo.pth")
    p2 = load_policy(trained / "model_final_lapo.pth")
    imgs = [ds.images[c][:5] for c in ds.schema.cameras]
    a1 = p1.select_action_batch(*imgs, ds.joint[:5])
    a2 = p2.select_action_batch(*imgs, ds.joint[:5])
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (5, 16) and a1.dtype == np.float32
    single = p1.select_action(*(i[0] for i in imgs), ds.joint[0])
    np.testing.assert_allclose(single, a1[0], rtol=1e-5, atol=1e-5)
    # self-describing: schema, statistics and the training args travel inside
    assert p1.schema.joint_dim == 16 and p1.schema.image_size == SMALL_IMAGE
    assert p1.schema.rate_hz == 10.0 and p1.args["algo"] == "lapo"
    assert p1.stats.action_min.shape == (16,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU, none here")
def test_cuda_graph_select_action_matches_eager(trained, sample_file):
    """On a GPU, select_action replays a captured CUDA graph: the eager actions, fresh inputs each call."""
    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    checkpoint = trained / "model_final_lapo.pth"
    graphed = load_policy(checkpoint, device="cuda")
    graphed.warm_up()  # captures the graph, as the policy node does before its first tick
    assert graphed._graphed is not None
    eager = load_policy(checkpoint, device="cuda", cuda_graph=False)
    actions = []
    for i in (0, 7, 14):
        obs = [ds.images[c][i] for c in ds.schema.cameras]
        actions.append(graphed.select_action(*obs, ds.joint[i]))
        np.testing.assert_allclose(actions[-1], eager.select_action(*obs, ds.joint[i]), rtol=1e-4, atol=1e-4)
    assert eager._graphed is None
    assert not np.allclose(actions[0], actions[1])  # the replay read the new inputs, not the first ones
    batch = graphed.select_action_batch(*([ds.images[c][i] for i in (0, 7)] for c in ds.schema.cameras),
                                        ds.joint[[0, 7]])  # batches run eagerly
    np.testing.assert_allclose(batch, actions[:2], rtol=1e-4, atol=1e-4)


def test_select_action_resizes_raw_images_like_training(trained, sample_file):
    """A camera frame of another size is resized by the policy exactly as the dataset loader did."""
    raw = load_dataset(sample_file)  # 40x40 stored
    policy = load_policy(trained / "model_final_lapo.pth")
    big = [np.kron(raw.images[c][0], np.ones((3, 3, 1), np.uint8)) for c in raw.schema.cameras]  # 120x120
    small = [raw.images[c][0] for c in raw.schema.cameras]
    out_big = policy.select_action(*big, raw.joint[0])
    out_small = policy.select_action(*small, raw.joint[0])
    assert np.abs(out_big - out_small).max() < 0.5 * np.abs(out_small).max()  # same scene, same answer
    with pytest.raises(ValueError, match="joint: expected shape"):
        policy.select_action(*small, raw.joint[0][:15])
    with pytest.raises(ValueError, match="left_image: expected a uint8 HxWx3 image"):
        policy.select_action(small[0].astype(np.float32), *small[1:], raw.joint[0])


def test_relative_actions_are_decoded_at_the_measured_joints(sample_file, tmp_path):
    run_dir = run_train(sample_file, tmp_path, "relative", 20, "--action_space", "relative")
    policy = load_policy(run_dir / "model_final_lapo.pth")
    assert policy.stats.action_joint_index == tuple(range(16))  # generic names pair by position
    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    imgs = [ds.images[c][:4] for c in ds.schema.cameras]
    with torch.inference_mode():
        out = policy.agent.act([torch.from_numpy(i) for i in imgs],
                               torch.from_numpy(policy.stats.joint.normalize(ds.joint[:4]))).numpy()
    expected = policy.stats.action.unnormalize(out) + ds.joint[:4]
    np.testing.assert_allclose(policy.select_action_batch(*imgs, ds.joint[:4]), expected, rtol=1e-5, atol=1e-5)

    # grippers kept absolute: their actions are decoded without the measured position
    run_dir = run_train(sample_file, tmp_path, "grippers_absolute", 20, "--action_space", "relative",
                        "--absolute_actions", "action_1[45]")
    policy = load_policy(run_dir / "model_final_lapo.pth")
    assert policy.stats.action_joint_index == (*range(14), None, None)
    with torch.inference_mode():
        out = policy.agent.act([torch.from_numpy(i) for i in imgs],
                               torch.from_numpy(policy.stats.joint.normalize(ds.joint[:4]))).numpy()
    expected = policy.stats.action.unnormalize(out) + np.concatenate([ds.joint[:4, :14], np.zeros((4, 2))], axis=1)
    np.testing.assert_allclose(policy.select_action_batch(*imgs, ds.joint[:4]), expected, rtol=1e-5, atol=1e-5)


def test_checkpoint_cannot_run_code_and_bad_files_are_refused(trained, tmp_path):
    # weights_only loading: a pickle that would execute code is refused, not run
    evil = tmp_path / "evil.pth"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "lapo-checkpoint", "payload": Boom()}, evil)
    with pytest.raises(CheckpointError, match="not a readable lapo checkpoint: it holds Python objects other than "
                                              "tensors, numbers and strings") as err:
        load_policy(evil)
    messages = [str(err.value)]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth: not a readable lapo checkpoint: it is not a complete "
                                              "torch archive") as err:
        load_policy(garbage)
    messages.append(str(err.value))
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="missing format tag"):
        load_policy(other)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((trained / "model_final_lapo.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_policy(truncated)
    messages.append(str(err.value))
    # Say what to do, and never torch's advice to load with weights_only=False (which runs code).
    for message in messages:
        assert "weights_only" not in message and "retrain" in message and "Check the path" in message, message
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_policy(tmp_path / "absent.pth")


def test_nonfinite_weights_are_refused_and_old_statistics_still_load(trained, tmp_path):
    ckpt = torch.load(trained / "model_final_lapo.pth", weights_only=True)
    vae = ckpt["state"]["modules"]["vae"]
    name = next(k for k, v in vae.items() if v.is_floating_point())
    vae[name].view(-1)[:2] = float("inf")
    broken = tmp_path / "diverged.pth"
    torch.save(ckpt, broken)
    with pytest.raises(CheckpointError, match=rf"diverged.pth: state.modules.vae.{name} holds 2 NaN/inf value\(s\)"):
        load_policy(broken)
    # A checkpoint written before the robust action range: loads, without it (the node then says so).
    ckpt = torch.load(trained / "model_final_lapo.pth", weights_only=True)
    stats = json.loads(ckpt["stats"])
    assert len(stats.pop("action_low")) == 16 and len(stats.pop("action_high")) == 16
    ckpt["stats"] = json.dumps(stats)
    old = tmp_path / "old.pth"
    torch.save(ckpt, old)
    policy = load_policy(old)
    assert policy.stats.action_low is None and policy.stats.action_high is None
    assert load_policy(trained / "model_final_lapo.pth").stats.action_low.shape == (16,)


def test_resume_continues_the_same_curve(sample_file, tmp_path):
    straight = run_train(sample_file, tmp_path, "straight", 40, "--eval_freq", "10", "--save_freq", "20")
    resumed = run_train(sample_file, tmp_path, "resumed", 40, "--eval_freq", "10", "--save_freq", "20",
                        "--load_model", "20", "--load_exp", "straight")
    a, b = progress_rows(straight), progress_rows(resumed)
    assert [r["step"] for r in b] == ["10", "20", "30", "40"]  # rows up to the resume step are kept
    for ra, rb in zip(a[2:], b[2:]):
        for key in ("critic_loss", "vae_loss", "actor_loss", "val_action_mse"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-6, abs=1e-9), key
    wa = torch.load(straight / "model_40.pth", weights_only=True)["state"]["modules"]
    wb = torch.load(resumed / "model_40.pth", weights_only=True)["state"]["modules"]
    for name in wa:
        for k in wa[name]:
            torch.testing.assert_close(wa[name][k], wb[name][k], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_trained_on_a_gpu_deploys_and_resumes_on_a_cpu(trained, sample_file, tmp_path, caplog):
    # A CUDA generator's state is its 16-byte Philox seed and offset, a CPU one's 5056 bytes of
    # Mersenne Twister: the states a GPU run saves, as measured on an H200, written into a CPU run's file.
    ckpt = torch.load(trained / "model_200.pth", weights_only=True)
    ckpt["state"]["aug_generator"] = torch.arange(16, dtype=torch.uint8)
    ckpt["rng"]["buffer"] = torch.arange(16, 32, dtype=torch.uint8)
    gpu_dir = tmp_path / "Expgpu" / trained.name
    gpu_dir.mkdir(parents=True)
    torch.save(ckpt, gpu_dir / "model_200.pth")

    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    imgs = [ds.images[c][:3] for c in ds.schema.cameras]
    np.testing.assert_array_equal(load_policy(gpu_dir / "model_200.pth").select_action_batch(*imgs, ds.joint[:3]),
                                  load_policy(trained / "model_200.pth").select_action_batch(*imgs, ds.joint[:3]))
    assert "random state" not in caplog.text  # inference reads no training state

    resumed = run_train(sample_file, tmp_path, "resumed_on_cpu", 220, "--eval_freq", "10", "--save_freq", "20",
                        "--load_model", "200", "--load_exp", "gpu")
    assert (resumed / "model_220.pth").is_file()
    assert "augmentation generator: the saved random state is from another device type" in caplog.text
    assert "replay sampling generator: the saved random state is from another device type" in caplog.text


def test_cosine_schedule_decays_every_rate_to_zero_and_resumes_exactly(sample_file, tmp_path):
    args = ("--algo", "bc", "--eval_freq", "10", "--save_freq", "10", "--lr_schedule", "cosine", "--actor_lr", "1e-3")
    straight = run_train(sample_file, tmp_path, "cos", 40, *args)
    resumed = run_train(sample_file, tmp_path, "cos_resumed", 40, *args, "--load_model", "20", "--load_exp", "cos")

    def groups(run_dir, step):
        state = torch.load(run_dir / f"model_{step}.pth", weights_only=True)["state"]
        return [g for o in state["optimizers"].values() for g in o["param_groups"]]

    for step, share in ((10, 0.5 * (1 + np.cos(np.pi * 9 / 40))), (40, 0.5 * (1 + np.cos(np.pi * 39 / 40)))):
        for g in groups(straight, step):
            assert g["initial_lr"] == pytest.approx(1e-3) and g["lr"] == pytest.approx(1e-3 * share), step
    assert groups(straight, 40)[0]["lr"] < 1e-5
    wa = torch.load(straight / "model_40.pth", weights_only=True)["state"]["modules"]
    wb = torch.load(resumed / "model_40.pth", weights_only=True)["state"]["modules"]
    for name in wa:
        for k in wa[name]:
            torch.testing.assert_close(wa[name][k], wb[name][k], rtol=1e-5, atol=1e-6)


def test_weight_average_is_what_the_policy_acts_with_and_resumes_exactly(sample_file, tmp_path):
    args = ("--algo", "bc", "--eval_freq", "10", "--save_freq", "20", "--ema_decay", "0.9")
    straight = run_train(sample_file, tmp_path, "ema", 40, *args)
    resumed = run_train(sample_file, tmp_path, "ema_resumed", 40, *args, "--load_model", "20", "--load_exp", "ema")
    for kind in ("modules", "ema"):
        wa = torch.load(straight / "model_40.pth", weights_only=True)["state"]
        wb = torch.load(resumed / "model_40.pth", weights_only=True)["state"]
        wa, wb = (w["modules"] if kind == "modules" else w["ema"]["modules"] for w in (wa, wb))
        for name in wa:
            for k in wa[name]:
                torch.testing.assert_close(wa[name][k], wb[name][k], rtol=1e-5, atol=1e-6, msg=f"{kind} {name}.{k}")

    ckpt = load_checkpoint(straight / "model_40.pth")
    assert ckpt["state"]["ema"]["updates"] == 40
    agent, _ = restore_agent(ckpt, "cpu")
    trained = {k: v.clone() for k, v in agent.head.state_dict().items()}
    average = ckpt["state"]["ema"]["modules"]["head"]
    assert not torch.equal(trained["0.weight"], average["0.weight"])
    with agent.averaged_weights():
        torch.testing.assert_close(agent.head.state_dict(), average)
    torch.testing.assert_close(agent.head.state_dict(), trained)  # the trained weights are back
    policy = load_policy(straight / "model_final_bc.pth")  # inference acts with the average
    torch.testing.assert_close(policy.agent.head.state_dict(), average)

    # Update 41 moves the average (1 - decay) of the way to the trained weights, the decay still held
    # below 0.9 by the warm-up, (1 + n) / (10 + n).
    before = {k: v.clone() for k, v in agent.ema["head"].state_dict().items()}
    agent.update_average()
    share = 1 - 42 / 51
    for k, v in agent.ema["head"].state_dict().items():
        torch.testing.assert_close(v, before[k] + share * (trained[k] - before[k]))


def test_bc_algo_and_cli_errors(sample_file, tmp_path, caplog):
    run_dir = run_train(sample_file, tmp_path, "bc", 20, "--algo", "bc", "--eval_freq", "10")
    assert (run_dir / "model_final_bc.pth").exists()
    assert "bc_loss" in progress_rows(run_dir)[0]
    from lapo_learning import train
    missing = tmp_path / "nope.hdf5"
    assert train.main(["--hdf5_path", str(missing), "--results_dir", str(tmp_path), "--max_timesteps", "1"]) == 1
    assert "nope.hdf5" in caplog.text
    assert train.main(["--hdf5_path", str(sample_file), "--results_dir", str(tmp_path), "--ExpID", "x",
                       "--load_model", "7", "--max_timesteps", "9", "--device", "cpu"]) == 1
    assert "model_7.pth: no such checkpoint" in caplog.text
    base = ["--hdf5_path", str(sample_file), "--results_dir", str(tmp_path), "--max_timesteps", "2", "--device", "cpu"]
    assert train.main([*base, "--absolute_actions", "*finger*"]) == 2
    assert "--absolute_actions needs --action_space relative" in caplog.text
    assert train.main([*base, "--action_space", "relative", "--absolute_actions", "*finger*"]) == 1
    assert "absolute actions ['*finger*'] match no action name of the data: ['action_0'" in caplog.text


def test_advantage_sampling_reaches_the_training_batches(sample_file, tmp_path):
    # Drawn by weight (0.99 / 0.01), the batches hold almost only samples above the step's mean
    # return; drawn uniformly, about half of the sample data's are (test_advantage_weighting).
    run_dir = run_train(sample_file, tmp_path, "drawn", 20, "--eval_freq", "10", "--advantage_estimate", "mc_step",
                        "--expectile", "0.99", "--advantage_sampling")
    assert json.loads((run_dir / "params.json").read_text())["advantage_sampling"] is True
    assert all(float(row["adv_pos_frac"]) > 0.9 for row in progress_rows(run_dir))
    # The sim recipe turns it on and the benchmark appends a user's flags after the recipe's: the
    # later one wins, so --no-advantage_sampling gets the weighted losses back.
    parse = build_parser().parse_args
    assert parse(["--hdf5_path", "x", "--advantage_sampling", "--no-advantage_sampling"]).advantage_sampling is False
    assert parse(["--hdf5_path", "x"]).advantage_sampling is False


def test_threads_hold_for_the_run_only(sample_file, tmp_path, monkeypatch, caplog):
    from lapo_learning import train
    seen = []

    def fake_train(args):  # what matters is the pool size while training runs
        seen.append(torch.get_num_threads())
        if len(seen) == 2:
            raise ValueError("bad data")

    monkeypatch.setattr(train, "train", fake_train)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = ["--hdf5_path", str(sample_file), "--results_dir", str(tmp_path), "--device", "cpu"]
        assert train.main([*base, "--threads", "2"]) == 0
        assert train.main([*base, "--threads", "2"]) == 1  # a failed run gives the threads back too
        assert seen == [2, 2] and torch.get_num_threads() == 1
        assert train.main([*base, "--threads", "0"]) == 2
        assert "--threads must be > 0" in caplog.text
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("algo", ["lapo", "bc"])
def test_action_chunks_train_and_ensemble_in_select_action(algo, sample_file, tmp_path):
    run_dir = run_train(sample_file, tmp_path, f"chunk_{algo}", 300, "--algo", algo, "--action_chunk", "4",
                        "--latent_dim", "16", "--eval_freq", "300")
    last = progress_rows(run_dir)[-1]
    assert float(last["val_action_mse"]) < 0.8 * float(last["val_mean_action_mse"])  # it learns the chunks
    decay = 0.3
    policy = load_policy(run_dir / f"model_final_{algo}.pth", ensemble_decay=decay)
    assert policy.chunk_size == 4 and policy.stats.action.mean.shape == (64,)
    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    imgs = [ds.images[c][:2] for c in ds.schema.cameras]
    chunks = policy.predict_chunks(*imgs, ds.joint[:2])
    assert chunks.shape == (2, 4, 16)
    np.testing.assert_allclose(policy.select_action_batch(*imgs, ds.joint[:2]), chunks[:, 0], atol=1e-6)
    # select_action: tick 0 is the first chunk's step 0; tick 1 averages its step 1 with the new chunk's step 0
    obs = [i[0] for i in imgs], [i[1] for i in imgs]
    np.testing.assert_allclose(policy.select_action(*obs[0], ds.joint[0]), chunks[0, 0], atol=1e-5)
    w = np.exp(-decay * np.arange(2))
    np.testing.assert_allclose(policy.select_action(*obs[1], ds.joint[1]),
                               (w[0] * chunks[0, 1] + w[1] * chunks[1, 0]) / w.sum(), atol=1e-5)
    policy.reset()
    np.testing.assert_allclose(policy.select_action(*obs[1], ds.joint[1]), chunks[1, 0], atol=1e-5)
    policy.warm_up()  # leaves no chunk behind
    np.testing.assert_allclose(policy.select_action(*obs[0], ds.joint[0]), chunks[0, 0], atol=1e-5)


def test_auxiliary_action_loss_trains_and_round_trips(sample_file, tmp_path):
    """--aux_action_weight: the head is saved, loaded and logged; the policy is still the VAE's."""
    run_dir = run_train(sample_file, tmp_path, "aux", 20, "--aux_action_weight", "1.0", "--eval_freq", "10")
    progress = (run_dir / "progress.csv").read_text().splitlines()
    assert "aux_action_loss" in progress[0].split(",")
    policy = load_policy(run_dir / "model_final_lapo.pth")
    assert policy.agent.config.aux_action_weight == 1.0 and policy.agent.aux_head is not None
    ckpt = torch.load(run_dir / "model_final_lapo.pth", weights_only=True)
    assert "aux_head" in ckpt["state"]["modules"]
    ds = load_dataset(sample_file, image_size=SMALL_IMAGE)
    imgs = [ds.images[c][:2] for c in ds.schema.cameras]
    assert np.isfinite(policy.select_action_batch(*imgs, ds.joint[:2])).all()
