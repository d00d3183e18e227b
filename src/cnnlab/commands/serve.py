"""`cnnlab serve`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..options import Choice, Interval, Rule, option
from . import EngineOption, add_command
from .predict import _reject_ok, keep_share


def _port_ok(v):
    return True if 0 < v < 65536 else (f"invalid port {v}", "use 1-65535, e.g. 8000")


@dataclass
class Options(EngineOption):
    runs: list = option(None, "run directories, or folders of runs", positional=True, nargs="*",
                        item=str, metavar="RUN_OR_RUNS_DIR")
    static: str | None = option(None, "serve a web export (cnnlab export RUN --format web --out DIR) as it is, with "
                                "the headers its wasm needs, instead of runs", metavar="DIR")
    host: str = option("127.0.0.1", "address to bind; other machines can connect only if you give e.g. 0.0.0.0")
    port: int = option(8000, "port", Rule(_port_ok, "a port number from 1 to 65535"))
    max_upload_mb: float = option(5.0, "largest request body, MB (413 above)", Interval(0, open_lo=True))
    max_pixels: int = option(25_000_000, "largest image, pixels (413 above)", Interval(1))
    threads: int = option(1, "torch threads per request; concurrent requests already use the other cores",
                          Interval(1))
    reject: str = option("auto", "answer unknown (with its ood score) for images unlike the training data: auto "
                         "keeps 95% of each run's held-out images, a share such as 0.9, or none",
                         Rule(_reject_ok, "auto, none, or a share in (0, 1)"), metavar="auto|P|none")
    log_level: str = option("warning", "server log level", Choice(("critical", "error", "warning", "info", "debug")))


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "serve", Options, help="a web page to draw or upload images, and a JSON prediction API",
                description="Serve trained runs: a page to draw or upload an image and see the "
                "probabilities, feature maps and Grad-CAM; POST /api/predict, GET /api/model, docs at "
                "/docs. Reads only the runs it is given.").set_defaults(func=handle)


def handle(args) -> int:
    from ..errors import ConfigError

    if bool(args.static) == bool(args.runs):
        raise ConfigError("give run directories, or --static DIR (a web export), not both or neither", "serve",
                          "e.g. cnnlab serve runs/  or  cnnlab serve --static web/")
    if args.static:
        from ..webexport import static_app

        app = static_app(args.static)
        what = f"the web export {args.static}"
    else:
        app, what = _runs_app(args)
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this server", file=sys.stderr)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    print(f"serving {what} at http://{shown}:{args.port}/{'' if args.static else ' (API docs at /docs)'}; Ctrl-C stops")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _runs_app(args):
    from ..serve import create_app, find_runs

    runs = find_runs(args.runs)
    import torch

    torch.set_num_threads(args.threads)  # one image per request: parallel requests beat parallel ops
    app = create_app(args.runs, int(args.max_upload_mb * 1024 * 1024), args.max_pixels, args.engine,
                     keep_share(args.reject))
    return app, f"{len(runs)} run(s)"
