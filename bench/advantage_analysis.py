"""What a trained LAPO policy's critic makes of good and bad demonstrations.

    python bench/advantage_analysis.py CHECKPOINT DATASET [--out DIR]

LAPO can only prefer the good operator if its advantage A = r + gamma V(s') - V(s) is higher on
the good operator's samples, so that the VAE's sample weight (expectile if A > margin, else
1 - expectile; or exp(A / temperature), here normalised over the whole dataset) favours them. For
every sample of DATASET (a folder of episode files, e.g. a mixed dataset) this computes V(s), A
and the weight with the checkpoint's own critic, preprocessing and normalisation, and groups the
samples by what the recorder stored about each episode: its `outcome` attribute (success,
failure, ...) and, when present, the demonstrator's `failure_mode`. It also decodes the latent
actor's choice and compares it with the recorded action chunk, per group: a policy that copies
the good operator is closer to the successful episodes' actions than to the failed ones'.

Prints a table per group (episodes, samples, mean weight, share of A > 0, mean A, mean V, mean
reward-to-go G (a V far below G makes "mc" advantages positive wherever reward lies ahead), action
error of the policy against the group's actions) and writes DIR/advantages.json and
DIR/advantages.png (V along the first episode of each group; the distribution of A per group).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning.agent import RETURN_ESTIMATES  # noqa: E402
from lapo_learning.checkpoint import load_checkpoint, restore_agent  # noqa: E402
from lapo_learning.dataset import load_dataset  # noqa: E402
from lapo_learning.episode_writer import FAILURE_MODE_ATTR  # noqa: E402
from lapo_learning.lapo_agent import LAPOAgent  # noqa: E402
from lapo_learning.replay import ReplayBuffer  # noqa: E402

log = logging.getLogger("bench.advantage_analysis")


def episode_groups(sources: list[str]) -> list[str]:
    """One label per episode file: its outcome, with the failure mode when the file names one."""
    labels = []
    for src in sources:
        with h5py.File(src, "r") as f:
            outcome = str(f.attrs.get("outcome", "unknown"))
            mode = str(f.attrs.get(FAILURE_MODE_ATTR, ""))
        labels.append(f"{outcome} ({mode})" if mode else outcome)
    return labels


@torch.no_grad()
def per_sample(agent: LAPOAgent, buf: ReplayBuffer, batch_size: int = 256) -> dict[str, np.ndarray]:
    """V(s), the reward-to-go, advantage, expectile weight and the policy's action error of every
    sample, in order."""
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    for batch in buf.iterate(batch_size):
        feat = agent.encoder(agent.view(batch.images), batch.joint)
        next_feat = (None if agent.config.advantage_estimate in RETURN_ESTIMATES
                     else agent.encoder(agent.view(batch.next_images), batch.next_joint))
        adv, weight = agent.advantage_weights(feat, next_feat, batch, normalise=False)
        pred = agent.act(batch.images, batch.joint)
        out["v"].append(agent.critic.v(feat).clamp(agent.min_v, agent.max_v))
        out["returns"].append(batch.returns)
        out["advantage"].append(adv)
        out["weight"].append(weight)
        out["action_mse"].append(((pred - batch.action) ** 2).mean(dim=1, keepdim=True))
    values = {k: torch.cat(v).squeeze(1).numpy() for k, v in out.items()}
    if agent.config.advantage_weighting == "exponential":  # as in training, but over the whole dataset
        values["weight"] = values["weight"] / values["weight"].mean()
    return values


def summarize(values: dict[str, np.ndarray], episode_of: np.ndarray, labels: list[str]) -> dict[str, dict]:
    rows = {}
    for label in sorted(set(labels)):
        episodes = [e for e, lab in enumerate(labels) if lab == label]
        m = np.isin(episode_of, episodes)
        rows[label] = {"episodes": len(episodes), "samples": int(m.sum()),
                       "mean_weight": float(values["weight"][m].mean()),
                       "adv_pos_frac": float((values["advantage"][m] > 0).mean()),
                       "mean_advantage": float(values["advantage"][m].mean()),
                       "mean_v": float(values["v"][m].mean()),
                       "mean_return": float(values["returns"][m].mean()),
                       "policy_action_mse": float(values["action_mse"][m].mean())}
    return rows


def plot(path: Path, values: dict[str, np.ndarray], episode_of: np.ndarray, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_v, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for label in sorted(set(labels)):
        first = labels.index(label)
        ax_v.plot(values["v"][episode_of == first], label=f"{label} (episode {first + 1})")
        m = np.isin(episode_of, [e for e, lab in enumerate(labels) if lab == label])
        ax_a.hist(values["advantage"][m], bins=60, histtype="step", density=True, label=label)
    ax_v.set(title="critic's V along one episode per group", xlabel="sample", ylabel="V(s)")
    ax_a.axvline(0.0, color="grey", lw=0.8)
    ax_a.set(title="advantage r + gamma V(s') - V(s)", xlabel="advantage", ylabel="density")
    for ax in (ax_v, ax_a):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a LAPO checkpoint (model_*.pth)")
    p.add_argument("dataset", type=Path, help="folder of episode files to analyse (e.g. a mixed dataset)")
    p.add_argument("--out", type=Path, default=Path("advantage_analysis"),
                   help="folder for advantages.json and advantages.png (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    ckpt = load_checkpoint(args.checkpoint)
    agent, stats = restore_agent(ckpt, "cpu", args.checkpoint)
    if not isinstance(agent, LAPOAgent):
        p.error(f"{args.checkpoint} is a {agent.config.algo} checkpoint: only LAPO has a critic to analyse")
    schema = agent.schema
    ds = load_dataset(args.dataset, image_size=schema.image_size, crops=schema.crops)
    schema.require_compatible(ds.schema, f"{args.dataset} does not match checkpoint {args.checkpoint}")
    labels = episode_groups(ds.sources)
    buf = ReplayBuffer(ds, np.arange(ds.n_episodes), stats, "cpu", seed=0, action_chunk=agent.config.action_chunk,
                       discount=agent.config.discount)
    episode_of = np.repeat(np.arange(ds.n_episodes), np.diff(np.r_[0, ds.episode_ends]))
    values = per_sample(agent, buf)
    rows = summarize(values, episode_of, labels)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "advantages.json").write_text(json.dumps(
        {"checkpoint": str(args.checkpoint), "dataset": str(args.dataset), "expectile": agent.config.expectile,
         "groups": rows}, indent=2))
    plot(args.out / "advantages.png", values, episode_of, labels)
    header = (f"{'group':28s} {'eps':>4s} {'samples':>7s} {'weight':>7s} {'A>0':>6s} {'mean A':>8s} "
              f"{'mean V':>8s} {'mean G':>8s} {'act MSE':>8s}")
    lines = [header] + [f"{k:28s} {r['episodes']:4d} {r['samples']:7d} {r['mean_weight']:7.3f} "
                        f"{r['adv_pos_frac']:6.2f} {r['mean_advantage']:8.4f} {r['mean_v']:8.3f} "
                        f"{r['mean_return']:8.3f} {r['policy_action_mse']:8.4f}"
                        for k, r in rows.items()]
    print("\n".join(lines))
    log.info("wrote %s and %s", args.out / "advantages.json", args.out / "advantages.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
