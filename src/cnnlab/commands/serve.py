"""`cnnlab serve`."""

from __future__ import annotations

import argparse
import sys

from . import add_engine_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sv = sub.add_parser("serve", help="a web page to draw or upload images, and a JSON prediction API",
                        formatter_class=fmt,
                        description="Serve trained runs: a page to draw or upload an image and see the "
                        "probabilities, feature maps and Grad-CAM; POST /api/predict, GET /api/model, docs at "
                        "/docs. Reads only the runs it is given.")
    sv.add_argument("runs", nargs="+", metavar="RUN_OR_RUNS_DIR", help="run directories, or folders of runs")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind; other machines can connect only "
                    "if you give e.g. 0.0.0.0")
    sv.add_argument("--port", type=int, default=8000, help="port")
    sv.add_argument("--max-upload-mb", type=float, default=5.0, help="largest request body, MB (413 above)")
    sv.add_argument("--max-pixels", type=int, default=25_000_000, help="largest image, pixels (413 above)")
    sv.add_argument("--threads", type=int, default=1,
                    help="torch threads per request; concurrent requests already use the other cores")
    add_engine_option(sv)
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                    help="server log level")
    sv.set_defaults(func=handle)


def handle(args) -> int:
    from ..errors import ConfigError
    from ..serve import create_app, find_runs

    if not 0 < args.port < 65536:
        raise ConfigError(f"invalid port {args.port}", "--port", "use 1-65535, e.g. 8000")
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise ConfigError("limits must be positive", "--max-upload-mb/--max-pixels", "use e.g. 5 and 25000000")
    runs = find_runs(args.runs)
    if args.threads < 1:
        raise ConfigError(f"invalid threads {args.threads}", "--threads", "use 1 or more")
    import torch

    torch.set_num_threads(args.threads)  # one image per request: parallel requests beat parallel ops
    app = create_app(args.runs, int(args.max_upload_mb * 1024 * 1024), args.max_pixels, args.engine)
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this server", file=sys.stderr)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    print(f"serving {len(runs)} run(s) at http://{shown}:{args.port}/ (API docs at /docs); Ctrl-C stops")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
