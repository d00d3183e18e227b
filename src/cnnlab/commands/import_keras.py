"""`cnnlab import-keras`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..importing import ImportOptions
from ..options import option
from . import add_command


@dataclass
class Options(ImportOptions):
    model: str = option(None, "the .keras or .h5 file", positional=True, required=True)
    report: bool = option(True, "skip report.html (with --data)", default_text="write it")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "import-keras", Options, help="turn a Keras .keras / .h5 model into a run directory",
                description="Import a Keras 3 .keras file or a legacy HDF5 model (what ModelCheckpoint "
                "saves) as a cnnlab run: spec, weights, classes and pixel scaling. With --data, the run "
                "is evaluated on that source's test split and gets a report; evaluate, predict, report, "
                "serve, export and --init-from all work on it.").set_defaults(func=handle)


def handle(args) -> int:
    from ..importing import import_keras
    from ..options import keys_of
    from ..viz import default_split

    run = import_keras(args.model, **{k: getattr(args, k) for k in keys_of(ImportOptions)})
    if args.data is not None and args.report:
        from ..report import build_report

        print(f"report written to {build_report(run, split=default_split(run))}")
    print(f"run written to {run.path}")
    return 0
