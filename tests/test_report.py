import re
import shutil

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.cli import PLOTS, main
from cnnlab.report import build_report
from conftest import bars, train_tiny_run
from glyphs import hangul_matches_reference

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def korean_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("report"), ["가로", "세로", "대각선"], test_per_class=8)


def test_report_is_one_self_contained_file(korean_run):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing")  # Korean names drawn as boxes
        path = build_report(korean_run)
    text = path.read_text(encoding="utf-8")
    assert path == korean_run.path / "report.html"
    for section in ("Data", "Model", "Training", "Results", "Mistakes", "Inside the network",
                    "Config and environment"):
        assert f"<h2>{section}</h2>" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from the network
    assert "@font-face" in text and "NanumGothicSubset" in text  # Hangul travels with the page
    assert "가로" in text and "confusion" in text and 'data-cell="0,0"' in text
    # seed 002's and 003's figures: kernels before and after training side by side, twin-axis curves
    assert 'alt="first-layer kernels, untrained"' in text and 'alt="loss and accuracy on two axes"' in text
    assert path.stat().st_size < 8_000_000


def test_plot_every_kind_and_svg(korean_run, tmp_path, capsys):
    for kind in PLOTS:
        out = tmp_path / f"{kind}.png"
        if kind == "augmentation":  # the run trained without augmentation: nothing to preview
            assert main(["plot", str(korean_run.path), kind, "--out", str(out)]) == 2 and not out.exists()
            continue
        assert main(["plot", str(korean_run.path), kind, "--out", str(out)]) == 0, kind
        assert Image.open(out).size[0] > 100
    out = tmp_path / "curves.svg"
    assert main(["plot", str(korean_run.path), "curves", "--format", "svg", "--out", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml")


def test_explain_one_image(korean_run, tmp_path, capsys):
    x, _ = bars(1, seed=11)
    img = tmp_path / "one.png"
    Image.fromarray(x[0, ..., 0]).save(img)
    assert main(["explain", str(korean_run.path), str(img), "--out-dir", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    assert "one.png:" in out and "Grad-CAM" in out
    assert {p.name for p in (tmp_path / "ex").iterdir()} == {"probabilities.png", "feature_maps.png", "gradcam.png"}


@pytest.mark.skipif(not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM),
                    reason="Debian's chromium is not installed")
def test_report_in_headless_chromium(korean_run, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path = build_report(korean_run)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(path.as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert (tmp_path / "report.png").stat().st_size > 20_000
        assert page.locator("#thumbs figure").count() == 0
        counts = [int(page.locator(f'td.cell[data-cell="{i},{i}"]').inner_text()) for i in range(3)]
        busiest = counts.index(max(counts))
        assert counts[busiest] > 0
        page.click(f'td.cell[data-cell="{busiest},{busiest}"]')
        page.wait_for_selector("#thumbs figure")
        assert page.locator("#thumbs figure").count() == counts[busiest]
        name = ["가로", "세로", "대각선"][busiest]
        caption = page.locator("#thumbs figcaption").first.inner_text()
        assert f"true {name}" in caption and f"pred {name}" in caption
        # The Hangul font inside the page has the glyphs: Korean text is as wide as real glyphs, not boxes
        assert page.evaluate("document.fonts.check('16px NanumGothicSubset', '세로')")
        # ... and the glyphs are what the page drew, read back from the screen: the first Korean
        # words on a page ("티셔츠" in the first row) were once boxes while document.fonts said True
        for sel in ("table.report tbody tr:first-child td", "table.confusion thead th:nth-child(2)",
                    "table.confusion tbody tr:first-child th", "table.report tbody tr:nth-child(3) td"):
            assert hangul_matches_reference(page, sel) > 0.8, sel
        browser.close()
    assert outside == []


def test_run_without_test_split_gets_report_and_figures_on_validation(tmp_path, capsys):
    """The seed-003 set-up: --test-split 0 --seed 87, results on the validation split."""
    x, y = bars(10)
    np.savez(tmp_path / "t.npz", x_train=x, y_train=y)
    run = cnnlab.train(f"npz:{tmp_path / 't.npz'}", model="fashion-cnn", epochs=1, test_split=0, seed=87,
                       runs_dir=str(tmp_path / "r"), quiet=True, image_size=[28, 28])
    assert main(["report", str(run.path)]) == 0
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert "validation accuracy" in page and "Data check" in page
    assert main(["report", str(run.path), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "no test split" in err and "use --split train or validation" in err
    for kind in ("confusion", "misclassified", "feature-maps", "gradcam"):
        assert main(["plot", str(run.path), kind]) == 0, kind
        assert (run.path / f"{kind}.png").is_file()
    assert main(["plot", str(run.path), "confusion", "--split", "train"]) == 0


def test_font_subsetting_notes_do_not_reach_the_terminal(tmp_path):
    """In a real process (pytest's own log capture would hide them): NanumGothic's TSI tables make
    fontTools log 'TSI0 NOT subset; ...' while the report embeds a Hangul font subset."""
    import subprocess
    import sys

    from conftest import train_tiny_run

    run = train_tiny_run(tmp_path, ["가로", "세로", "대각선"])
    for args in (["report", str(run.path)], ["plot", str(run.path), "samples", "--format", "svg"]):
        res = subprocess.run([sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert "NOT subset" not in res.stderr and "TSI" not in res.stderr, res.stderr
