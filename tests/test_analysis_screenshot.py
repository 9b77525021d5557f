"""scripts/screenshot_report.py without a browser: the Chromium flags and a one-line error
when Chromium hangs (the rendering itself is tested in test_simulate_quickcheck.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import screenshot_report  # noqa: E402


def test_chromium_runs_without_dev_shm(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        png = next(a for a in command if a.startswith("--screenshot=")).split("=", 1)[1]
        open(png, "wb").write(b"\x89PNG")
        return subprocess.CompletedProcess(command, 0, "", "")

    html = tmp_path / "report.html"
    html.write_text("<html></html>")
    monkeypatch.setattr(screenshot_report, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(screenshot_report.subprocess, "run", fake_run)
    screenshot_report.screenshot(str(html), str(tmp_path / "shot.png"))
    assert "--disable-dev-shm-usage" in seen["command"] and "--headless" in seen["command"]


def test_a_hanging_chromium_gives_a_one_line_error(monkeypatch, tmp_path, capsys):
    def hang(command, timeout=None, **kwargs):
        raise subprocess.TimeoutExpired(command, timeout)

    html = tmp_path / "report.html"
    html.write_text("<html></html>")
    monkeypatch.setattr(screenshot_report, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(screenshot_report.subprocess, "run", hang)
    assert screenshot_report.main([str(html), "-o", str(tmp_path / "shot.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("screenshot_report: error: chromium did not finish within")
    with pytest.raises(RuntimeError, match="did not finish within 5 s"):
        screenshot_report.screenshot(str(html), str(tmp_path / "shot.png"), timeout=5)
