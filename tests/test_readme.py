"""The README's quick-start example runs as written (in a fresh process, as a user would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def quick_start_code() -> str:
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Quick start has no python block"
    return match.group(1)


def test_readme_quick_start_runs(tmp_path):
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start_code())
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the last line is the potential energy OpenMM printed: a finite number in kJ/mol
    energy = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"-?\d+(\.\d+)?(e[-+]?\d+)? kJ/mol", energy), energy
