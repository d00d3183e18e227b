"""`cnnlab evaluate`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import Choice, Interval, Rule, option
from . import PrecisionOption, add_command


def _splits() -> tuple:
    from ..data.dataset import SPLITS

    return (*SPLITS, "all")


def _corruptions_ok(v):
    from ..data.corruptions import resolve
    from ..errors import ConfigError

    try:
        resolve(v)
    except ConfigError as e:
        return (e.what, e.fix)
    return True


def _severities_ok(v) -> bool:
    values = v if isinstance(v, (list, tuple)) else [v]
    return all(isinstance(s, int) and 1 <= s <= 5 for s in values)


@dataclass
class Options(PrecisionOption):
    run: str = option(None, "run directory", positional=True, required=True)
    source: str | None = option(None, "data to evaluate on", positional=True,
                             default_text="the run's own data, split as in training")
    split: str = option("test", "which split", Choice(_splits))
    json: bool = option(False, "print JSON")
    corruptions: str | None = option(None, "accuracy under corruptions (noise, blur, rotation, JPEG, ...): all, or a "
                                     "comma-separated list; the table goes in evaluation-corruptions.json",
                                     Rule(_corruptions_ok, "all, or names of corruptions"), metavar="LIST", nargs="?",
                                     const="all", default_text="none")
    severity: list | tuple = option((3,), "with --corruptions: severities 1 (mild) to 5", Rule(_severities_ok,
                                    "from 1 to 5 (each)"), nargs="+", item=int, metavar="S", example="3")
    seed: int = option(0, "with --corruptions: the seed of their random numbers", Interval(0))
    ood: str | None = option(None, "another source whose images the model never learned (e.g. digits for a "
                             "Fashion-MNIST model): how well its scores tell them from the split's images (AUROC, "
                             "FPR at 95% TPR), saved with a histogram", metavar="SOURCE")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "evaluate", Options, help="evaluate a run: loss, accuracy, per-class report, confusion matrix"
                ).set_defaults(func=handle)


def handle(args) -> int:
    from ..api import evaluate
    from ..evaluation import format_evaluation
    from ..runs import load_run

    run = load_run(args.run).with_precision(args.precision)
    if args.corruptions is not None:
        return corruptions(run, args)
    if args.ood is not None:
        return out_of_distribution(run, args)
    ev = evaluate(run, args.source, args.split)
    if args.json:
        print(json.dumps({k: v for k, v in ev.items() if k != "report_text"}, indent=2, ensure_ascii=False))
    else:
        print(format_evaluation(ev, args.split))
        print(f"saved {ev['saved_to']}")
    return 0


def corruptions(run, args) -> int:
    from ..api import robustness
    from ..evaluation import format_corruptions

    levels = args.severity if isinstance(args.severity, (list, tuple)) else [args.severity]
    table = robustness(run, args.source, args.split, args.corruptions, levels, args.seed)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_corruptions(table))
        print(f"saved {table['saved_to']}")
    return 0


def out_of_distribution(run, args) -> int:
    from pathlib import Path

    from ..api import ood
    from ..atomic import write_with
    from ..viz.figures import ood_histogram

    result = ood(run, args.ood, args.split)
    fig = ood_histogram(result.pop("histogram"), result, f"{args.split} split", args.ood)
    out = Path(run.path) / "ood.png"
    write_with(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.split} split ({result['in_images']:,} images) against {args.ood} ({result['out_images']:,} images):")
    print(f"  {'score':<12}{'AUROC':>8}{'FPR@95TPR':>11}{'kept accuracy':>15}")
    for name in ("energy", "max_softmax"):
        r = result[name]
        print(f"  {name:<12}{r['auroc']:>8.4f}{r['fpr_at_95_tpr']:>11.4f}{r['kept_accuracy']:>15.4f}")
    print(f"saved {result['saved_to']} and {out}")
    return 0
