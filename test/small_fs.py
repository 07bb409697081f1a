"""Small real filesystems for the full-disk and read-only tests: a tmpfs mounted by the test.

Mounting needs root (or CAP_SYS_ADMIN); where it is not permitted the test is skipped with the reason.
"""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 1, "", "no mount command")


@contextmanager
def small_filesystem(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted on `path` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    res = _mount("-t", "tmpfs", "-o", options, "tmpfs", str(path))
    if res.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs for this test ({res.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount_read_only(path: Path) -> None:
    res = _mount("-o", "remount,ro", str(path))
    assert res.returncode == 0, f"remounting {path} read-only failed: {res.stderr}"
