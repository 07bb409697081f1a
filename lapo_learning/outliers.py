"""Robust ranges of joint/action columns and the outlier check built on them (no ROS).

One corrupt value (an action of 1e30) must neither widen the policy node's default joint limits
nor slip into training unnoticed. `robust_range` gives each column's range without its extremes
(fit_statistics stores it in the checkpoint for the node's limits); `find_outliers` names the
values far outside it (`create_dataset --validate` reports them, `train` refuses them unless
`--allow_outliers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# The robust range of a column is its [ROBUST_PERCENTILE, 100 - ROBUST_PERCENTILE] percentile range.
ROBUST_PERCENTILE = 0.5
# A value is an outlier beyond OUTLIER_SPANS x the robust span plus OUTLIER_MIN_DISTANCE (rad or m)
# outside the robust range: far enough that no recorded motion does it, and the fixed part keeps a
# column that hardly moves (a gripper held shut) from flagging a real small motion.
OUTLIER_SPANS = 10.0
OUTLIER_MIN_DISTANCE = 1.0
# No joint position or command in rad or m is this large, whatever the rest of the column holds.
ABSOLUTE_BOUND = 1e4
SHOWN_PER_COLUMN = 3  # outlier rows quoted per column in a report


def robust_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (low, high) of [N, D] values: the 0.5th and 99.5th percentiles taken inward.

    "Inward" (numpy's `higher`/`lower` methods) returns data values on the inner side, never an
    interpolation towards an extreme, so the single largest and smallest value of a column with
    three or more rows never set its range. NaN/inf are ignored (validation reports them).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0:
        raise ValueError(f"robust_range needs a non-empty [N, D] array, got shape {v.shape}")
    v = np.where(np.isfinite(v), v, np.nan)
    low = np.nanpercentile(v, ROBUST_PERCENTILE, axis=0, method="higher")
    high = np.nanpercentile(v, 100.0 - ROBUST_PERCENTILE, axis=0, method="lower")
    # With two rows the inward picks cross over: the range is then simply both values.
    return np.minimum(low, high), np.maximum(low, high)


@dataclass(frozen=True)
class ColumnOutliers:
    """The outliers of one column: their rows and values, and the column's robust range."""

    column: int
    rows: np.ndarray
    values: np.ndarray
    low: float
    high: float


def find_outliers(values: np.ndarray) -> list[ColumnOutliers]:
    """Values of [N, D] `values` far outside their column's robust range, or beyond ABSOLUTE_BOUND."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0:
        return []
    with np.errstate(all="ignore"):  # all-NaN columns: no range, no outlier
        low, high = robust_range(v)
        reach = OUTLIER_SPANS * (high - low) + OUTLIER_MIN_DISTANCE
        bad = (v < low - reach) | (v > high + reach) | (np.abs(v) > ABSOLUTE_BOUND)
    bad &= np.isfinite(v)
    found = []
    for column in np.flatnonzero(bad.any(axis=0)):
        rows = np.flatnonzero(bad[:, column])
        found.append(ColumnOutliers(int(column), rows, v[rows, column], float(low[column]), float(high[column])))
    return found


def describe_outliers(field: str, outliers: list[ColumnOutliers], names: Sequence[str]) -> list[str]:
    """One validation problem per column, naming the field, the column, rows and values."""
    lines = []
    for o in outliers:
        name = names[o.column] if o.column < len(names) else f"column {o.column}"
        shown = ", ".join(f"row {r} = {x:.6g}" for r, x in zip(o.rows[:SHOWN_PER_COLUMN], o.values))
        more = f" (+{len(o.rows) - SHOWN_PER_COLUMN} more)" if len(o.rows) > SHOWN_PER_COLUMN else ""
        lines.append(
            f"{field}: column {o.column} ({name}): {len(o.rows)} implausible value(s) {shown}{more}; "
            f"the column's robust range is [{o.low:.4g}, {o.high:.4g}] (outlier: beyond {OUTLIER_SPANS:g}x "
            f"its span + {OUTLIER_MIN_DISTANCE:g}, or |value| > {ABSOLUTE_BOUND:g}); fix or drop the file, "
            "or train with --allow_outliers")
    return lines
