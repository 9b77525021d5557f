"""host_memory.retain_freed_memory: freed large blocks stay in the process (glibc)."""

from __future__ import annotations

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
