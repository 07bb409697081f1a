"""Which operator does a policy copy where good and bad demonstrations start from the same state?

    python bench/operator_choice.py DATASET CHECKPOINT [CHECKPOINT ...] [--ticks 0 5 10] [--out DIR]

DATASET is a mixed dataset as bench/sim_success.py assembles it: the first half of its episode files
are the clean demonstrations, the second half the failing ones on the same cube poses in the same
order (episode i and i + N/2 start from the same pose; the tool checks that their first joint states
agree). At tick t of each clean episode, the policy's action chunk is placed on the segment from the
clean demonstration's recorded chunk (0) to the failing one's on the same pose (1):

    lambda = (policy - clean) . (failing - clean) / |failing - clean|^2

At t = 0 both operators saw the same scene, so lambda says whom the policy copies where the
observation cannot tell them apart: behaviour cloning averages (~0.5); LAPO's weighting should give
~0. For a LAPO checkpoint the decoder's output at the prior mean (z = 0) is reported beside the
latent actor's choice, i.e. what the weighted VAE alone would do and what the actor adds. Later
ticks follow the clean episode's own states, where the arms have already moved apart.

Prints mean and standard deviation of lambda per checkpoint and tick, writes DIR/operator_choice.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning import dataset_format as fmt  # noqa: E402
from lapo_learning.schema import CAMERAS  # noqa: E402
from lapo_learning.lapo_agent import LAPOAgent  # noqa: E402
from lapo_learning.policy import Policy, load_policy  # noqa: E402

log = logging.getLogger("bench.operator_choice")

# Two recordings of the same pose start within a few recorder periods of each other: their first
# joint states differ by the arm's motion in that time (<= 0.05 rad measured), other poses' too but
# their cubes do not; a larger difference means the halves are not paired.
MAX_START_DIFFERENCE = 0.2  # rad


def segment_position(policy: np.ndarray, clean: np.ndarray, failing: np.ndarray) -> float:
    """Where `policy` projects on the segment clean (0) -> failing (1); NaN if the two coincide."""
    d = (failing - clean).ravel()
    norm = float(d @ d)
    return float((policy - clean).ravel() @ d / norm) if norm > 1e-12 else float("nan")


def paired_episodes(dataset: Path) -> list[tuple[Path, Path]]:
    """(clean, failing) file pairs of a mixed dataset; ValueError naming the files if it is not one."""
    files = sorted(dataset.glob("episode_*.hdf5"))
    if not files or len(files) % 2:
        raise ValueError(f"{dataset}: expected an even number of episode files (clean half, then the failing "
                         f"half on the same poses), found {len(files)}")
    half = len(files) // 2
    pairs = list(zip(files[:half], files[half:]))
    for clean, failing in pairs:
        with h5py.File(clean, "r") as a, h5py.File(failing, "r") as b:
            diff = float(np.abs(a[fmt.JOINT_PATH][0] - b[fmt.JOINT_PATH][0]).max())
        if diff > MAX_START_DIFFERENCE:
            raise ValueError(f"{clean.name} and {failing.name} do not start from the same state (first joint "
                             f"states differ by {diff:.3f} rad > {MAX_START_DIFFERENCE}): {dataset} is not a "
                             "mixed dataset of paired poses")
    return pairs


def read_tick(path: Path, t: int, chunk: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
    """Images per camera, joint state and the recorded action chunk at tick t; None if the chunk runs
    past the episode's end."""
    with h5py.File(path, "r") as f:
        actions = f[fmt.ACTIONS_KEY]
        if t + chunk > len(actions):
            return None
        images = {cam: f[fmt.image_key(cam)][t] for cam in CAMERAS}
        return images, f[fmt.JOINT_PATH][t].astype(np.float32), actions[t:t + chunk].astype(np.float32)


def prior_mean_chunk(policy: Policy, images: dict[str, np.ndarray], joint: np.ndarray) -> np.ndarray:
    """A LAPO policy's chunk decoded at z = 0 instead of the latent actor's choice."""
    agent = policy.agent
    arr, joint_t = policy.model_inputs(*([images[cam]] for cam in policy.schema.cameras), joint[None])
    with torch.inference_mode():
        cond = agent.policy_input(agent.encoder(agent.view(arr), joint_t), joint_t)
        z = torch.zeros(1, agent.actor(cond).shape[1])
        targets = agent.vae_target.decode(cond, z).numpy()
    return policy.stats.chunks_from_targets(targets, joint[None])[0]


def operator_choice(policy: Policy, pairs: list[tuple[Path, Path]], ticks: list[int]) -> dict[str, dict]:
    """{tick: {"policy": [lambda per pair], ("prior_mean": [...] for LAPO)}}."""
    chunk = max(policy.chunk_size, 1)
    out: dict[str, dict] = {}
    for t in ticks:
        rows: dict[str, list[float]] = {"policy": []}
        if isinstance(policy.agent, LAPOAgent):
            rows["prior_mean"] = []
        for clean, failing in pairs:
            a, b = read_tick(clean, t, chunk), read_tick(failing, t, chunk)
            if a is None or b is None:
                continue
            images, joint, clean_chunk = a
            failing_chunk = b[2]
            pred = policy.predict_chunks(*([images[cam]] for cam in policy.schema.cameras), joint[None])[0]
            rows["policy"].append(segment_position(pred, clean_chunk, failing_chunk))
            if "prior_mean" in rows:
                rows["prior_mean"].append(segment_position(prior_mean_chunk(policy, images, joint), clean_chunk,
                                                           failing_chunk))
        out[str(t)] = rows
    return out


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()) if v.size else float("nan"), "std": float(v.std()) if v.size else float("nan"),
            "pairs": int(v.size)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="mixed dataset folder: clean half, then the failing half on the same poses")
    p.add_argument("checkpoints", type=Path, nargs="+", help="LAPO or BC checkpoints (model_*.pth) trained on it")
    p.add_argument("--ticks", type=int, nargs="+", default=[0, 5, 10, 20],
                   help="recorder ticks of the clean episodes at which to compare (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("operator_choice"),
                   help="folder for operator_choice.json (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if any(t < 0 for t in args.ticks):
        p.error("--ticks must be >= 0")
    try:
        pairs = paired_episodes(args.dataset)
    except ValueError as exc:
        p.error(str(exc))

    report: dict[str, dict] = {}
    lines = [f"{'checkpoint':50s} {'tick':>4s} {'policy lambda':>15s} {'prior-mean lambda':>18s}"]
    for ckpt in args.checkpoints:
        policy = load_policy(ckpt)
        rows = operator_choice(policy, pairs, args.ticks)
        report[str(ckpt)] = {t: {k: summary(v) for k, v in r.items()} for t, r in rows.items()}
        for t, r in report[str(ckpt)].items():
            prior = f"{r['prior_mean']['mean']:8.2f} ± {r['prior_mean']['std']:4.2f}" if "prior_mean" in r else "-"
            lines.append(f"{str(ckpt)[-50:]:50s} {t:>4s} {r['policy']['mean']:8.2f} ± {r['policy']['std']:4.2f} "
                         f"{prior:>18s}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "operator_choice.json").write_text(json.dumps(
        {"dataset": str(args.dataset), "pairs": len(pairs), "ticks": args.ticks, "checkpoints": report}, indent=2))
    print("lambda: 0 = the clean operator's chunk, 1 = the failing operator's, 0.5 = their average")
    print("\n".join(lines))
    log.info("wrote %s", args.out / "operator_choice.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
