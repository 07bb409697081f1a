"""The HDF5 episode layout (the seed's contract plus optional extensions) and its validation.

Required (the seed's layout, never to be broken)::

    observations/{left_image,right_image,global_image}  [N,H,W,3] uint8
    observations/joint                                  [N,J]     float
    actions                                             [N,A]     float
    rewards                                             [N]       float
    terminals                                           [N]       bool

Optional extensions:

    timeouts      [N] bool     episode cut by a time limit (bootstrapped, unlike a terminal)
    after_gap     [N] bool     the recording paused before this row (longer than the recorder's
                               max_gap_periods): no transition or action chunk spans the gap
    episode_ends  [E] int64    exclusive end index of every episode, increasing, last == N
    timestamps    [N] float64  sample time (s), written by the recorder
    stamps/<stream> [N] float64 header stamp of each stream's message used for the sample
    attrs: `lapo_schema` (ObservationSchema JSON), `complete` (False while an episode is being
           written or when it was interrupted; a boolean, 1/0 or "true"/"false", anything else is
           an error), `rate_hz`, plus recorder metadata.

Without `episode_ends`, episodes end after every terminal/timeout and at the end of the file.
`check_dataset` (built on `check_file`) is the one check behind both the loader and
`create_dataset --validate`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lapo_learning.outliers import describe_outliers, find_outliers
from lapo_learning.schema import CAMERAS, ObservationSchema

OBS_GROUP = "observations"
JOINT_KEY = "joint"
ACTIONS_KEY = "actions"
REWARDS_KEY = "rewards"
TERMINALS_KEY = "terminals"
TIMEOUTS_KEY = "timeouts"
AFTER_GAP_KEY = "after_gap"
EPISODE_ENDS_KEY = "episode_ends"
TIMESTAMPS_KEY = "timestamps"
STAMPS_GROUP = "stamps"
SCHEMA_ATTR = "lapo_schema"
COMPLETE_ATTR = "complete"
RATE_ATTR = "rate_hz"
EPISODE_GLOB = "*.hdf5"


class DatasetError(ValueError):
    """A dataset file does not follow the layout; the message names the file and the field."""


def image_key(camera: str) -> str:
    return f"{OBS_GROUP}/{camera}"


JOINT_PATH = f"{OBS_GROUP}/{JOINT_KEY}"
# Per-sample datasets whose fill value (what HDF5 reads for rows never written) no recording holds.
SENSOR_KEYS = tuple(image_key(c) for c in CAMERAS) + (JOINT_PATH, ACTIONS_KEY)


def open_episode(path: str | Path) -> h5py.File:
    """Open a dataset file read-only. `swmr=True` because the recorder writes in SWMR mode: a file
    whose writer was killed can only be opened that way (it then reads `complete=False`)."""
    return h5py.File(path, "r", swmr=True)


# What h5py raises on a truncated or corrupt file (KeyError: an object header past the file's end).
READ_ERRORS = (OSError, KeyError, RuntimeError)
# Rows a check reads at a time (bounds the memory when it reads raw-size frames).
BLOCK_ROWS = 64


def unreadable(exc: BaseException) -> str:
    """The problem of a file h5py fails to read, with h5py's reason."""
    reason = exc.args[0] if exc.args else exc  # KeyError's str() would add quotes
    return f"cannot be read as HDF5 ({reason}): the file is truncated or corrupt"


def parse_flag(value: Any, what: str) -> bool:
    """A boolean attribute as tools store it: bool, 0/1, or "true"/"false" in any case.

    Anything else raises DatasetError naming `what`: `bool("False")` is True, so a lax reading
    would take an episode stored with complete="False" for a complete one."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, (str, bytes)):
        text = _attr_str(value).strip().lower()
        if text in ("true", "false"):
            return text == "true"
    raise DatasetError(f"{what}: expected a boolean (true/false or 1/0), got {value!r}")


@dataclass
class FileCheck:
    """What `check_file` found in one episode file."""

    path: Path
    problems: list[str] = field(default_factory=list)  # '<key>: <problem>'; empty = valid
    complete: bool | None = None  # the `complete` flag; None when unknown (unreadable file, bad flag)
    n_rows: int | None = None  # rows of `actions`; None when it cannot be read
    schema: ObservationSchema | None = None  # set when the file is valid
    readable: bool = False  # opened as HDF5, so its tree can be printed

    @property
    def empty_partial(self) -> bool:
        """A recording stopped before its first sample was stored: nothing to load, and no error."""
        return self.complete is False and self.n_rows == 0


def check_file(path: str | Path, check_outliers: bool = True, read_data: bool = False) -> FileCheck:
    """Check one file against the layout: its problems, `complete` flag, row count and schema.

    Beyond the layout (keys, row counts, dtypes, shapes, NaN/inf, `episode_ends`), the stored
    schema must agree with the shapes, and no row may be one a writer declared but never wrote
    (`_unwritten_rows`). A file without a `complete` flag is complete unless it holds no rows (a
    killed recording's file). `check_outliers`: also look for implausible joint/action values
    (`outlier_problems`). `read_data`: also read every image, so that a corrupt compressed chunk
    shows here and not only when the loader reads it (`create_dataset --validate` does).
    """
    check = FileCheck(Path(path))
    if not check.path.is_file():
        check.problems.append("no such file")
    elif not h5py.is_hdf5(check.path):
        check.problems.append("not an HDF5 file (wrong format or not a dataset)")
    else:
        try:
            with open_episode(check.path) as f:
                check.readable = True
                _check_open(f, check, check_outliers, read_data)
        except READ_ERRORS as exc:
            check.problems.append(unreadable(exc))
    return check


def validate_file(path: str | Path, check_outliers: bool = True) -> list[str]:
    """Every problem of one file, as `'<key>: <problem>'` strings (empty list = valid); see
    `check_file`. Callers prefix the file name."""
    return check_file(path, check_outliers).problems


def outlier_problems(f: h5py.File) -> list[str]:
    """Joint and action values far outside their column's robust range (`lapo_learning.outliers`),
    named by field, joint/action name, row and value. Needs a file whose layout is valid."""
    schema = read_schema(f)
    names = {JOINT_PATH: schema.joint_names, ACTIONS_KEY: schema.action_names}
    return [problem for key in (JOINT_PATH, ACTIONS_KEY)
            for problem in describe_outliers(key, find_outliers(f[key][()]), names[key])]


def _check_open(f: h5py.File, check: FileCheck, check_outliers: bool, read_data: bool) -> None:
    if len(f.keys()) == 0:
        check.problems.append("file is empty: no datasets (expected observations/, actions, rewards, terminals)")
        return
    actions = f.get(ACTIONS_KEY)
    if isinstance(actions, h5py.Dataset) and actions.ndim >= 1:
        check.n_rows = actions.shape[0]
    if COMPLETE_ATTR in f.attrs:
        try:
            check.complete = parse_flag(f.attrs[COMPLETE_ATTR], f"attrs/{COMPLETE_ATTR}")
        except DatasetError as exc:
            check.problems.append(str(exc))
    else:  # the seed's files carry no flag; one with no rows is what a killed recording leaves
        check.complete = check.n_rows != 0
    problems = check.problems
    problems += _layout_problems(f, check.n_rows)
    if check.n_rows == 0 and check.complete:
        problems.append(f"{ACTIONS_KEY}: N=0, the file holds no samples but is marked complete")
    stored, schema_problem = _stored_schema(f)
    problems += [schema_problem] if schema_problem else []
    if problems:
        return
    if stored is not None:
        problems += _schema_vs_data(f, stored)
    if check.n_rows:
        problems += _unwritten_rows(f, check.n_rows)
        if read_data:
            problems += _image_read_problems(f, check.n_rows)
    if not problems and check_outliers:
        problems += outlier_problems(f)
    if not problems:
        check.schema = read_schema(f)


def _layout_problems(f: h5py.File, n: int | None) -> list[str]:
    problems: list[str] = []
    required = [image_key(c) for c in CAMERAS] + [JOINT_PATH, ACTIONS_KEY, REWARDS_KEY, TERMINALS_KEY]
    missing = [k for k in required if k not in f]
    problems += [f"{k}: missing (required key)" for k in missing]
    present = {k: f[k] for k in required if k in f}
    for key, ds in present.items():
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"{key}: is a group, expected a dataset")
            continue
        if n is not None and ds.shape[:1] != (n,):
            problems.append(f"{key}: has {ds.shape[0] if ds.shape else 0} rows, expected N={n} "
                            f"(the length of {ACTIONS_KEY})")
    for cam in CAMERAS:
        ds = present.get(image_key(cam))
        if isinstance(ds, h5py.Dataset):
            if ds.dtype != np.uint8:
                problems.append(f"{image_key(cam)}: dtype {ds.dtype}, expected uint8")
            if ds.ndim != 4 or ds.shape[-1] != 3:
                problems.append(f"{image_key(cam)}: shape {ds.shape}, expected [N,H,W,3]")
            elif min(ds.shape[1:3]) < 1:
                problems.append(f"{image_key(cam)}: images of {ds.shape[1]}x{ds.shape[2]} pixels, "
                                "expected H and W >= 1")
    for key in (JOINT_PATH, ACTIONS_KEY):
        ds = present.get(key)
        if isinstance(ds, h5py.Dataset):
            if not np.issubdtype(ds.dtype, np.floating):
                problems.append(f"{key}: dtype {ds.dtype}, expected float32")
            elif ds.ndim != 2:
                problems.append(f"{key}: shape {ds.shape}, expected [N,D]")
            elif ds.shape[1] == 0:
                problems.append(f"{key}: 0 columns, expected at least one "
                                f"{'joint' if key == JOINT_PATH else 'action'} dimension")
            else:
                bad = ~np.isfinite(ds[()])
                if bad.any():
                    rows = np.unique(np.nonzero(bad)[0])
                    problems.append(f"{key}: {int(bad.sum())} NaN/inf values (first rows {rows[:5].tolist()})")
    ds = present.get(REWARDS_KEY)
    if isinstance(ds, h5py.Dataset):
        if ds.ndim != 1 or not (np.issubdtype(ds.dtype, np.floating) or np.issubdtype(ds.dtype, np.integer)):
            problems.append(f"{REWARDS_KEY}: dtype {ds.dtype} shape {ds.shape}, expected float [N]")
        elif not np.isfinite(ds[()]).all():
            problems.append(f"{REWARDS_KEY}: contains NaN/inf")
    for key in (TERMINALS_KEY, TIMEOUTS_KEY, AFTER_GAP_KEY):
        ds = f.get(key)
        if isinstance(ds, h5py.Dataset) and (ds.dtype != np.bool_ or ds.ndim != 1):
            problems.append(f"{key}: dtype {ds.dtype} shape {ds.shape}, expected bool [N]")
        if key != TERMINALS_KEY and isinstance(ds, h5py.Dataset) and n is not None and len(ds) != n:
            problems.append(f"{key}: has {len(ds)} rows, expected N={n}")
    if EPISODE_ENDS_KEY in f and n is not None:
        ends = np.asarray(f[EPISODE_ENDS_KEY][()])
        if ends.ndim != 1 or len(ends) == 0 or not np.issubdtype(ends.dtype, np.integer):
            problems.append(f"{EPISODE_ENDS_KEY}: expected a non-empty int [E] array")
        elif np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != n:
            problems.append(f"{EPISODE_ENDS_KEY}: must be strictly increasing, > 0, last == N={n}; "
                            f"got {ends[:5].tolist()}...{ends[-1:].tolist()}")
    rate = f.attrs.get(RATE_ATTR)
    if rate is not None and not (np.ndim(rate) == 0 and isinstance(rate, (int, float, np.number))
                                 and not isinstance(rate, (bool, np.bool_)) and 0 < float(rate) < np.inf):
        problems.append(f"attrs/{RATE_ATTR}: expected a positive number of Hz, got {rate!r}")
    return problems


def _stored_schema(f: h5py.File) -> tuple[ObservationSchema | None, str | None]:
    """The schema in the file's attributes (None when it carries none), or the problem with it."""
    if SCHEMA_ATTR not in f.attrs:
        return None, None
    try:
        return ObservationSchema.from_json(_attr_str(f.attrs[SCHEMA_ATTR])), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"attrs/{SCHEMA_ATTR}: invalid schema JSON ({exc})"


def _schema_vs_data(f: h5py.File, schema: ObservationSchema) -> list[str]:
    """Where the stored schema contradicts the data it describes (the trainer builds its model
    from the schema, so a contradiction would end in a shape error deep inside training)."""
    where = f"attrs/{SCHEMA_ATTR}"
    problems = []
    for label, names, key in (("joint_names", schema.joint_names, JOINT_PATH),
                              ("action_names", schema.action_names, ACTIONS_KEY)):
        columns = f[key].shape[1]
        if len(names) != columns:
            problems.append(f"{where}: {len(names)} {label}, but {key} has {columns} columns")
    if schema.cameras != CAMERAS:
        problems.append(f"{where}: cameras {list(schema.cameras)}, but the layout's cameras are {list(CAMERAS)}")
    first = image_key(CAMERAS[0])
    height, width = f[first].shape[1:3]
    if schema.image_size != (height, width):  # the stored schema's size is the first camera's
        problems.append(f"{where}: image_size {list(schema.image_size)}, but {first} holds "
                        f"{height}x{width} images")
    rate = f.attrs.get(RATE_ATTR)
    if rate is not None and schema.rate_hz is not None and float(rate) != schema.rate_hz:
        problems.append(f"{where}: rate_hz {schema.rate_hz}, but attrs/{RATE_ATTR} is {float(rate)}")
    return problems


def _unwritten_rows(f: h5py.File, n: int) -> list[str]:
    """Rows a writer declared but never wrote (a dataset created at its final size and filled in
    part, a writer killed half-way): HDF5 reads them as the fill value, so training would take
    rows of zeros for demonstrations.

    Only the images, joints and actions are looked at: for them the fill value is never what a
    recording means, while rewards, terminals and time-outs may rely on it (0, False). Chunked
    storage (the recorder's, and any resizable or compressed dataset) allocates a chunk on its
    first write, so a chunk never allocated is exact evidence, found with one call per dataset.
    Contiguous storage is allocated whole on the first write; there the trace is content:
    trailing rows in which all three cameras, the joints and the actions hold exactly their fill
    value, which no camera and no arm produce.
    """
    missing = []
    for key in SENSOR_KEYS:
        ds = f[key]
        if ds.chunks is None:
            continue
        expected = int(np.prod([-(-size // chunk) for size, chunk in zip(ds.shape, ds.chunks)]))
        stored = ds.id.get_num_chunks()
        if stored < expected:
            missing.append(f"{key} ({expected - stored} of {expected} chunks of {ds.chunks[0]} rows)")
    if missing:
        return [(f"rows never written: no data was ever stored in part of {', '.join(missing)}; the file "
                 f"declares more rows (N={n}) than its writer wrote, and those read as the fill value (0)")]
    tail = _fill_tail(f, n)
    if tail:
        return [(f"rows {n - tail}-{n - 1} ({tail} of N={n}) were never written: all images, joints and actions "
                 "hold only the fill value there, as HDF5 returns for rows no writer stored")]
    return []


def _fill_tail(f: h5py.File, n: int) -> int:
    """How many of the last rows hold only the fill value in the images, joints and actions; read
    from the end in blocks, the small datasets first, so a normal file costs one read of a row."""
    tail = n
    for key in reversed(SENSOR_KEYS):
        ds = f[key]
        run, end = 0, n
        while run < tail:
            start = max(n - tail, end - BLOCK_ROWS)
            block = ds[start:end]
            is_fill = (block == ds.fillvalue).reshape(len(block), -1).all(axis=1)
            written = np.flatnonzero(~is_fill)
            run += len(block) - (written[-1] + 1 if len(written) else 0)
            if len(written):
                break
            end = start
        tail = run
        if not tail:
            break
    return tail


def _image_read_problems(f: h5py.File, n: int) -> list[str]:
    """Image rows that cannot be read (a corrupt or truncated chunk), the first per camera."""
    problems = []
    for cam in CAMERAS:
        ds = f[image_key(cam)]
        for start in range(0, n, BLOCK_ROWS):
            try:
                ds[start:start + BLOCK_ROWS]
            except READ_ERRORS as exc:
                problems.append(f"{image_key(cam)}: rows {start}-{min(start + BLOCK_ROWS, n) - 1} "
                                f"{unreadable(exc)}")
                break
    return problems


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def is_complete(f: h5py.File) -> bool:
    """False for an episode the recorder did not close cleanly (still open, interrupted, crashed);
    True without the flag (the seed's files). DatasetError naming the file for a flag that is not
    a boolean (see `parse_flag`)."""
    if COMPLETE_ATTR not in f.attrs:
        return True
    return parse_flag(f.attrs[COMPLETE_ATTR], f"{f.filename}: attrs/{COMPLETE_ATTR}")


@dataclass
class DatasetCheck:
    """Every file of a dataset as the loader treats it: used, skipped as incomplete, or invalid."""

    files: list[FileCheck]
    include_incomplete: bool
    reference: FileCheck | None = None  # a usable file with the schema most usable files share

    def skipped(self, check: FileCheck) -> bool:
        """An incomplete episode left out; an empty partial always (it has nothing to load)."""
        return check.complete is False and (not self.include_incomplete or check.empty_partial)

    @property
    def incomplete(self) -> list[FileCheck]:
        return [c for c in self.files if self.skipped(c)]

    @property
    def invalid(self) -> list[FileCheck]:
        return [c for c in self.files if c.problems and not self.skipped(c)]

    @property
    def usable(self) -> list[FileCheck]:
        return [c for c in self.files if not c.problems and not self.skipped(c)]

    @staticmethod
    def skip_reason(check: FileCheck) -> str:
        if check.empty_partial:
            return "incomplete episode with no rows (the recording stopped before its first sample)"
        return "episode marked incomplete (interrupted recording)"

    def problem_lines(self) -> list[str]:
        """'<file>: <problem>' for every problem of every invalid file."""
        return [f"{c.path}: {p}" for c in self.invalid for p in c.problems]


def check_dataset(path: str | Path, include_incomplete: bool = False, check_outliers: bool = True,
                  read_data: bool = False) -> DatasetCheck:
    """Check a flat file, or every episode file of a directory, as the loader will use them.

    The one check behind `load_dataset` and `create_dataset --validate`, so that validate reports
    whatever train refuses. Each file is checked with `check_file`; incomplete episodes are left
    out unless `include_incomplete` (an empty one always); the files used together must share a
    schema, and each is compared with the schema most of them have, so one odd file is the one
    reported. Raises DatasetError for a directory without episode files.
    """
    path = Path(path)
    paths = sorted(path.glob(EPISODE_GLOB)) if path.is_dir() else [path]
    if not paths:
        raise DatasetError(f"{path}: directory holds no {EPISODE_GLOB} episode files")
    check = DatasetCheck([check_file(p, check_outliers, read_data) for p in paths], include_incomplete)
    usable = check.usable
    if usable:
        signatures = [(c.schema.cameras, c.schema.joint_names, c.schema.action_names) for c in usable]
        most_common = Counter(signatures).most_common(1)[0][0]  # ties: the first file's
        check.reference = reference = usable[signatures.index(most_common)]
        for c in usable:
            differences = reference.schema.mismatches(c.schema)
            if differences:
                c.problems.append(f"schema does not match {reference.path.name}, whose schema most files "
                                  f"share (its value first): {'; '.join(differences)}")
    return check


def read_schema(f: h5py.File) -> ObservationSchema:
    """The schema stored in the file, or one derived from its shapes when it carries none."""
    if SCHEMA_ATTR in f.attrs:
        return ObservationSchema.from_json(_attr_str(f.attrs[SCHEMA_ATTR]))
    image_shape = f[image_key(CAMERAS[0])].shape
    rate = f.attrs.get(RATE_ATTR)
    return ObservationSchema(
        image_size=(image_shape[1], image_shape[2]),
        joint_names=ObservationSchema.default_names("joint", f[JOINT_PATH].shape[1]),
        action_names=ObservationSchema.default_names("action", f[ACTIONS_KEY].shape[1]),
        rate_hz=float(rate) if rate is not None else None,
    )


def episode_ends(f: h5py.File) -> np.ndarray:
    """Exclusive end index of every episode in the file."""
    n = len(f[ACTIONS_KEY])
    if EPISODE_ENDS_KEY in f:
        return np.asarray(f[EPISODE_ENDS_KEY][()], dtype=np.int64)
    done = np.asarray(f[TERMINALS_KEY][()], dtype=bool)
    if TIMEOUTS_KEY in f:
        done = done | np.asarray(f[TIMEOUTS_KEY][()], dtype=bool)
    ends = np.nonzero(done)[0] + 1
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    return ends.astype(np.int64)


def describe_tree(f: h5py.File) -> list[str]:
    """The file's tree as printed by `create_dataset --validate` (the seed's format)."""
    lines: list[str] = []

    def walk(group: h5py.Group, indent: str) -> None:
        keys = list(group.keys())
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            branch = "└─" if last else "├─"
            item = group[key]
            if isinstance(item, h5py.Group):
                lines.append(f"{indent}{branch} {key}/")
                walk(item, indent + ("   " if last else "│  "))
            else:
                lines.append(f"{indent}{branch} {key}: {item.dtype}, shape={item.shape}")

    walk(f, "  ")
    for key, value in f.attrs.items():
        text = _attr_str(value) if not isinstance(value, np.ndarray) else json.dumps(value.tolist())
        lines.append(f"  @{key} = {text[:120]}")
    return lines
