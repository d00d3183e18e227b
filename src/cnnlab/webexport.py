"""``cnnlab export RUN --format web [--out DIR] [--quantize int8] [--check-browser]``: a static web
page that runs the model in the browser with ONNX Runtime Web (its wasm backend).

    DIR/index.html                        upload, drag-and-drop, a drawing canvas (grayscale models),
                                          the webcam; probability bars; "unknown"; window.cnnlab.predict
    DIR/model.onnx                        the run's ONNX export (or its int8 one), checked like every export
    DIR/metadata.json, MODEL_CARD.md, export-check.json
    DIR/ort.wasm.min.js, ort-wasm-simd-threaded.mjs, ort-wasm-simd-threaded.wasm
                                          ONNX Runtime Web, from its npm package (pinned; scripts/install.sh
                                          puts it in the Python package, so exporting needs no network)

The page asks nothing of any other origin: it runs from any static server (``python -m http.server``
in DIR, or ``cnnlab serve --static DIR``, which adds the cross-origin isolation headers that let the
wasm backend use several threads, and the .wasm and .mjs types). ``--check-browser`` runs the check
images through the page in headless Chromium too and adds that runtime to export-check.json.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CnnlabError
from .runs import Run

ORT_WEB_VERSION = "1.31.1"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
BROWSER_TOLERANCE = 1e-4  # WebAssembly kernels sum in another order than ONNX Runtime's native ones
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def ort_web_dir() -> Path:
    return Path(str(resources.files("cnnlab").joinpath("web", "ort")))


def require_ort_web() -> Path:
    """The folder with ONNX Runtime Web's files; a one-line error naming what is missing."""
    folder = ort_web_dir()
    missing = [f for f in ORT_FILES if not (folder / f).is_file()]
    if missing:
        raise CnnlabError(f"ONNX Runtime Web's files are not installed ({', '.join(missing)})", str(folder),
                          f"run scripts/install.sh: it fetches onnxruntime-web@{ORT_WEB_VERSION} with npm")
    return folder


def page(run: Run) -> str:
    """index.html for the run: its title and a Hangul font subset for its class names."""
    from .report.html import _font_face

    html = resources.files("cnnlab").joinpath("web", "page.html").read_text(encoding="utf-8")
    title = f"{run.spec.name}: {', '.join(run.class_names[:4])}{', ...' if len(run.class_names) > 4 else ''}"
    title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return html.replace("__FONT__", _font_face(" ".join(run.class_names) + title)).replace("__TITLE__", title)


def _place(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``: a new folder, or one an earlier web export of
    cnnlab wrote (replaced whole); any other folder is left alone."""
    if out.exists():
        if not (out / "index.html").is_file() or not (out / "model.onnx").is_file():
            raise CnnlabError("the folder exists and is not a web export of cnnlab", str(out),
                              "give a new folder with --out, or empty this one")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_web(run: Run, out: str | Path | None = None, opset: int = 17, quantize: str = "none",
               check_browser: bool = False) -> dict:
    """DIR (default RUN/web): the static page with the run's model, checked before it is kept."""
    from .exporting import export_onnx

    ort_dir = require_ort_web()
    if check_browser:
        chromium()
    out = Path(out) if out else run.path / "web"
    if out.exists() and not out.is_dir():
        raise CnnlabError("the output is a file, and a web export is a folder", str(out), "give a folder name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if quantize == "int8":
            from .quantizing import export_int8

            result = export_int8(run, tmp / "model.onnx", opset)
        else:
            result = export_onnx(run, tmp / "model.onnx", opset)
        for name in ORT_FILES:
            shutil.copyfile(ort_dir / name, tmp / name)
        (tmp / "index.html").write_text(page(run), encoding="utf-8")
        if check_browser:
            result["browser"] = browser_check(run, tmp, result["parity"].precision)
        os.chmod(tmp, 0o755)
        _place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, "path": out, "folder": out}


def chromium() -> str:
    """The Chromium to check pages with ($CNNLAB_CHROMIUM, else chromium on the PATH); Playwright
    drives it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise CnnlabError("--check-browser needs Playwright's Python package", "--check-browser",
                          "pip install playwright (it drives the Chromium installed here; never let it "
                          "download one)") from None
    path = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise CnnlabError("no Chromium found for --check-browser", "--check-browser",
                          "install it (Debian: apt-get install chromium) or set CNNLAB_CHROMIUM")
    return path


def browser_check(run: Run, folder: Path, precision: str = "float32", batch: int = 256):
    """The page in ``folder`` served on 127.0.0.1 and opened in headless Chromium: the check images
    through window.cnnlab.predictBatch, compared with the run; the record goes into the folder's
    export-check.json as ``index.html``. A page that disagrees is refused."""
    from .parity import certify, measure, parity_images, record

    images, split, _ = parity_images(run)
    with static_server(folder) as url:
        probs, scores, speed = run_in_chromium(url, images, batch)
    ours, energy = run.predict_scored(images)
    p = measure(ours, probs, (energy, scores), file="index.html",
                runtime="chromium-wasm", split=split, images_per_s={"chromium-wasm": speed}, precision=precision,
                tolerance=BROWSER_TOLERANCE)
    record(p, folder)
    certify(p, folder / "index.html")
    return p


def run_in_chromium(url: str, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities, ood scores and images/s of ``images`` through the page at ``url``."""
    from playwright.sync_api import sync_playwright

    probs, scores = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.evaluate("window.cnnlab.ready")
            t0 = time.perf_counter()
            for i in range(0, len(images), batch):
                part = np.ascontiguousarray(images[i:i + batch])
                got = page.evaluate("([b, n]) => window.cnnlab.predictBatch(b, n)",
                                    [base64.b64encode(part.tobytes()).decode(), len(part)])
                probs += [g["probabilities"] for g in got]
                scores += [g["ood_score"] for g in got]
            speed = len(images) / max(time.perf_counter() - t0, 1e-9)
        finally:
            browser.close()
    return np.asarray(probs, np.float64), np.asarray(scores, np.float64), speed


HEADERS = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"),
           (b"cross-origin-resource-policy", b"same-origin"), (b"x-content-type-options", b"nosniff")]
TYPES = {".wasm": b"application/wasm", ".mjs": b"text/javascript; charset=utf-8"}


def static_app(folder: str | Path):
    """The ASGI app serving ``folder`` (index.html at /)."""
    from starlette.staticfiles import StaticFiles

    folder = Path(folder)
    if not (folder / "index.html").is_file():
        raise CnnlabError("not a web export (no index.html)", str(folder),
                          "export one first: cnnlab export RUN --format web --out DIR")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    files = Starlette(routes=[Mount("/", app=StaticFiles(directory=str(folder), html=True))])  # 404s answered

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await files(scope, receive, send)
        kind = TYPES.get(Path(scope.get("path", "")).suffix)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if not (kind and k == b"content-type")]
                message = {**message, "headers": headers + HEADERS + ([(b"content-type", kind)] if kind else [])}
            await send(message)

        await files(scope, receive, with_headers)

    return app


class static_server:
    """``with static_server(folder) as url``: the folder served on 127.0.0.1 (a free port) by
    cnnlab serve --static's app, in a thread."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> str:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(static_app(self.folder), host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}/index.html"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def web_command(run: Run, out: str | None, options: dict) -> list[str]:
    """``cnnlab export --format web``: the folder written and checked, and how to open it."""
    from .exportcli import checked_lines

    r = export_web(run, out, options.get("opset", 17), options.get("quantize", "none"),
                   options.get("check_browser", False))
    lines = [f"wrote the web page {r['folder']} (index.html, model.onnx, ONNX Runtime Web {ORT_WEB_VERSION})",
             *checked_lines(r)]
    if r["parity"].precision == "int8":
        from .quantizing import int8_lines

        lines += int8_lines(r)
    if r.get("browser"):
        b = r["browser"]
        lines.append(f"in Chromium: {b.line()} ({b.images_per_s['chromium-wasm']:,.0f} images/s)")
    folder = json.dumps(str(r["folder"]))
    return lines + [f"open it: cnnlab serve --static {folder}   (or: python -m http.server -d {folder})"]
