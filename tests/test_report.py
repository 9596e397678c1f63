"""DEEM.report / `deem report`: one self-contained HTML page, opened in a real headless browser."""
import base64
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from deem import DEEM
from deem.cli import main
from deem.datasets import dawid_skene
from deem.report import flags, wilson

pytest.importorskip("matplotlib", reason="the report draws with matplotlib (deem[report])")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def crowd():
    """A crowd with two spammers (answers independent of the class) and one adversary (names the next class)."""
    X, y = dawid_skene(n_samples=600, n_classifiers=12, n_classes=3, accuracy=(0.65, 0.9), missing_rate=0.3,
                       random_state=8)
    rng = np.random.default_rng(0)
    for col in (10, 11):  # spammers
        X[:, col] = np.where(X[:, col] >= 0, rng.integers(0, 3, len(X)), -1)
    X[:, 9] = np.where(X[:, 9] >= 0, (y + 1) % 3, -1)  # adversary
    return X, y


def render(path):
    """What a headless Chromium makes of the page: the body's data-rendered ("loaded/total" images)."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-rendered="(\d+)/(\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    return int(match.group(1)), int(match.group(2))


def test_report_is_self_contained_and_flags_the_bad_voters(tmp_path, crowd):
    X, _ = crowd
    model = DEEM(random_state=0).fit(X)
    path = model.report(str(tmp_path / "report.html"), X)
    page = open(path, encoding="utf-8").read()
    assert "http://" not in page and "https://" not in page  # nothing fetched: it opens offline
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == int(re.search(r'data-figures="(\d+)"', page).group(1)) == 6
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    table = page[page.index("<h2>Voters</h2>"):]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><td>\d+</td><td>(\d+)</td>.*?<td>([^<]*)</td></tr>",
                                                          table)}
    assert "spammer" in rows["10"] and "spammer" in rows["11"]
    assert "adversary" in rows["9"] and "below chance" in rows["9"]
    assert all(rows[str(i)] == "" for i in range(9))  # the honest voters are not flagged


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian's chromium package; .ci/run installs it)")
def test_every_figure_renders_in_a_headless_browser(tmp_path, crowd):
    X, _ = crowd
    path = DEEM(random_state=0).fit(X).report(str(tmp_path / "report.html"), X)
    loaded, total = render(path)
    assert total == 6 and loaded == total


def test_cli_report_from_a_long_table_and_from_a_saved_model(tmp_path, crowd):
    X, _ = crowd
    t, w = np.nonzero(X >= 0)
    pd.DataFrame({"task": t, "worker": [f"ann{j}" for j in w], "label": X[t, w]}).to_csv(tmp_path / "a.csv",
                                                                                       index=False)
    assert main(["report", str(tmp_path / "a.csv"), "-o", str(tmp_path / "r1.html")]) == 0
    assert main(["fit", str(tmp_path / "a.csv"), "-o", str(tmp_path / "m.deem")]) == 0
    assert main(["report", str(tmp_path / "m.deem"), str(tmp_path / "a.csv"), "-o", str(tmp_path / "r2.html")]) == 0
    for name in ("r1.html", "r2.html"):
        page = open(tmp_path / name, encoding="utf-8").read()
        assert "ann10" in page and "spammer" in page  # workers by their ids
    if CHROMIUM:
        loaded, total = render(str(tmp_path / "r2.html"))
        assert loaded == total > 0


def test_wilson_band_and_flags():
    low, high = wilson(np.array([0.9, 0.5, 0.5]), np.array([1000, 4, 0]))
    assert 0.87 < low[0] < 0.9 < high[0] < 0.92 and high[1] - low[1] > 0.5 and (low[2], high[2]) == (0.0, 1.0)
    good = np.eye(3) * 0.8 + 0.2 / 3
    spam = np.full((3, 3), 1 / 3)
    swap = np.roll(np.eye(3), 1, axis=1) * 0.8 + 0.2 / 3
    skill = np.array([0.87, 1 / 3, 0.07])
    n = np.array([500, 500, 500])
    low, high = wilson(skill, n)
    prior = np.full(3, 1 / 3)
    got = flags(np.stack([good, spam, swap]), skill, low, high, n, prior)
    assert got[0] == [] and any("spammer" in f for f in got[1])
    assert any("adversary" in f and "0->1" in f for f in got[2])
    # few labels: the evidence neither calls a swapping voter random nor adversarial beyond doubt
    low, high = wilson(np.array([0.07]), np.array([3]))
    assert flags(swap[None], np.array([0.07]), low, high, np.array([3]), prior)[0][0].startswith("spammer")
