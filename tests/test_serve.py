"""cnnlab serve: the JSON API, its limits, drawings framed like the data, and the page in Chromium."""

import base64
import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.data.drawing import foreground_stats, prepare_drawing
from conftest import bars, draw_stroke, train_tiny_run
from glyphs import hangul_matches_reference

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NAMES = ["가로", "세로", "대각선"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("serve"), NAMES)


@pytest.fixture(scope="module")
def client(run):
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    return TestClient(create_app([run.path.parent], max_upload_bytes=200_000, max_pixels=1_000_000))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def bar_png(cls: int = 1, seed: int = 4) -> bytes:
    x, y = bars(3, seed=seed)
    return png_bytes(Image.fromarray(x[list(y).index(cls), ..., 0]))


def test_predict_a_file_and_base64(client, run):
    data = bar_png()
    r = client.post("/api/predict", files={"file": ("v.png", data, "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert [p["class"] for p in body["probabilities"]] == NAMES
    assert abs(sum(p["p"] for p in body["probabilities"]) - 1) < 1e-5
    assert body["class"] == NAMES[body["index"]] and body["run"] == run.path.name
    # the same image through the API and through the Python API gives the same probabilities
    expected = run.predict_proba(np.asarray(Image.open(io.BytesIO(data)))[None, ..., None])[0]
    np.testing.assert_allclose([p["p"] for p in body["probabilities"]], expected, atol=1e-5)
    r2 = client.post("/api/predict", json={"image": base64.b64encode(data).decode()})
    assert r2.status_code == 200 and r2.json()["probabilities"] == body["probabilities"]
    r3 = client.post("/api/predict", json={"image": "data:image/png;base64," + base64.b64encode(data).decode(),
                                           "explain": True})
    ex = r3.json()
    assert ex["input_png"].startswith("data:image/png;base64,") and ex["gradcam_png"]
    assert [m["layer"] for m in ex["feature_maps"]] == ["conv2d"] and ex["feature_maps"][0]["channels"] == 8


def test_model_runs_and_docs(client, run):
    m = client.get("/api/model").json()
    assert m["classes"] == NAMES and m["summary"]["total_params"] == run.spec.total_params
    assert m["metrics"]["test"]["accuracy"] == run.metrics["test"]["accuracy"]
    assert client.get("/api/runs").json()["runs"][0]["id"] == run.path.name
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "세로" in page.text and "NanumGothicSubset" in page.text


def test_limits_and_bad_input(client):
    r = client.post("/api/predict", files={"file": ("big.png", b"\0" * 300_000, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    huge = png_bytes(Image.new("L", (1200, 1000)))  # small file, 1.2 M pixels
    r = client.post("/api/predict", files={"file": ("huge.png", huge, "image/png")})
    assert r.status_code == 413 and "1,200,000 pixels" in r.json()["error"]
    r = client.post("/api/predict", files={"file": ("notes.txt", b"not an image", "text/plain")})
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    assert client.post("/api/predict", json={"image": "%%%"}).status_code == 400
    assert client.post("/api/predict", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    # runs are named, never paths: nothing outside the given runs can be reached
    assert client.get("/api/model", params={"run": "../../etc/passwd"}).status_code == 404
    assert client.get("/runs/../config.yaml").status_code == 404


def test_streamed_body_over_the_limit_is_refused(run):
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    client = TestClient(create_app([run.path], max_upload_bytes=1000))

    def chunks():
        for _ in range(10):
            yield b"\0" * 500

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_drawings_are_framed_like_the_training_data():
    canvas = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(canvas).line([(30, 30), (90, 60)], fill=255, width=18)  # small, off-centre
    mnist_like = prepare_drawing(canvas, (28, 28), "grayscale", background=0, extent=0.72)
    ys, xs = np.nonzero(mnist_like[..., 0] > 40)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)
    assert abs(np.average(xs, weights=mnist_like[ys, xs, 0]) - 13.5) < 1.5  # centred on its mass
    light = prepare_drawing(canvas, (28, 28), "rgb", background=240, extent=1.0)
    assert light.shape == (28, 28, 3) and light[0, 0, 0] == 255 and light.min() < 60  # dark ink on light
    empty = prepare_drawing(Image.new("L", (280, 280), 0), (28, 28), "grayscale")
    assert empty.max() == 0
    x, _ = bars(10)
    assert foreground_stats(x)["background"] < 60


def test_cli_serve_binds_to_localhost_and_checks_its_runs(run, tmp_path, capsys, monkeypatch):
    import torch
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(kw))
    threads = torch.get_num_threads()
    try:
        assert main(["serve", str(run.path.parent)]) == 0
        assert torch.get_num_threads() == 1  # one thread per request; requests run in parallel
    finally:
        torch.set_num_threads(threads)
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8000
    assert "1 run(s)" in capsys.readouterr().out
    code = main(["serve", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a run directory" in err


@pytest.mark.skipif(not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM),
                    reason="Debian's chromium is not installed")
def test_draw_and_upload_in_headless_chromium(run, tmp_path):
    import uvicorn

    from cnnlab.serve import create_app

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "runs"
    shutil.copytree(run.path, folder / "z-run")  # listed first: the page's run
    with_ood(run.path, folder / "a-strict", [1e9] * 101)  # every image unknown
    server = uvicorn.Server(uvicorn.Config(create_app([folder]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    upload = tmp_path / "upload.png"
    upload.write_bytes(bar_png(0))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                (f"http://127.0.0.1:{port}", "data:", "blob:")) else None)
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.locator(".bar").count() == 3 and "세로" in page.locator("#bars").inner_text()
            for i in range(3):  # the class names are glyphs on the screen, the first bar's too
                assert hangul_matches_reference(page, f'.bar[data-i="{i}"] span') > 0.8, NAMES[i]
            draw_stroke(page)
            page.wait_for_function("document.querySelector('#result b') !== null")
            shown = [float(t.rstrip("%")) for t in page.locator(".bar .p").all_inner_texts()]
            assert abs(sum(shown) - 100) < 0.5
            page.wait_for_selector("#gradcam")
            assert page.locator("img.fmap").count() == 1
            page.screenshot(path=str(tmp_path / "drawn.png"))
            page.evaluate("document.querySelector('#result').textContent = ''")
            page.set_input_files("#file", str(upload))
            page.wait_for_function("document.querySelector('#result b') !== null")
            assert page.locator("#result b").inner_text() in NAMES
            assert "ood score" in page.locator("#result").inner_text()
            page.select_option("#run", "a-strict")  # the same upload, asked of a run it is unknown to
            page.wait_for_selector("#unknown")
            said = page.locator("#result").inner_text()
            assert said.startswith("unknown") and "ood score" in said and "most like" in said
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert outside == []


# ------------------------------------------------------------------ a client's mistake is never a 500

@pytest.mark.parametrize("body,status,needle", [
    ({"image": "aGVsbG8=", "run": ["a"]}, 400, "run"),
    ({"image": "aGVsbG8=", "run": 7}, 400, "run"),
    ({"image": "data:image/png;base64"}, 400, "no comma"),
    ({"image": 12}, 400, "image"),
    ({"image": "aGVsbG8=", "explain": "yes"}, 400, "explain"),
    ([1, 2, 3], 400, "image"),
])
def test_json_mistakes_are_4xx_with_a_message(client, body, status, needle):
    r = client.post("/api/predict", json=body)
    assert r.status_code == status and needle in r.json()["error"]


def test_deeply_nested_and_huge_json(client):
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/api/predict", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nested" in r.json()["error"]
    huge = '{"image": "' + "A" * 300_000 + '"}'  # over this client's 200 kB limit
    r = client.post("/api/predict", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_damaged_run_is_listed_and_the_others_keep_working(run, tmp_path):
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    folder = tmp_path / "runs"
    shutil.copytree(run.path, folder / "good")
    shutil.copytree(run.path, folder / "broken")
    (folder / "broken" / "classes.json").write_text("{oops")
    shutil.copytree(run.path, folder / "badweights")
    (folder / "badweights" / "model.safetensors").write_bytes(b"garbage")
    c = TestClient(create_app([folder]))
    listed = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
    assert "damaged" in listed["broken"] and "classes.json" in listed["broken"]["damaged"]
    assert c.get("/").status_code == 200
    assert c.post("/api/predict?run=broken", files={"file": ("v.png", bar_png(), "image/png")}).status_code == 409
    r = c.post("/api/predict?run=badweights", files={"file": ("v.png", bar_png(), "image/png")})
    assert r.status_code == 409 and "weights" in r.json()["error"]
    assert "damaged" in {r["id"]: r for r in c.get("/api/runs").json()["runs"]}["badweights"]
    r = c.post("/api/predict?run=good", files={"file": ("v.png", bar_png(), "image/png")})
    assert r.status_code == 200


def with_ood(src, dest, percentiles):
    """A copy of run ``src`` whose "unknown" threshold is read off ``percentiles``."""
    import json

    shutil.copytree(src, dest)
    (dest / "ood.json").write_text(json.dumps({"score": "energy", "fitted_on": "validation", "n": 9,
                                               "percentiles": percentiles}))
    return dest


def test_predictions_say_unknown_with_the_score_below_the_runs_threshold(run, tmp_path):
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    assert run.ood is not None  # training kept the energy's percentiles on held-out images
    body = TestClient(create_app([run.path])).post("/api/predict", files={"file": ("v.png", bar_png(), "image/png")})
    got = body.json()
    x = np.asarray(Image.open(io.BytesIO(bar_png())))[None, ..., None]
    assert abs(got["ood_score"] - run.ood_scores(x)[0]) < 1e-5
    assert got["ood_threshold"] == pytest.approx(run.ood_threshold(0.95))
    assert got["unknown"] is (got["ood_score"] < got["ood_threshold"])
    folder = tmp_path / "runs"
    with_ood(run.path, folder / "strict", [1e9] * 101)  # nothing passes: every image is unknown
    with_ood(run.path, folder / "lenient", [-1e9] * 101)
    c = TestClient(create_app([folder]))
    for rid, unknown in (("strict", True), ("lenient", False)):
        r = c.post(f"/api/predict?run={rid}", files={"file": ("v.png", bar_png(), "image/png")}).json()
        assert r["unknown"] is unknown and r["ood_score"] == pytest.approx(got["ood_score"], abs=1e-5)
        assert r["class"] == got["class"]  # the guess is still there, for whoever wants it
    # --reject none: never unknown; a 0.5 share: the run's median
    off = TestClient(create_app([folder / "strict"], keep=None)).post(
        "/api/predict", files={"file": ("v.png", bar_png(), "image/png")}).json()
    assert off["unknown"] is None and off["ood_score"] is None
    half = TestClient(create_app([run.path], keep=0.5)).post(
        "/api/predict", files={"file": ("v.png", bar_png(), "image/png")}).json()
    assert half["ood_threshold"] == pytest.approx(run.ood["percentiles"][50])
    # a run from before ood.json: no threshold, no unknown, and no error
    shutil.copytree(run.path, tmp_path / "old")
    (tmp_path / "old" / "ood.json").unlink()
    old = TestClient(create_app([tmp_path / "old"])).post(
        "/api/predict", files={"file": ("v.png", bar_png(), "image/png")})
    assert old.status_code == 200 and old.json()["unknown"] is None


def test_the_onnx_engine_scores_like_the_torch_model(run):
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    files = {"file": ("v.png", bar_png(), "image/png")}
    torch_side = TestClient(create_app([run.path])).post("/api/predict", files=files).json()
    onnx_side = TestClient(create_app([run.path], engine="onnx")).post("/api/predict", files=files).json()
    assert abs(onnx_side["ood_score"] - torch_side["ood_score"]) <= 1e-5 * max(1, abs(torch_side["ood_score"]))
    assert onnx_side["unknown"] is torch_side["unknown"]


def test_a_damaged_threshold_or_temperature_is_named(run, tmp_path):
    from cnnlab.runs import load_run

    bad = with_ood(run.path, tmp_path / "bad", [3.0, 2.0] + [4.0] * 99)
    with pytest.raises(Exception, match="ood.json is damaged: it needs 101 rising percentiles"):
        load_run(bad)
    (bad / "ood.json").unlink()
    (bad / "calibration.json").write_text('{"method": "temperature", "temperature": "hot"}')
    with pytest.raises(Exception, match="calibration.json is damaged: its temperature is 'hot'"):
        load_run(bad)


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower() and "/docs-static/" in page.text
    for ref in ("/docs-static/swagger-ui-bundle.js", "/docs-static/swagger-ui.css"):
        assert ref in page.text and client.get(ref).status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]


def test_fuzz_the_api_from_its_openapi_schema_finds_no_5xx(run):
    """Schemathesis generates requests from the OpenAPI schema (query parameters and both body
    kinds) and asserts that none gets a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from cnnlab.serve import create_app

    app = create_app([run.path.parent], max_upload_bytes=200_000, max_pixels=1_000_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []

    for op in schema.get_all_operations():
        operation = op.ok()

        @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.path, case.query, str(case.body)[:200], response.status_code))

        check()
    assert not failures, failures[:3]
