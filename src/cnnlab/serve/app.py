"""The web app behind ``cnnlab serve``: a page to draw or upload an image and a JSON API.

Security: the app reads only the run directories it was given (runs are addressed by their
folder name, never by a path); request bodies above ``max_upload_bytes`` and images above
``max_pixels`` are refused with 413 before they are decoded; a body that is not an image gets 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from ..data.drawing import prepare_drawing
from ..data.images import to_array
from ..errors import CnnlabError, CnnlabWarning, RunError
from ..runs import RunDir, load_run
from ..shipping import ENGINES

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 25_000_000  # 5,000 x 5,000


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_run_dir(p: Path) -> bool:
    return RunDir(p).is_run()


def find_runs(paths: list[str | Path]) -> dict[str, Path]:
    """Run id (folder name) -> run directory, for run directories and folders of runs (newest
    first)."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        if is_run_dir(path):
            dirs = [path]
        elif path.is_dir():
            dirs = sorted((d for d in path.iterdir() if is_run_dir(d)), key=lambda d: d.name, reverse=True)
        else:
            raise RunError("not a run directory or a folder of runs", str(path), "give a folder under runs/")
        for d in dirs:
            rid, i = d.name, 1
            while rid in found:
                i += 1
                rid = f"{d.name}-{i}"
            found[rid] = d.resolve()
    if not found:
        raise RunError("no trained runs found", ", ".join(map(str, paths)),
                       "give a run directory (cnnlab train writes them under runs/) or a folder of them")
    return found


class Runs:
    """The runs a server may use. Models load on first use (one lock per run, for Grad-CAM);
    listing runs reads only their small JSON files. A damaged run is listed as damaged (with the
    reason) and answers 409; the others keep working."""

    def __init__(self, paths: list[str | Path], engine: str = "torch", keep: float | None = 0.95):
        self.dirs = find_runs(paths)
        self.engine = engine  # onnx: predictions through ONNX Runtime (figures still use the torch model)
        self.keep = keep  # the share of a run's held-out images that pass as known; None: never unknown
        self._loaded: dict[str, tuple] = {}
        self._described: dict[str, dict] = {}
        self._lock = threading.Lock()
        usable = [r for r in self.dirs if "damaged" not in self.describe(r)]
        if not usable:
            first = next(iter(self.dirs))
            raise RunError(f"no usable run: {self.describe(first)['damaged']}", str(self.dirs[first]),
                           "train again, or give other runs")
        self.default = usable[0]

    def get(self, run_id):
        if run_id is not None and not isinstance(run_id, str):
            raise HTTPError(400, "\"run\" must be a run id (a string); GET /api/runs lists them")
        rid = run_id or self.default
        if rid not in self.dirs:
            raise HTTPError(404, f"unknown run '{rid}'; GET /api/runs lists them")
        if "damaged" in self.describe(rid):
            raise HTTPError(409, f"run '{rid}' is damaged: {self.describe(rid)['damaged']}")
        with self._lock:
            if rid not in self._loaded:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", CnnlabWarning)
                        run = load_run(self.dirs[rid])
                        run = ENGINES[self.engine].apply(run)
                        self._loaded[rid] = (run, threading.Lock())
                    for w in caught:
                        self._described[rid]["warning"] = str(w.message)
                except CnnlabError as e:
                    self._described[rid] = {"id": rid, "damaged": e.line()}
                    raise HTTPError(409, f"run '{rid}' is damaged: {e.line()}") from None
        return self._loaded[rid]

    def describe(self, rid: str) -> dict:
        if rid not in self._described:
            try:
                self._described[rid] = RunDir(self.dirs[rid]).describe(rid)
            except CnnlabError as e:
                self._described[rid] = {"id": rid, "damaged": e.line()}
        return self._described[rid]

    def usable(self) -> list[dict]:
        return [self.describe(r) for r in self.dirs if "damaged" not in self.describe(r)]


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise HTTPError(400, "the request has no image: send a file field 'file' or JSON {\"image\": base64}")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HTTPError(400, "the upload is not an image Pillow can read (PNG, JPEG, GIF, BMP, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise HTTPError(413, f"the image has too many pixels; the limit is {max_pixels:,}") from None
    pixels = img.width * img.height
    if pixels > max_pixels:
        raise HTTPError(413, f"the image has {pixels:,} pixels ({img.width}x{img.height}); the limit is "
                        f"{max_pixels:,}: resize it first")
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise HTTPError(400, f"the image cannot be decoded: {e}") from None
    return img


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_LUTS: dict[str, np.ndarray] = {}


def _lut(name: str) -> np.ndarray:
    if name not in _LUTS:
        import matplotlib

        _LUTS[name] = (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return _LUTS[name]


def _upscale(arr: np.ndarray, target: int = 168) -> np.ndarray:
    k = max(1, target // max(arr.shape[:2]))
    return arr.repeat(k, 0).repeat(k, 1)


def feature_map_grid(maps: np.ndarray, max_channels: int = 64) -> np.ndarray:
    """(C, H, W) activations -> one RGB image: a grid of channels, each scaled to its own range."""
    maps = maps[:max_channels]
    c, h, w = maps.shape
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    lo = maps.reshape(c, -1).min(1)[:, None, None]
    hi = maps.reshape(c, -1).max(1)[:, None, None]
    norm = ((maps - lo) / np.maximum(hi - lo, 1e-8) * 255).astype(np.uint8)
    k = max(1, 48 // max(h, w))
    tile_h, tile_w = h * k + 2, w * k + 2
    grid = np.full((rows * tile_h, cols * tile_w, 3), 255, np.uint8)
    colored = _lut("viridis")[norm]  # (C, H, W, 3)
    for i in range(c):
        r, q = divmod(i, cols)
        grid[r * tile_h + 1:r * tile_h + 1 + h * k, q * tile_w + 1:q * tile_w + 1 + w * k] = \
            colored[i].repeat(k, 0).repeat(k, 1)
    return grid


def gradcam_overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The input with the Grad-CAM heat-map (jet colours) blended over it, enlarged."""
    base = (np.repeat(image, 3, -1) if image.shape[-1] == 1 else image).astype(np.float32)
    heat = _lut("jet")[(np.clip(cam, 0, 1) * 255).astype(np.uint8)].astype(np.float32)
    return _upscale(np.clip(0.55 * base + 0.45 * heat, 0, 255).astype(np.uint8))


def predict_image(runs: Runs, rid: str | None, img: Image.Image, drawing: bool, explain: bool) -> dict:
    from ..viz.inspect import feature_maps, grad_cam

    run, lock = runs.get(rid)
    t0 = time.perf_counter()
    if drawing:
        stats = run.data.get("drawing") or {}
        x = prepare_drawing(img, run.image_size, run.color_mode, int(stats.get("background", 0)),
                            float(stats.get("extent", 1.0)))
    else:
        x = to_array(img, run.image_size, run.color_mode)
    # Plain predictions run in parallel (inference only); explanations take the run's lock, since
    # Grad-CAM computes gradients on the shared model.
    scored = runs.keep is not None and bool(run.ood)
    if scored:  # one pass gives both
        probs, energy = run.predict_scored(x[None])
        p = probs[0]
    else:
        p = run.predict_proba(x[None])[0]
    out = {"run": rid or runs.default, "class": run.class_names[int(p.argmax())], "index": int(p.argmax()),
           "confidence": float(p.max()),
           "probabilities": [{"class": c, "p": float(v)} for c, v in zip(run.class_names, p)],
           **unknown_of(run, float(energy[0]) if scored else None, runs.keep)}
    if explain:
        with lock:
            view = x[..., 0] if x.shape[-1] == 1 else x
            out["input_png"] = _png_b64(_upscale(view))
            out["feature_maps"] = [{"layer": name, "channels": int(m.shape[0]),
                                    "png": _png_b64(feature_map_grid(m))} for name, m in feature_maps(run, x)]
            if out["feature_maps"]:
                cams, _ = grad_cam(run, x[None])
                out["gradcam_png"] = _png_b64(gradcam_overlay(x, cams[0]))
    out["time_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return out


def unknown_of(run, score: float | None, keep: float | None) -> dict:
    """``unknown`` (the image is unlike the run's training data), its ``ood_score`` and the
    ``ood_threshold`` it was held against; null for a run without one (trained before cnnlab kept
    one) or a server started with --reject none."""
    if keep is None or not run.ood or score is None:
        return {"unknown": None, "ood_score": None, "ood_threshold": None}
    limit = run.ood_threshold(keep)
    return {"unknown": score < limit, "ood_score": score, "ood_threshold": limit}


def add_offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI's files served from the swagger-ui-bundle package, not a CDN: the
    page works on a machine without internet."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="cnnlab serve: API docs",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon-32x32.png")


def parse_json_body(raw: bytes) -> dict:
    """The predict request's JSON object; 400 with a message for anything else (invalid JSON,
    nesting deep enough to exhaust the parser, a list, a missing or non-string image)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPError(400, "the JSON body cannot be parsed") from None
    except RecursionError:
        raise HTTPError(400, "the JSON body is nested too deeply") from None
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise HTTPError(400, "the JSON body needs \"image\": a base64 string or a data URL")
    if body.get("run") is not None and not isinstance(body["run"], str):
        raise HTTPError(400, "\"run\" must be a run id (a string); GET /api/runs lists them")
    return body


def json_flag(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if not isinstance(v, bool):
        raise HTTPError(400, f"\"{key}\" must be true or false, got {json.dumps(v)[:40]}")
    return v


def create_app(paths: list[str | Path], max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               engine: str = "torch", keep: float | None = 0.95):
    """The ASGI app: FastAPI wrapped in a request-size limit. ``engine='onnx'`` predicts with ONNX
    Runtime on each run's exported model; ``keep``: an image scoring below the threshold that keeps
    this share of a run's held-out images is ``unknown`` (None: never)."""
    from ..version import __version__
    from .page import page_html

    ENGINES[engine].require()  # before the server starts: what the engine needs is there
    runs = Runs(paths, engine, keep)
    app = FastAPI(title="cnnlab serve", version=__version__, docs_url=None, redoc_url=None,
                  description="Classify images with trained cnnlab runs. POST /api/predict with a multipart "
                  "'file' field or JSON {\"image\": base64}.")
    add_offline_docs(app)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page_html(runs.usable())

    @app.get("/api/runs", summary="The runs this server can use",
             description="Every run given to the server; a damaged one has a \"damaged\" reason instead of "
             "its details, and one that did not finish has a \"warning\".")
    def list_runs():
        return {"default": runs.default, "runs": [runs.describe(r) for r in runs.dirs]}

    @app.get("/api/model", summary="A run's model summary, classes and metrics")
    def model(run: str | None = None):
        r, _ = runs.get(run)
        return {**runs.describe(run or runs.default), "summary": r.spec.summary_dict(),
                "metrics": {k: r.metrics.get(k) for k in ("test", "best_epoch", "epochs_run", "train_time_s")
                            if k in r.metrics}}

    @app.post("/api/predict", summary="Classify one image",
              description="Send the image as a multipart form field `file`, or as JSON "
              "`{\"image\": \"<base64 or data URL>\", \"run\": ..., \"drawing\": false, \"explain\": false}`. "
              "`drawing` frames a light-on-dark canvas drawing like the training data; `explain` adds the "
              "input as the model sees it, each Conv2D layer's feature maps and a Grad-CAM overlay. "
              "`unknown` is true for an image unlike the run's training data (its `ood_score`, the energy of "
              "the logits, is below `ood_threshold`); null where the run has no threshold.",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {
                      "type": "object", "required": ["image"], "properties": {
                          "image": {"type": "string", "description": "base64 image bytes, or a data URL"},
                          "run": {"type": "string", "description": "a run id from GET /api/runs"},
                          "drawing": {"type": "boolean"}, "explain": {"type": "boolean"}}}},
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["file"], "properties": {
                          "file": {"type": "string", "format": "binary"}, "run": {"type": "string"}}}}}}})
    async def predict(request: Request, run: str | None = None, drawing: bool = False, explain: bool = False):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            data, run = await _form_upload(request, run)
        elif ctype.startswith("application/json"):
            body = parse_json_body(await request.body())
            data = _json_image(body)
            run = run or body.get("run")
            drawing = json_flag(body, "drawing", drawing)
            explain = json_flag(body, "explain", explain)
        else:
            raise HTTPError(415, "send multipart/form-data with a 'file' field or application/json")
        img = decode_image(data, max_pixels)
        return await run_in_threadpool(predict_image, runs, run, img, drawing, explain)

    return BodyLimit(app, max_upload_bytes)


async def _form_upload(request, run: str | None) -> tuple[bytes, str | None]:
    """A multipart request's image bytes (field ``file``) and run (the query's, else field ``run``)."""
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPError(400, "the form has no file field 'file'")
    data = await upload.read()
    named = run or form.get("run") or None
    if named is not None and not isinstance(named, str):
        raise HTTPError(400, "the form field 'run' must be text")
    return data, named


def _json_image(body: dict) -> bytes:
    """A JSON request's ``image``: base64 bytes, or a data URL."""
    image = body["image"]
    if image.startswith("data:"):
        if "," not in image:
            raise HTTPError(400, "the data URL has no comma: write data:image/png;base64,<base64>")
        image = image.split(",", 1)[1]
    try:
        return base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "\"image\" is not valid base64") from None


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, by Content-Length or as they
    stream in; an accepted body is buffered (at most ``limit`` bytes) and handed to the app."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def _reject(self, send):
        body = json.dumps({"error": f"the upload is larger than the limit of {self.limit / 1024 / 1024:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._reject(send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
