"""glibc's malloc set to keep the memory a CPU training step frees, for the next step to reuse.

Every training step allocates and frees the same activations. By default glibc gives freed heap
top back to the OS once it exceeds a trim threshold (twice its dynamic mmap threshold, a few MB
here), so the next step touches fresh pages and faults each one in again: the sim recipe's LAPO
step on one CPU thread took 5,000-8,000 minor page faults, with these settings none (README
"Training time"). PyTorch's CPU performance guides reach the same end by preloading jemalloc or
tcmalloc; this needs nothing beside the C library. CUDA memory has its own caching allocator and
is not affected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks above this are still mapped and unmapped on their own (the replay buffer's image arrays,
# hundreds of MB, allocated once); a step's activations (a few MB each) come from the heap.
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for its dynamic threshold on 64-bit systems
# Freed heap top kept up to this size instead of being returned to the OS.
TRIM_THRESHOLD = 2**30


def retain_freed_memory() -> bool:
    """Apply the settings to this process (for its whole life); False, with nothing changed, where
    the C library has no glibc mallopt (macOS, Windows, musl's no-op)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    log.debug("malloc settings for training %s", "applied" if applied else "refused by the C library")
    return applied
