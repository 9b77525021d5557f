"""Keep freed host memory in the process instead of returning it to the OS (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and unmaps it on free, so each large tensor of a CPU energy + forces call
(``[edges, 9, channels]``: 100-300 MiB at 582-2000 atoms) is page-faulted and zeroed again
by the kernel. Raising the threshold and the trim threshold lets the heap reuse those pages:
measured speed-ups and the trade-off are in ``docs/speed.md`` ("Host memory on the CPU").

:func:`retain_freed_memory` is called when an OpenMM module is built (``export.py``); set
``E2FORMER_RETAIN_FREED_MEMORY=0`` to leave the C library's defaults alone, or ``=release``
for the opposite trade: every block above 256 KiB is mapped on its own and given back when
freed, so the peak RSS follows the memory actually in use (no heap fragmentation) at the
cost of page faults (``docs/speed.md``, "Less memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings

#: ``mallopt`` parameters (``<malloc.h>``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: allocations up to this size come from the reusable heap (larger ones still use mmap)
MMAP_THRESHOLD_BYTES = 1 << 30
#: free memory at the top of the heap kept before it is given back to the OS
TRIM_THRESHOLD_BYTES = 1 << 30
#: ``release`` mode: blocks above this are mapped on their own and unmapped when freed
RELEASE_THRESHOLD_BYTES = 256 << 10
ENV_SWITCH = "E2FORMER_RETAIN_FREED_MEMORY"

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the glibc settings once per process; True when they are in effect.

    Does nothing (False) off Linux, without glibc's ``mallopt``, when another allocator serves
    ``malloc`` (:func:`malloc_library`), or when
    ``E2FORMER_RETAIN_FREED_MEMORY=0``; with ``=release`` it applies the release settings
    instead (and returns False: nothing is retained).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    mode = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if mode in ("0", "false", "no", "off"):
        return False
    release = mode == "release"
    if not sys.platform.startswith("linux"):
        return False
    allocator = malloc_library()
    if allocator != "glibc":  # mallopt would tune glibc's heap while another allocator serves malloc
        if release:
            warnings.warn(
                f"{ENV_SWITCH}=release is a glibc setting and has no effect under {allocator}",
                stacklevel=2,
            )
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: leave it alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if release:
        mallopt(M_MMAP_THRESHOLD, RELEASE_THRESHOLD_BYTES)
        mallopt(M_TRIM_THRESHOLD, RELEASE_THRESHOLD_BYTES)
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = ok and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _applied = ok
    return ok


#: shared-library name fragments of the allocators that replace glibc's malloc when preloaded
_ALLOCATORS = {"jemalloc": "libjemalloc", "tcmalloc": "libtcmalloc", "mimalloc": "libmimalloc"}


def malloc_library() -> str:
    """The allocator serving ``malloc`` in this process: 'jemalloc', 'tcmalloc' or 'mimalloc'
    when one is mapped (``LD_PRELOAD``; ``docs/speed.md``, "Other allocators"), else 'glibc' on
    Linux and 'unknown' elsewhere. A mapped allocator library is taken to serve ``malloc``: a
    library that only links one, loaded later, would be counted too."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    try:
        with open("/proc/self/maps") as handle:
            maps = handle.read()
    except OSError:
        return "unknown"
    return allocator_in_maps(maps)


def allocator_in_maps(maps: str) -> str:
    """:func:`malloc_library` for the text of a ``/proc/<pid>/maps`` file."""
    for line in maps.splitlines():
        line = line.strip().removesuffix("(deleted)").strip()  # a library replaced on disk
        path = line.rsplit(None, 1)[-1] if line else ""
        name = path.rsplit("/", 1)[-1]
        for allocator, prefix in _ALLOCATORS.items():
            if name.startswith(prefix + ".") or name.startswith(prefix + "_"):
                return allocator
    return "glibc"
