"""Keep freed memory in the process (the command line's malloc settings).

A network run allocates and frees the same feature maps, megabytes each, for
every layer of every tile. glibc's malloc hands freed memory back to the
kernel: a block over its adaptive mmap threshold (at most 32 MiB) is
unmapped, and a heap (the main one, or a worker thread's arena) whose free
top grows past its trim threshold is trimmed. The next layer's output then
faults its pages in again, each one zeroed by the kernel, and on a 2-core
machine that costs as much as the convolutions: measured, the HASN x4
network at 48 channels took 2.68 s on a 500x375 input with glibc's
defaults and 1.29 s with freed memory kept; the whole `upscale --x4` of a
2000x1500 JPEG to JPEG 5.8-7.4 s against 3.9-4.9 (same run, alternated).
`keep_freed_memory()` raises both thresholds so that freed blocks are
reused; the peak memory is what it was, only not handed back before the
command exits.

Only the `imgrestore` program calls it: a library must not change its host
process's allocator. Settings the user gave glibc (MALLOC_*_ variables or
GLIBC_TUNABLES) win, and on other C libraries it does nothing.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# blocks up to this size come from the heap and are reused: every tile's feature
# maps (a 512-pixel tile of 64 float channels is 64 MiB); whole-image arrays
# above it stay mapped on their own and go back to the kernel when freed
MMAP_THRESHOLD = 128 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1  # mallopt's largest (an int): 2 GiB free at the heap top before it is trimmed

_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; True if it did."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _USER_SETTINGS):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc before 2.35 refuses an mmap threshold over 32 MiB (its old ceiling on 64-bit)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 or mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
