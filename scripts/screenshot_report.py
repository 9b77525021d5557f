"""Render an HTML report in headless Chromium and save a PNG screenshot.

    python scripts/screenshot_report.py runs/demo/analysis/report.html -o report.png

Needs the ``chromium`` executable (Debian/Ubuntu: ``apt-get install -y chromium``).
Exit status 0 and the PNG path on success; a one-line error otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # small /dev/shm in containers and CI runners crashes the renderer
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable, or a FileNotFoundError saying how to install one."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        "no chromium executable on PATH (looked for " + ", ".join(CANDIDATES) + "); "
        "install it with `apt-get install -y chromium`"
    )


def screenshot(
    html_path: str, png_path: str, width: int = 1300, height: int = 2700, timeout: float = 120
) -> str:
    """Screenshot ``html_path`` (a local file) into ``png_path`` with headless Chromium; return png_path."""
    if not os.path.isfile(html_path):
        raise FileNotFoundError(f"report not found: {html_path}")
    browser = find_chromium()
    png_path = os.path.abspath(png_path)
    if os.path.exists(png_path):
        os.remove(png_path)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            "file://" + os.path.abspath(html_path),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"chromium did not finish within {timeout:g} s rendering {html_path}"
            ) from None
    if not os.path.isfile(png_path) or os.path.getsize(png_path) == 0:
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return png_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", help="report.html to render")
    parser.add_argument(
        "-o", "--output", default=None, help="PNG path (default: next to the HTML, report.png)"
    )
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=2700)
    args = parser.parse_args(argv)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.html)), "report_screenshot.png")
    try:
        print(screenshot(args.html, output, args.width, args.height))
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"screenshot_report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
