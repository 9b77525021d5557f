"""host_memory.retain_freed_memory: freed large blocks stay in the process (glibc)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from openmmml_e2former.host_memory import retain_freed_memory

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20

applied = retain_freed_memory()
before = rss_mib()
block = b"x" * (300 * 2**20)  # malloc'd and written: 300 MiB resident
del block
print(applied, rss_mib() - before)
"""


def run(env_value: str | None) -> tuple[bool, float]:
    env = dict(os.environ)
    env.pop("E2FORMER_RETAIN_FREED_MEMORY", None)
    if env_value is not None:
        env["E2FORMER_RETAIN_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, kept = out.stdout.split()
    return applied == "True", float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_block_stays_resident_only_when_retained():
    applied, kept = run(None)
    assert applied
    assert kept > 250  # the 300 MiB block's pages were kept for reuse
    applied, kept = run("0")
    assert not applied
    assert kept < 50  # glibc's default: a block this large is unmapped on free


FRAGMENTS = """
from openmmml_e2former.host_memory import retain_freed_memory

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20

retain_freed_memory()
before = rss_mib()
blocks = [b"x" * 2**20 for _ in range(200)]  # 200 written 1 MiB blocks
del blocks[::2]  # free every other one: holes between blocks still in use
print(rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_release_mode_gives_freed_blocks_back():
    """=release maps every block above 256 KiB on its own, so freeing one returns its pages
    even when blocks around it are still in use; a retaining heap keeps those holes."""
    env = dict(os.environ)
    resident = {}
    for mode in ("1", "release"):
        env["E2FORMER_RETAIN_FREED_MEMORY"] = mode
        out = subprocess.run(
            [sys.executable, "-c", FRAGMENTS], env=env, capture_output=True, text=True, check=True
        )
        resident[mode] = float(out.stdout)
    assert resident["release"] < 120, resident  # the 100 MiB still in use
    assert resident["1"] > 180, resident  # all 200 MiB: the freed holes stay resident


def test_allocator_is_read_from_the_mapped_libraries():
    from openmmml_e2former.host_memory import allocator_in_maps

    glibc = "7f0 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n7f1 rw-p 0 00:00 0 [heap]"
    assert allocator_in_maps(glibc) == "glibc"
    assert allocator_in_maps("") == "glibc"
    jemalloc = glibc + "\n7f2 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert allocator_in_maps(jemalloc) == "jemalloc"
    tcmalloc = "7f3 r-xp 0 08:01 3 /opt/conda/lib/libtcmalloc_minimal.so.4.5.10\n" + glibc
    assert allocator_in_maps(tcmalloc) == "tcmalloc"
    deleted = glibc + "\n7f5 r-xp 0 08:01 5 /usr/lib/libtcmalloc.so.4 (deleted)"
    assert allocator_in_maps(deleted) == "tcmalloc"
    # a file whose name merely mentions an allocator is not one
    assert allocator_in_maps(glibc + "\n7f4 r--p 0 08:01 4 /data/notes-on-libjemalloc") == "glibc"


JEMALLOC = ctypes.util.find_library("jemalloc")  # e.g. 'libjemalloc.so.2', which ld.so resolves


@pytest.mark.skipif(JEMALLOC is None, reason="needs jemalloc (Debian: libjemalloc2)")
def test_glibc_settings_are_left_alone_under_a_preloaded_allocator():
    probe = (
        "from openmmml_e2former.host_memory import malloc_library, retain_freed_memory\n"
        "print(malloc_library(), retain_freed_memory())"
    )
    env = {**os.environ, "LD_PRELOAD": JEMALLOC}
    env.pop("E2FORMER_RETAIN_FREED_MEMORY", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jemalloc", "False"]
    env["E2FORMER_RETAIN_FREED_MEMORY"] = "release"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jemalloc", "False"]
    assert "no effect under jemalloc" in out.stderr
    env.pop("E2FORMER_RETAIN_FREED_MEMORY")
    env.pop("LD_PRELOAD")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["glibc", "True"]
