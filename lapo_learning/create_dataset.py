"""Dataset tools: create a learnable sample dataset, validate a dataset file or directory.

    python -m lapo_learning.create_dataset --create_sample --output sample_data.hdf5 --n_samples 5000
    python -m lapo_learning.create_dataset --validate --hdf5_path your_data.hdf5
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from lapo_learning import dataset_format as fmt
from lapo_learning.schema import CAMERAS, ObservationSchema
from lapo_learning.synthetic_task import N_JOINTS, TaskConfig, generate_episodes

log = logging.getLogger("lapo_learning.create_dataset")
SAMPLE_RATE_HZ = 10.0


def create_sample(output: Path, n_samples: int, poor_fraction: float, seed: int,
                  image_size: tuple[int, int]) -> None:
    """Write a flat seed-layout file of the synthetic reaching task (see synthetic_task)."""
    if output.exists():
        raise FileExistsError(f"{output}: exists; refusing to overwrite (delete it or pick another --output)")
    episodes = list(tqdm(generate_episodes(n_samples, poor_fraction, seed, TaskConfig(image_size=image_size)),
                         desc="generating episodes", unit="ep"))
    cat = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0] if k != "good"}
    schema = ObservationSchema(
        image_size=image_size,
        joint_names=ObservationSchema.default_names("joint", N_JOINTS),
        action_names=ObservationSchema.default_names("action", N_JOINTS),
        rate_hz=SAMPLE_RATE_HZ,
    )
    with h5py.File(output, "w") as f:
        for cam in CAMERAS:
            f.create_dataset(fmt.image_key(cam), data=cat[cam], chunks=(1, *cat[cam].shape[1:]),
                             compression="lzf")
        f.create_dataset(fmt.JOINT_PATH, data=cat["joint"].astype(np.float32))
        f.create_dataset(fmt.ACTIONS_KEY, data=cat["actions"].astype(np.float32))
        f.create_dataset(fmt.REWARDS_KEY, data=cat["rewards"].astype(np.float32))
        f.create_dataset(fmt.TERMINALS_KEY, data=cat["terminals"].astype(bool))
        f.create_dataset(fmt.TIMEOUTS_KEY, data=cat["timeouts"].astype(bool))
        f.create_dataset(fmt.EPISODE_ENDS_KEY, data=np.cumsum([len(e["actions"]) for e in episodes]))
        # Ground truth for benchmarks: the good demonstrator's command and each episode's quality.
        f.create_dataset("info/target", data=cat["target"].astype(np.float32))
        f.create_dataset("info/episode_good", data=np.array([e["good"] for e in episodes]))
        f.attrs[fmt.SCHEMA_ATTR] = schema.to_json()
        f.attrs[fmt.RATE_ATTR] = SAMPLE_RATE_HZ
        f.attrs["source"] = "lapo_learning.synthetic_task"
    log.info("wrote %s: %d samples, %d episodes (%d poor)", output, len(cat["actions"]), len(episodes),
             sum(not e["good"] for e in episodes))


def validate(path: Path, include_incomplete: bool = False) -> int:
    """Print the tree of every file (seed format) and its problems, judged as the loader judges
    them (`dataset_format.check_dataset`, every image read too); 0 if train would take the data."""
    try:
        check = fmt.check_dataset(path, include_incomplete, read_data=True)
    except fmt.DatasetError as exc:
        print(f"validating {path}: {exc}")
        return 1
    for c in check.files:
        print(f"validating dataset: {c.path}\n{'=' * 60}")
        if c.readable:
            try:
                with fmt.open_episode(c.path) as f:
                    tree = fmt.describe_tree(f)
                print("\nfile structure:")
                print("\n".join(tree))
            except fmt.READ_ERRORS:
                pass  # listed among its problems
        if not c.problems and not check.skipped(c):
            print("\n✓ dataset format is valid")
            continue
        if check.skipped(c):
            print(f"\n! {check.skip_reason(c)}: loaders skip it (train --include_incomplete takes it if it has "
                  "rows)" + (", so its problems below are not counted" if c.problems else ""))
        else:
            print("\n✗ invalid:")
        for p in c.problems:
            print(f"  - {c.path}: {p}")
    print(f"\n{path}: {len(check.usable)} usable, {len(check.incomplete)} incomplete (skipped), "
          f"{len(check.invalid)} invalid of {len(check.files)} file(s)")
    if check.reference is None:
        print("✗ no episode to load")
    return 1 if check.invalid or check.reference is None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--create_sample", action="store_true",
                      help="write a learnable sample dataset (synthetic image-conditioned reaching)")
    mode.add_argument("--validate", action="store_true",
                      help="check a file (or a directory of episode files) as train loads it: the layout, "
                           "the stored schema against the data, rows never written, one schema for all files, "
                           "every image readable, implausible values; exit 1 naming each problem")
    parser.add_argument("--output", type=Path, default=Path("sample_data.hdf5"),
                        help="--create_sample: output file (never overwritten)")
    parser.add_argument("--n_samples", type=int, default=5000, help="--create_sample: number of transitions")
    parser.add_argument("--poor_fraction", type=float, default=0.0,
                        help="--create_sample: fraction of episodes from the poor demonstrator (0..1); "
                             "0.5 makes a mixed-quality dataset")
    parser.add_argument("--image_size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"),
                        help="--create_sample: image height and width")
    parser.add_argument("--seed", type=int, default=0, help="--create_sample: random seed")
    parser.add_argument("--hdf5_path", type=Path, help="--validate: file or directory to check")
    parser.add_argument("--include_incomplete", action="store_true",
                        help="--validate: check episodes marked incomplete as `train --include_incomplete` "
                             "uses them, instead of reporting them as skipped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.create_sample:
        if args.n_samples <= 0 or not 0.0 <= args.poor_fraction <= 1.0:
            parser.error("--n_samples must be > 0 and --poor_fraction in [0, 1]")
        try:
            create_sample(args.output, args.n_samples, args.poor_fraction, args.seed, tuple(args.image_size))
        except FileExistsError as exc:
            log.error("%s", exc)
            return 1
        return 0
    if args.hdf5_path is None:
        parser.error("--validate needs --hdf5_path")
    return validate(args.hdf5_path, args.include_incomplete)


if __name__ == "__main__":
    sys.exit(main())
