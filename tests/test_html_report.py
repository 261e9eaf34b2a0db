"""report.html renders in a real headless browser (Chromium): the page parses into the
expected elements, its inline plots and highlighted samples paint; the screenshot is saved in
the run. `make test` installs Chromium when it is missing (as root on Debian) or says what to
install."""

import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from likex.cli import main
from likex.report.html import HTML_FILE

SCREENSHOT = "report-screenshot.png"
WIDTH, HEIGHT = 1200, 1600


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: run `make test`, which installs it (as root on Debian) or says how")


def browse(run_dir, tmp_path, *args: str) -> str:
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={WIDTH},{HEIGHT}",
            *args,
            (run_dir / HTML_FILE).resolve().as_uri(),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "html"
    args = ["run", "--preset", "tiny", "--steps", "40", "--samples", "4", "--ci-width", "0"]
    assert main([*args, "--gen-tokens", "40", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    return out


def test_report_html_is_self_contained(run_dir):
    page = (run_dir / HTML_FILE).read_text()
    assert page.count('src="data:image/png;base64,') == 2  # loss and rate, inline
    assert 'src="http' not in page and "href=" not in page  # nothing to fetch
    assert (run_dir / "report.md").is_file()  # the Markdown report stays


def test_report_renders_in_chromium(run_dir, tmp_path):
    dom = browse(run_dir, tmp_path, "--dump-dom")
    assert dom.count("<img") == 2 and "<table>" in dom and "95%" in dom
    assert 'id="before"' in dom and 'id="after"' in dom and dom.count("<mark>") > 5

    shot = run_dir / SCREENSHOT
    browse(run_dir, tmp_path, f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)

    def painted(hex_color: str) -> int:
        rgb = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=-1) < 0.02).sum())

    assert painted("#c0392b") > 500  # the rate plot's "after" bar: the inline PNG was drawn
    assert painted("#ffd54f") > 200  # highlighted target tokens
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not a blank page
