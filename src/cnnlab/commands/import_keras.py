"""`cnnlab import-keras`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-keras", help="turn a Keras .keras / .h5 model into a run directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Import a Keras 3 .keras file or a legacy HDF5 model (what ModelCheckpoint "
                       "saves) as a cnnlab run: spec, weights, classes and pixel scaling. With --data, the run "
                       "is evaluated on that source's test split and gets a report; evaluate, predict, report, "
                       "serve, export and --init-from all work on it.")
    p.add_argument("model", help="the .keras or .h5 file")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help="the data the model was trained on (e.g. fashion-mnist, a folder): its class names, "
                   "and the split evaluate and report use (default: none)")
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="class names: a file with one per line, or fashion-mnist / mnist (default: the data's, "
                   "else 0, 1, 2, ...)")
    p.add_argument("--labels", default="en", choices=["en", "ko"], help="class-name language of built-in sets")
    p.add_argument("--scale", default=None, choices=["255", "127.5", "none"],
                   help="what the notebook did to pixels before fit: 255 (x / 255.0), 127.5 (to [-1, 1]) or none "
                   "(default: none when the model starts with Rescaling, else 255)")
    p.add_argument("--name", default=None, help="the run's name (default: the model's name)")
    p.add_argument("--data-dir", default=None, help="where built-in data sets are looked for")
    p.add_argument("--runs-dir", default="runs", help="where the run directory is made")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the run directory itself (new or empty; default: RUNS_DIR/<timestamp>-<name>)")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.html (with --data)")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from ..importing import import_keras
    from ..viz import default_split

    run = import_keras(args.model, data=args.data, class_names=args.class_names, scale=args.scale, name=args.name,
                       runs_dir=args.runs_dir, labels=args.labels, data_dir=args.data_dir, out=args.out)
    if args.data is not None and args.report:
        from ..report import build_report

        print(f"report written to {build_report(run, split=default_split(run))}")
    print(f"run written to {run.path}")
    return 0
