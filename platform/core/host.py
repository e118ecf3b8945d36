"""Process-wide settings of a training or rollout process: torch's threads, and how freed memory is kept.

Why the memory setting: every micro-batch allocates its activations afresh (tens of MB), and glibc's
malloc hands large freed blocks back to the kernel (mmap'd blocks on free, the heap's top past its trim
threshold), so the next micro-batch faults the same pages in again, each one zeroed by the kernel. On
the demo's update that was ~17,000 page faults and ~0.1 s of kernel time eager, ~9,000 compiled
(docs/results.md, Performance). Serving allocations up to 32 MiB from the heap and never trimming it keeps the
pages mapped: the process's resident memory stays at its peak instead, as with PyTorch's CUDA caching
allocator or jemalloc/tcmalloc, which PyTorch's CPU tuning guide recommends for the same reason.
"""

import ctypes
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h> mallopt parameters
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit


def configure_process(threads: int, keep_freed_memory: bool) -> bool:
    """torch intra-op threads, and (glibc) freed memory kept in the process: `runtime.keep_freed_memory`.
    True when freed memory is now kept."""
    torch.set_num_threads(threads)
    return keep_freed_memory and keep_freed_memory_mapped()


def keep_freed_memory_mapped() -> bool:
    """glibc: allocations up to 32 MiB come from the heap, and freed heap memory is never trimmed back to
    the kernel. False (nothing changed) where the C library has no `mallopt` (macOS, musl) or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD is a size_t in glibc but mallopt takes an int: the largest int, 2 GiB, suffices.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )
