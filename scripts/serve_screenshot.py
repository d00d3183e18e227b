"""Make docs/serve.png: serve a run, draw trousers on the canvas in headless Chromium, screenshot.

    .venv/bin/python scripts/serve_screenshot.py RUN [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

import uvicorn
from playwright.sync_api import sync_playwright

from cnnlab.serve import create_app


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", default="docs/serve.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([args.run]), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.goto(f"http://127.0.0.1:{port}/")
            box = page.locator("#pad").bounding_box()
            # trousers: a filled waist and two filled legs with a gap between them
            paths = [[(100, y), (180, y)] for y in range(40, 101, 12)]
            paths += [[(100 + d, 100), (86 + d, 250)] for d in range(0, 33, 8)]
            paths += [[(148 + d, 100), (162 + d, 250)] for d in range(0, 33, 8)]
            for path in paths:
                page.mouse.move(box["x"] + path[0][0], box["y"] + path[0][1])
                page.mouse.down()
                steps = 10
                for i in range(1, steps + 1):
                    x = path[0][0] + (path[1][0] - path[0][0]) * i / steps
                    y = path[0][1] + (path[1][1] - path[0][1]) * i / steps
                    page.mouse.move(box["x"] + x, box["y"] + y)
                page.mouse.up()
            page.wait_for_selector("#gradcam")
            page.wait_for_timeout(800)
            page.screenshot(path=args.out)
            print(f"{args.out}: {page.locator('#result b').inner_text()}")
            browser.close()
    finally:
        server.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
