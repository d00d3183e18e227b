"""Issue 32, item 1: cnnlab export --format web, a static page that runs the model in the browser
(ONNX Runtime Web), checked in headless Chromium: window.cnnlab.predict against cnnlab predict, the
webcam with Chromium's fake camera, "unknown", Korean class names, and no request off the page."""

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cnnlab.cli import main
from conftest import draw_stroke, free_port, one_error_line, train_tiny_run
from glyphs import hangul_matches_reference

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NAMES = ["가로", "세로", "대각선"]

pytest.importorskip("onnxruntime")


def need_browser():
    from cnnlab.webexport import ORT_FILES, ort_web_dir

    if not all((ort_web_dir() / f).is_file() for f in ORT_FILES):
        pytest.skip("ONNX Runtime Web is not installed (scripts/install.sh fetches it with npm)")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium")
    return pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("web"), NAMES, test_per_class=12)


@pytest.fixture(scope="module")
def site(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "web"
    need_browser()
    assert main(["export", str(run.path), "--format", "web", "--out", str(out)]) == 0
    return out


class http_server:
    """``python -m http.server`` in a folder: the plainest static server there is."""

    def __init__(self, folder):
        self.folder, self.port = folder, free_port()

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "-d", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/index.html", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def test_the_folder_is_a_whole_static_site(site):
    names = sorted(p.name for p in site.iterdir())
    assert names == sorted(["index.html", "model.onnx", "metadata.json", "MODEL_CARD.md", "export-check.json",
                            "ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"])
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # no CDN
    meta = json.loads((site / "metadata.json").read_text(encoding="utf-8"))
    assert meta["class_names"] == NAMES and meta["unknown"]["threshold_keep_95"]


def test_the_page_predicts_what_cnnlab_predicts_in_chromium(run, site, tmp_path):
    sync_playwright = need_browser()
    from cnnlab.api import run_dataset

    x = run_dataset(run)["test"].x[:32]
    ours = run.predict_proba(x)
    with http_server(site) as origin, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        elsewhere = []
        page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(
            (origin, "data:", "blob:")) else None)
        page.goto(f"{origin}/index.html")
        page.evaluate("window.cnnlab.ready")
        got = page.evaluate("""async (images) => {
            const out = [];
            for (const [h, w, px] of images) {  // RGBA ImageData of each gray test image
              const rgba = new Uint8ClampedArray(h * w * 4);
              for (let i = 0; i < h * w; i++) { rgba.set([px[i], px[i], px[i], 255], 4 * i); }
              out.push(await window.cnnlab.predict(new ImageData(rgba, w, h)));
            }
            return out;
        }""", [[int(img.shape[0]), int(img.shape[1]), img[..., 0].ravel().tolist()] for img in x])
        theirs = np.array([g["probabilities"] for g in got])
        assert np.abs(theirs - ours).max() <= 1e-4
        assert [g["label"] for g in got] == [NAMES[i] for i in ours.argmax(1)]
        energy = run.ood_scores(x)
        assert np.abs(np.array([g["ood_score"] for g in got]) - energy).max() <= 1e-4 * max(1, np.abs(energy).max())
        assert "세로" in page.locator("#bars").inner_text()
        for i in range(3):  # the class names are glyphs on the screen (the page's own Hangul font subset)
            assert hangul_matches_reference(page, f'.bar[data-i="{i}"] span') > 0.8, NAMES[i]
        # an upload: the bars and the class (Korean glyphs drawn by the page's own font subset)
        from PIL import Image

        Image.fromarray(x[0][..., 0]).save(tmp_path / "up.png")
        page.set_input_files("#file", str(tmp_path / "up.png"))
        page.wait_for_function("document.querySelector('#result b') !== null")
        assert page.locator("#result b").inner_text() == NAMES[int(ours[0].argmax())]
        # drawing (a grayscale model): a stroke gives a prediction
        page.evaluate("document.querySelector('#result').innerHTML = ''")
        draw_stroke(page, top=40, steps=10)
        page.wait_for_function("document.querySelector('#result b') !== null")
        page.screenshot(path=str(tmp_path / "web.png"))
        browser.close()
    assert elsewhere == []  # nothing outside the page's own folder


def test_unknown_and_the_webcam_under_cnnlab_serve_static(run, site, tmp_path):
    sync_playwright = need_browser()
    from cnnlab.webexport import static_server

    strict = tmp_path / "strict"
    shutil.copytree(site, strict)
    meta = json.loads((strict / "metadata.json").read_text(encoding="utf-8"))
    meta["unknown"]["threshold_keep_95"] = 1e9  # every image is unknown to this page
    (strict / "metadata.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    with static_server(strict) as url, sync_playwright() as p:
        headers = urllib.request.urlopen(url.replace("index.html", "ort-wasm-simd-threaded.wasm")).headers
        assert headers["content-type"] == "application/wasm"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        page = browser.new_page()
        page.goto(url)
        page.evaluate("window.cnnlab.ready")
        assert page.evaluate("self.crossOriginIsolated")  # the headers let the wasm backend use threads
        page.click("#cam")
        page.wait_for_function("document.body.dataset.webcam === 'predicted'", timeout=30000)
        said = page.locator("#result").inner_text()
        assert said.startswith("unknown") and "ood score" in said and "most like" in said
        page.click("#cam")  # stop
        browser.close()


def test_bad_web_exports_are_one_line_and_leave_nothing(run, tmp_path, capsys, monkeypatch):
    import torch

    from cnnlab.models.layers import ALIASES, LAYERS, LayerKind, register

    need_browser()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code = main(["export", str(run.path), "--format", "web", "--out", str(taken)])
    one_error_line(code, capsys.readouterr().err, "not a web export of cnnlab")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    code = main(["export", str(run.path), "--format", "web", "--quantize", "int4", "--out", str(tmp_path / "q")])
    one_error_line(code, capsys.readouterr().err, "--quantize")

    @register
    class Erfcx(LayerKind):  # a layer kind of a user's own, whose op ONNX does not have
        name = "Erfcx"

        def infer(self, args, shape, where):
            return shape, 0, 0

        def build(self, info):
            class M(torch.nn.Module):
                def forward(self, x):
                    return torch.special.erfcx(x.float()).to(x.dtype)

            return [M()]

    try:
        import cnnlab

        spec = {"input_shape": [12, 12, 1], "layers": [{"type": "Conv2D", "filters": 2, "kernel_size": 3},
                                                      {"type": "Erfcx"}, {"type": "Flatten"},
                                                      {"type": "Dense", "units": 3, "activation": "softmax"}]}
        from conftest import bars

        xb, yb = bars(10)
        np.savez(tmp_path / "b.npz", x_train=xb, y_train=yb)
        odd = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=spec, epochs=1, runs_dir=str(tmp_path / "runs"),
                           quiet=True)
        out = tmp_path / "site"
        code = main(["export", str(odd.path), "--format", "web", "--out", str(out)])
        line = one_error_line(code, capsys.readouterr().err, "cannot be written as ONNX")
        assert "erfcx" in line and "Erfcx" in line
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]
    finally:
        del LAYERS["Erfcx"]
        ALIASES.pop("Erfcx", None)
    code = main(["export", str(run.path), "--format", "web", "--out", "/proc/cnnlab-web"])  # not writable
    one_error_line(code, capsys.readouterr().err, "/proc")


def test_check_browser_and_int8_on_the_web(tmp_path, capsys):
    need_browser()
    import cnnlab
    from conftest import TINY_SPEC, bars

    x, y = bars(60)
    xt, yt = bars(40, seed=2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    r = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=3, runs_dir=str(tmp_path / "runs"),
                     quiet=True, batch_size=16)
    site = tmp_path / "site"
    assert main(["export", str(r.path), "--format", "web", "--out", str(site), "--check-browser"]) == 0
    assert "in Chromium: parity: 120/120 top-1 agree" in capsys.readouterr().out
    checks = json.loads((site / "export-check.json").read_text())
    page = checks["index.html"]
    assert page["runtime"] == "chromium-wasm" and page["images"] == 120 and page["max_abs_dp"] <= 1e-4
    assert page["images_per_s"]["chromium-wasm"] > 0 and checks["model.onnx"]["runtime"] == "onnxruntime-cpu"
    # the same folder again, int8: an earlier web export is replaced whole
    assert main(["export", str(r.path), "--format", "web", "--out", str(site), "--quantize", "int8"]) == 0
    assert "x smaller" in capsys.readouterr().out
    import onnx

    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(site / "model.onnx")).graph.node)
    assert json.loads((site / "export-check.json").read_text())["model.onnx"]["precision"] == "int8"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left
