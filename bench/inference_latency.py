"""`select_action` latency alone (no ROS), on CPU or GPU: p50/p99 per image encoder.

    python bench/inference_latency.py [--device cuda] [--encoders cnn_3conv_1fc_0 resnet18] [--rates 30 50]
                                      [--action_chunks 1 30]

For each encoder and action chunk size a checkpoint is trained for two steps on a small sample
dataset (the weights do not matter for latency, the architecture does), loaded with
`load_policy(device=...)` and called on raw 84x84 uint8 images, as the policy node calls it (with
chunks, that includes the temporal ensembling). Each call follows a pause: none (back to
back, warm caches) and one control period per --rates entry (as cold as the node's ticks).
On CPU the figure is this thread's CPU time, which other processes do not inflate; on a GPU it
is wall time (the copy of the action back to the host waits for the GPU), measured with the
CUDA graph that `select_action` replays there and, side by side, eagerly. `bench/policy_latency.py`
reuses this for its isolated figures next to the node's own.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning import train  # noqa: E402
from lapo_learning.create_dataset import create_sample  # noqa: E402
from lapo_learning.policy import load_policy  # noqa: E402
from lapo_learning.schema import CAMERAS  # noqa: E402

log = logging.getLogger("bench.inference_latency")
ENCODERS = ("cnn_3conv_1fc_0", "resnet18")


def make_checkpoints(encoders: list[str], folder: Path, chunks: tuple[int, ...] = (1,)) -> dict[str, Path]:
    """A two-step checkpoint per encoder and action chunk size, trained on CPU on a 200-sample
    dataset in `folder`; labelled by the encoder, plus ' chunkK' for chunks of K > 1 actions."""
    data = folder / "sample.hdf5"
    create_sample(data, 200, 0.0, 0, (84, 84))
    out = {}
    for enc in encoders:
        for chunk in chunks:
            label = enc if chunk == 1 else f"{enc} chunk{chunk}"
            exp = label.replace(" ", "_")
            code = train.main(["--hdf5_path", str(data), "--results_dir", str(folder / "results"), "--ExpID", exp,
                               "--image_encoder", enc, "--max_timesteps", "2", "--batch_size", "4",
                               "--action_chunk", str(chunk), "--latent_dim", "32",
                               "--eval_freq", "1000", "--save_freq", "1000", "--device", "cpu",
                               "--log_level", "WARNING"])
            if code != 0:
                raise RuntimeError(f"training {label} failed (exit {code})")
            out[label] = folder / "results" / f"Exp{exp}" / train.RUN_SUBDIR / "model_final_lapo.pth"
    return out


def isolated_inference(checkpoint: Path, pause_s: float, device: str = "cpu", cuda_graph: bool = True,
                       n: int = 200) -> tuple[float, float]:
    """p50/p99 (ms) of `select_action` alone, each call after `pause_s` of sleep (see module doc)."""
    policy = load_policy(checkpoint, device=device, cuda_graph=cuda_graph)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*policy.schema.image_size, 3), dtype=np.uint8) for _ in CAMERAS]
    joint = np.zeros(policy.schema.joint_dim, dtype=np.float32)
    clock = time.thread_time if device == "cpu" else time.perf_counter
    times = []
    for i in range(n + 20):
        if pause_s:
            time.sleep(pause_s)
        t0 = clock()
        policy.select_action(*images, joint)
        if i >= 20:  # the first calls initialise lazily (and, on a GPU, pick kernels)
            times.append(clock() - t0)
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return float(p50), float(p99)


def measure_all(checkpoints: dict[str, Path], rates: list[float], device: str) -> dict[str, dict[float, tuple]]:
    """{label: {pause_s: (p50, p99)}} for no pause and one control period per rate; on a GPU each
    encoder twice, with its CUDA graph (label: the encoder) and eagerly ('<encoder> eager')."""
    pauses = [0.0] + [1.0 / rate for rate in rates]
    modes = {"": True, " eager": False} if device.startswith("cuda") else {"": False}
    return {enc + suffix: {pause: isolated_inference(ckpt, pause, device, graph) for pause in pauses}
            for enc, ckpt in checkpoints.items() for suffix, graph in modes.items()}


def report(results: dict[str, dict[float, tuple]], device: str) -> None:
    what = "CPU time of this thread" if device == "cpu" else "wall time"
    log.info("select_action alone on %s (%s), each call after a pause:", device, what)
    for enc, by_pause in results.items():
        for pause, (p50, p99) in by_pause.items():
            log.info("  %-22s pause %5.1f ms: p50 %6.2f ms, p99 %6.2f ms", enc, 1e3 * pause, p50, p99)


def as_json(results: dict[str, dict[float, tuple]]) -> dict:
    return {enc: {f"pause_{1e3 * pause:.1f}ms": v for pause, v in by_pause.items()} for enc, by_pause in results.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="inference device: cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS, help="image encoders")
    p.add_argument("--rates", nargs="+", type=float, default=[30.0, 50.0],
                   help="control rates (Hz) whose period is used as the pause between calls")
    p.add_argument("--action_chunks", nargs="+", type=int, default=[1, 30],
                   help="action chunk sizes to compare (K > 1: select_action also ensembles K chunks)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        log.info("GPU: %s, torch %s", torch.cuda.get_device_name(args.device), torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure_all(make_checkpoints(args.encoders, Path(tmp), tuple(args.action_chunks)),
                              args.rates, args.device)
    report(results, args.device)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "isolated_ms": as_json(results)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
