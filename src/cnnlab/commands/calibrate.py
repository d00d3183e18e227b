"""`cnnlab calibrate`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import Choice, option
from . import add_command


def _splits() -> tuple:
    from ..data.dataset import SPLITS

    return (*SPLITS, "all")


@dataclass
class Options:
    run: str = option(None, "run directory", positional=True, required=True)
    source: str | None = option(None, "data to fit on", positional=True,
                                default_text="the run's own data, split as in training")
    split: str = option("validation", "the split the temperature is fitted on (never the test split you report)",
                        Choice(_splits))
    method: str = option("temperature", "temperature scaling, or none: back to raw probabilities",
                         Choice(("temperature", "none")))
    json: bool = option(False, "print JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "calibrate", Options, help="fit temperature scaling for a run: honest probabilities, the same "
                "accuracy", description="Fit one temperature T on held-out images (the run's validation split by "
                "default) so that softmax(logits / T) is calibrated; saved with the run (calibration.json) and used "
                "by predict, evaluate, serve and every export; with the run's own data, also the out-of-distribution "
                "score's threshold (ood.json: predict --reject, serve's unknown). Runs trained by this version have "
                "both from the end of training already.").set_defaults(func=handle)


def handle(args) -> int:
    from ..api import calibrate

    record = calibrate(args.run, args.source, args.split, args.method)
    if args.json:
        print(json.dumps(record, indent=2))
    elif record["method"] == "none":
        print(f"calibration removed: {args.run} predicts raw probabilities")
    else:
        print(f"temperature {record['temperature']:.4f}, fitted on {record['fitted_on']}")
        for split in (record["fitted_on"], "test"):
            m = record.get(split)
            if m:
                print(f"  {split} ({m['n']:,} images): ECE {m['ece_raw']:.4f} -> {m['ece']:.4f}, "
                      f"NLL {m['nll_raw']:.4f} -> {m['nll']:.4f}")
        if "ood" in record:
            from ..engine.ood import threshold

            print(f"  unknown below ood score {threshold(record['ood'], 0.95):.3f} (keeps 95% of the "
                  f"{record['ood']['fitted_on']} split; predict --reject, serve)")
    return 0
