"""Keep freed host memory in the process instead of returning it to the OS (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and unmaps it on free, so each large tensor of a CPU energy + forces call
(``[edges, 9, channels]``: 100-300 MiB at 582-2000 atoms) is page-faulted and zeroed again
by the kernel. Raising the threshold and the trim threshold lets the heap reuse those pages:
measured speed-ups and the trade-off are in ``docs/speed.md`` ("Host memory on the CPU").

:func:`retain_freed_memory` is called when an OpenMM module is built (``export.py``); set
``E2FORMER_RETAIN_FREED_MEMORY=0`` to leave the C library's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (``<malloc.h>``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: allocations up to this size come from the reusable heap (larger ones still use mmap)
MMAP_THRESHOLD_BYTES = 1 << 30
#: free memory at the top of the heap kept before it is given back to the OS
TRIM_THRESHOLD_BYTES = 1 << 30
ENV_SWITCH = "E2FORMER_RETAIN_FREED_MEMORY"

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the glibc settings once per process; True when they are in effect.

    Does nothing (False) off Linux, without glibc's ``mallopt``, or when
    ``E2FORMER_RETAIN_FREED_MEMORY=0``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: leave it alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = ok and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _applied = ok
    return ok
