"""Load test for ``cnnlab serve``: concurrent clients POST Fashion-MNIST test images (PNG, multipart)
to /api/predict on 127.0.0.1 and the script prints latency percentiles and errors.

    .venv/bin/python benchmarks/serve_load.py --run runs/<a fashion-cnn run>
    .venv/bin/python benchmarks/serve_load.py --run RUN --clients 8 --requests 2000 --json out.json

The server runs as its own process (``cnnlab serve``), as a user would start it; the clients are
threads with one keep-alive connection each. Latency is measured per request by the client:
send, server-side decode + preprocessing + model, JSON back. Goal (issue 6): 0 errors, p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_run(model: str = "fashion-cnn") -> Path | None:
    cands = []
    for spec in Path("runs").glob("**/spec.json"):
        try:
            if json.loads(spec.read_text())["name"] == model and (spec.parent / "model.safetensors").is_file():
                cands.append(spec.parent)
        except (OSError, ValueError, KeyError):
            continue
    return max(cands, key=lambda p: p.name) if cands else None


def test_pngs(n: int) -> list[bytes]:
    import cnnlab

    x = cnnlab.load_dataset("fashion-mnist", val_split=0.0)["test"].x[:n]
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0]).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client(port: int, bodies: list[tuple[bytes, str]], count: int, offset: int, lat: list, errors: list):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(count):
        body, ctype = bodies[(offset + i) % len(bodies)]
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/predict", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            payload = resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200 or b'"class"' not in payload:
                errors.append(f"HTTP {resp.status}: {payload[:100]!r}")
            else:
                lat.append(dt)
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run directory (default: the newest fashion-cnn run under runs/)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=1000, help="requests in total")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    run = Path(args.run) if args.run else latest_run()
    if run is None:
        print("no fashion-cnn run found: train one (cnnlab train) or pass --run", file=sys.stderr)
        return 2
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "serve", str(run), "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/api/runs")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print(server.stderr.read().decode(), file=sys.stderr)
                    return 1
                time.sleep(0.2)
        bodies = [multipart(p) for p in test_pngs(500)]
        client(port, bodies, args.warmup, 0, [], [])  # load the run, warm the caches
        lat: list[float] = []
        errors: list[str] = []
        per = [args.requests // args.clients + (i < args.requests % args.clients) for i in range(args.clients)]
        threads = [threading.Thread(target=client, args=(port, bodies, n, i * 97, lat, errors))
                   for i, n in enumerate(per)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(10)
    ms = np.array(lat) * 1000
    row = {"run": str(run), "clients": args.clients, "requests": args.requests, "ok": len(lat), "errors": len(errors),
           "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
           "p90_ms": float(np.percentile(ms, 90)) if len(ms) else None,
           "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
           "max_ms": float(ms.max()) if len(ms) else None, "mean_ms": statistics.fmean(ms) if len(ms) else None,
           "throughput_rps": len(lat) / wall, "machine": platform.machine(), "cpus": os.cpu_count()}
    print(f"{row['ok']:,} ok, {row['errors']} errors from {args.clients} clients in {wall:.1f} s "
          f"({row['throughput_rps']:.0f} requests/s)")
    if len(ms):
        print(f"latency ms: p50 {row['p50_ms']:.1f}  p90 {row['p90_ms']:.1f}  p99 {row['p99_ms']:.1f}  "
              f"max {row['max_ms']:.1f}   (goal: 0 errors, p50 <= 20 ms)")
    for e in errors[:5]:
        print("error:", e)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
