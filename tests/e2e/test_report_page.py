"""The report page of the demo pipeline, opened in headless Chromium.

Two runs of the demo (a week apart, so the tier flow has moves) against the CRM sandbox; the
page built from the state store is written to a file and rendered by a real browser: its DOM
must hold every chart as a figure with an SVG, and its screenshot must not be blank.
``.ci/run`` installs Chromium; without one this test fails, unless ``PLS_SYNC_NO_BROWSER=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connectors.state import SqlStateStore
from pls_sync.config import load_settings
from pls_sync.report_data import build_report
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import CONFIG, Workdir

# Read at import: the suite's autouse fixture removes every PLS_SYNC_* variable before a test.
NO_BROWSER = os.environ.get("PLS_SYNC_NO_BROWSER") == "1"
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser")
CHARTS = ("score-distribution", "tier-flow", "match-rate", "channels", "motions")
WIDTH, HEIGHT = 1280, 2400
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def chromium() -> str:
    """The headless browser's path; fails (or skips when asked) when none is installed."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if NO_BROWSER:
        pytest.skip("PLS_SYNC_NO_BROWSER=1: the page is not rendered in a browser")
    pytest.fail(
        f"no headless browser ({', '.join(BROWSERS)}) on PATH: .ci/run installs it "
        "(apt-get install -y chromium); set PLS_SYNC_NO_BROWSER=1 to skip this test"
    )


def browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with its own profile folder; fail on a non-zero exit."""
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class RenderedFigures(HTMLParser):
    """Figure ids of a DOM and those with an ``<svg>`` child, with the SVG's drawn shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.with_svg: set[str] = set()
        self.shapes: dict[str, int] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            self._open = dict(attrs).get("id") or ""
            self.figures.append(self._open)
            self.shapes[self._open] = 0
        elif self._open is not None and tag == "svg":
            self.with_svg.add(self._open)
        elif self._open is not None and tag == "path":
            self.shapes[self._open] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._open = None


def png_summary(path: Path) -> tuple[int, int, int, float]:
    """Width, height, distinct colours and the share of non-white pixels of a PNG."""
    import numpy as np
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pixels = imread(str(path))[:, :, :3]
    height, width = pixels.shape[:2]
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    inked = float((pixels < 0.98).any(axis=2).mean())
    return width, height, colours, inked


def test_the_demo_report_renders_every_chart_in_headless_chromium(
    workdir: Workdir, crm: Sandbox
) -> None:
    browser = chromium()
    week_before = (workdir.as_of - timedelta(days=7)).isoformat()
    first = workdir.invoke("run", "--as-of", week_before)
    assert first.exit_code == 0, first.output
    second, summary = workdir.sync("run", summary="s.json")
    assert second.exit_code == 0, second.output

    store = SqlStateStore(workdir.state_url)
    try:
        started = time.perf_counter()
        page = build_report(load_settings(CONFIG), store, now=NOW)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    report = workdir.root / "report.html"
    report.write_text(page, encoding="utf-8")
    assert report.stat().st_size < 1_000_000
    assert seconds < 30
    assert summary["run_id"] in page

    dom = browse(browser, workdir.root / "profile", "--dump-dom", report.as_uri()).stdout
    rendered = RenderedFigures()
    rendered.feed(dom)
    assert set(CHARTS) <= set(rendered.figures), rendered.figures
    assert set(CHARTS) <= rendered.with_svg
    assert all(rendered.shapes[chart] > 5 for chart in CHARTS), rendered.shapes
    assert "no run recorded yet" not in dom
    # Fit beside engagement: the tier x segment table, with the demo's sign-up sizes.
    fit_table = dom[dom.index('<table id="fit">') :]
    assert "<th>smb</th>" in fit_table and "<td>sales</td>" in fit_table

    shot = workdir.root / "out.png"
    browse(browser, workdir.root / "profile", f"--screenshot={shot}", report.as_uri())
    assert shot.stat().st_size > 20_000
    width, height, colours, inked = png_summary(shot)
    assert (width, height) == (WIDTH, HEIGHT)
    assert colours > 10
    assert inked > 0.03
