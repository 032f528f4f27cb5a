#!/usr/bin/env python3
"""Render sweep report pages in headless Chromium at 1280 px and 800 px width, so a person
(or a test) can look at them as a browser shows them (issue 18, item 4).

    .venv/bin/python scripts/screenshot_reports.py [PAGE.html ...] [--out DIR] [--widths 1280,800]

Without pages it renders every ``docs/sweeps/*/report.html`` and ``runs/main/report.html``
(when present). Each page gives ``DIR/<parent dir>-<width>.png``; the tall window is cropped
to the page's content when Pillow is installed. Exit status 2 when no Chromium is found.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Window height: taller than any report page, cropped afterwards.
TALL = 9000
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def default_pages() -> list[Path]:
    pages = sorted((ROOT / "docs" / "sweeps").glob("*/report.html"))
    main = ROOT / "runs" / "main" / "report.html"
    return pages + ([main] if main.is_file() else [])


def _crop(path: Path) -> None:
    """Cut the blank rows below the page's content (needs Pillow; left as is without it)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box:
        rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + 24))).save(path)


def screenshot(browser: str, page: Path, out: Path, width: int, timeout: float = 120) -> Path:
    """One full-width screenshot of ``page`` at ``width`` px, written to ``out``."""
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state, no prompts
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # runs as root in containers
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{TALL}",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} failed on {page} ({proc.returncode}): {proc.stderr[-800:]}")
    _crop(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="report.html files")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "screenshots")
    parser.add_argument("--widths", default="1280,800", help="window widths in px")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no Chromium found (looked for {', '.join(BROWSERS)})", file=sys.stderr)
        return 2
    pages = args.pages or default_pages()
    if not pages:
        print("no report pages to render", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for page in pages:
        for width in (int(w) for w in args.widths.split(",")):
            name = f"{page.resolve().parent.name}-{width}.png"
            print(screenshot(browser, page, args.out / name, width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
