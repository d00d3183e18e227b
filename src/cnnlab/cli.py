"""The ``cnnlab`` command: parse, call the API, print. Errors -> one line, exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from .config import KEYS, TrainConfig, make_config
from .errors import CnnlabError

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def _default(key: str) -> str:
    v = DEFAULTS[key]
    return "none" if v is None else str(v)


def _patience(text: str):
    return None if text.lower() in ("none", "off") else int(text)


def _zoom(values):
    return values[0] if len(values) == 1 else values


def add_train_options(p: argparse.ArgumentParser, skip: tuple = (), report: bool = True,
                      only: tuple | None = None) -> None:
    """The training-config keys as options; ``skip`` leaves some keys out, ``only`` keeps just those."""
    S = argparse.SUPPRESS

    def opt(*names, key, help, **kw):
        if key in skip or (only is not None and key not in only):
            return
        p_ = groups.get(kw.pop("group", "training"))
        if kw.get("action") in ("store_true", "store_false"):
            p_.add_argument(*names, dest=key, default=S, help=help, **kw)
        else:
            p_.add_argument(*names, dest=key, default=S, help=f"{help} (default: {_default(key)})", **kw)

    groups = {g: p.add_argument_group(g) for g in ("data", "model and training", "early stopping",
                                                   "augmentation (training batches only)", "output")}
    groups["training"] = groups["model and training"]
    d, a, e, o = "data", "augmentation (training batches only)", "early stopping", "output"
    p.add_argument("source", nargs="?", default=S,
                   help="fashion-mnist, mnist, digits, folder:PATH, csv:PATH or npz:PATH (default: fashion-mnist)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with the same keys as these options; "
                   "flags override it (default: none)")
    opt("--val-source", key="val_source", group=d, metavar="SOURCE", help="explicit validation set")
    opt("--test-source", key="test_source", group=d, metavar="SOURCE", help="explicit test set")
    opt("--data-dir", key="data_dir", group=d, metavar="DIR",
        help="where to look for fashion-mnist/mnist IDX files first (also $CNNLAB_DATA)")
    opt("--image-size", key="image_size", group=d, nargs=2, type=int, metavar=("H", "W"),
        help="resize images to H x W (default for folders/CSV: their most common size)")
    opt("--color-mode", key="color_mode", group=d, choices=["auto", "grayscale", "rgb"],
        help="colour mode of the images")
    opt("--labels", key="labels", group=d, choices=["en", "ko"], help="language of built-in class names")
    opt("--class-names", key="class_names", group=d, metavar="FILE",
        help="class names: a file with one per line, or fashion-mnist / mnist")
    opt("--label-column", key="label_column", group=d, metavar="NAME",
        help="CSV label column (default: label, class, target or y)")
    opt("--image-column", key="image_column", group=d, metavar="NAME",
        help="CSV image column: a path or an id (default: image, path, file, filename or id); "
        "'index' when the images are named by row number")
    opt("--image-pattern", key="image_pattern", group=d, metavar="TEMPLATE",
        help="CSV image file template relative to the CSV, e.g. 'images/train/{}.png'")
    opt("--no-download", key="download", group=d, action="store_false",
        help="never download built-in datasets (default: download when not found)")
    opt("--on-bad-image", key="on_bad_image", group=d, choices=["error", "skip"],
        help="an unreadable, truncated or oversized image file: stop with an error, or leave it out "
        "(counted in the run)")
    opt("--val-split", key="val_split", group=d, type=float, metavar="F",
        help="stratified validation fraction of the training data, 0 for none")
    opt("--test-split", key="test_split", group=d, type=float, metavar="F",
        help="test fraction held out when the source has no test set")
    opt("--scale", key="scale", group=d,
        choices=["255", "minmax", "minmax-per-channel", "standard", "standard-per-channel", "none"],
        help="pixel scaling, fitted on the training split only")
    opt("--model", "-m", key="model", metavar="PRESET|SPEC", help="a preset (cnnlab models) or a spec file")
    opt("--epochs", key="epochs", type=int, help="maximum number of epochs")
    opt("--batch-size", key="batch_size", type=int, help="batch size")
    opt("--optimizer", key="optimizer", choices=["adam", "adamw", "rmsprop", "sgd"], help="optimizer")
    opt("--lr", key="lr", type=float, help="learning rate (none: Keras' default, 0.001; sgd 0.01)")
    opt("--momentum", key="momentum", type=float, help="momentum for sgd and rmsprop")
    opt("--weight-decay", key="weight_decay", type=float, help="weight decay (adamw: 0.004 when 0)")
    opt("--label-smoothing", key="label_smoothing", type=float, help="label smoothing")
    opt("--schedule", key="schedule", choices=["constant", "onecycle", "triangular", "cosine"],
        help="learning-rate schedule over the whole run (per step)")
    opt("--warmup", key="warmup", type=float, metavar="F",
        help="fraction of training spent warming up (onecycle, triangular, cosine)")
    opt("--tta", key="tta", choices=["none", "flip"],
        help="test-time augmentation for evaluation and prediction: average with the mirror image")
    opt("--recipe", key="recipe", choices=["keras", "fast"],
        help="a set of training settings; flags you give still win (none: the preset's own recipe, "
        "else keras: the notebooks' recipe)")
    opt("--seed", key="seed", type=int, help="random seed: splits, initial weights, batches, augmentation")
    opt("--device", key="device", choices=["auto", "cpu", "cuda"], help="where to train; auto picks cuda when present")
    opt("--threads", key="threads", type=int, help="CPU threads (none: torch's default)")
    opt("--time-limit", key="time_limit", type=float, metavar="S",
        help="stop training after S seconds (the best epoch so far is kept; none: no limit)")
    opt("--class-weight", key="class_weight", metavar="balanced|none|FILE",
        help="weight the loss per class: balanced (n / (K * count)), or a file with one weight per class")
    opt("--sampler", key="sampler", choices=["none", "balanced"],
        help="balanced: draw every class equally often in each epoch")
    opt("--no-check", key="check", group=d, action="store_false",
        help="skip the data check before training (duplicates, leakage, class balance; default: check)")
    opt("--strict", key="strict", group=d, action="store_true",
        help="stop when the data check finds images shared across splits (default: warn)")
    opt("--monitor", key="monitor", group=e, choices=["val_loss", "val_accuracy"], help="metric to monitor")
    opt("--patience", key="patience", group=e, type=_patience,
        help="epochs without improvement before stopping; none disables early stopping")
    opt("--min-delta", key="min_delta", group=e, type=float, help="smallest change that counts as improvement")
    opt("--no-restore-best", key="restore_best", group=e, action="store_false",
        help="keep the last epoch's weights instead of the best epoch's (default: restore best)")
    opt("--rotation-range", key="rotation_range", group=a, type=float, metavar="DEG", help="random rotation, degrees")
    opt("--width-shift-range", key="width_shift_range", group=a, type=float, metavar="F",
        help="horizontal shift, fraction of width (< 1) or pixels")
    opt("--height-shift-range", key="height_shift_range", group=a, type=float, metavar="F",
        help="vertical shift, fraction of height (< 1) or pixels")
    opt("--shear-range", key="shear_range", group=a, type=float, metavar="DEG", help="shear angle, degrees")
    opt("--zoom-range", key="zoom_range", group=a, type=float, nargs="+", metavar="Z",
        help="zoom: Z for [1-Z, 1+Z], or two numbers LO HI")
    opt("--horizontal-flip", key="horizontal_flip", group=a, action="store_true",
        help="flip half the images left-right (default: off)")
    opt("--vertical-flip", key="vertical_flip", group=a, action="store_true",
        help="flip half the images upside down (default: off)")
    opt("--fill-mode", key="fill_mode", group=a, choices=["nearest", "constant", "reflect", "wrap"],
        help="how points outside the image are filled")
    opt("--cval", key="cval", group=a, type=float, help="pixel value (0..255) for fill-mode constant")
    opt("--random-crop", key="random_crop", group=a, type=int, metavar="PIXELS",
        help="pad by PIXELS and crop back at a random offset")
    opt("--random-erasing", key="random_erasing", group=a, type=float, metavar="P",
        help="probability of erasing a random rectangle")
    opt("--name", key="name", group=o, help="run name (none: <model>-<source>)")
    opt("--runs-dir", key="runs_dir", group=o, metavar="DIR", help="where run directories are written")
    opt("--quiet", "-q", key="quiet", group=o, action="store_true",
        help="no progress bar or epoch lines (default: off)")
    if report:
        groups[o].add_argument("--no-report", dest="report", action="store_false", default=True,
                               help="skip writing report.html at the end (default: write it)")


def config_overrides(args) -> dict:
    """The training-config keys given on the command line."""
    overrides = {k: getattr(args, k) for k in KEYS if hasattr(args, k)}
    if "zoom_range" in overrides:
        overrides["zoom_range"] = _zoom(overrides["zoom_range"])
    return overrides


def cmd_train(args) -> int:
    from .evaluation import format_evaluation
    from .runs import RunDir
    from .training import train

    overrides = config_overrides(args)
    explicit_none = [k for k, v in overrides.items() if v is None]  # e.g. --patience none
    cfg = make_config(args.config, explicit_none=explicit_none, **overrides)
    run = train(cfg)
    m = run.metrics
    ev = RunDir(run.path).read_optional(RunDir.EVALUATION)
    if ev is not None and not cfg.quiet:
        print(format_evaluation(ev, "test"))
    if "test" in m:
        print(f"test accuracy {m['test']['accuracy']:.4f} - test loss {m['test']['loss']:.4f} - "
              f"best epoch {m['best_epoch']} of {m['epochs_run']} - {m['wall_time_s']:.1f}s")
    if args.report and m.get("status") != "interrupted":
        from .report import build_report
        from .viz import default_split

        try:
            print(f"report written to {build_report(run, split=default_split(run))}")
        except OSError as e:  # the trained run is complete; only the report is missing
            print(f"warning: report.html was not written: {_os_error_line(e)}; then run: cnnlab report "
                  f"{run.path}", file=sys.stderr)
    print(f"run written to {run.path}")
    if m.get("status") == "interrupted":
        print("training was interrupted: the best checkpoint so far is kept", file=sys.stderr)
        return 130
    return 0


# The keys that say what the data is and how it is split: `cnnlab check` takes these.
DATA_KEYS = ("val_source", "test_source", "data_dir", "image_size", "color_mode", "labels", "class_names",
             "label_column", "image_column", "image_pattern", "download", "on_bad_image", "val_split",
             "test_split", "seed", "strict")


def cmd_check(args) -> int:
    from .atomic import write_json
    from .data.check import check_source, findings, format_report

    overrides = config_overrides(args)
    cfg = make_config(args.config, **overrides)
    report = check_source(cfg, near=not args.no_near)
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report, cfg.strict))
        if args.out:
            print(f"report written to {args.out}")
    errors = [m for level, m in findings(report, cfg.strict) if level == "error"]
    if errors:
        from .errors import DataError

        raise DataError(errors[0], cfg.source, "remove the copies from one of the splits (cnnlab check lists "
                        "examples), or leave out --strict")
    return 0


def cmd_compare(args) -> int:
    from .comparison import compare
    from .comparison.leaderboard import markdown

    overrides = config_overrides(args)
    overrides.pop("source", None)
    board = compare(getattr(args, "source", "fashion-mnist"), args.models, cv=args.cv, jobs=args.jobs,
                    subsample_n=args.subsample, time_limit=args.time_limit_each, out=args.out,
                    config=args.config, quiet=overrides.pop("quiet", False), **overrides)
    print(markdown(board, board.attrs["meta"]), end="")
    out = Path(board.attrs["out"])
    print(f"leaderboard written to {out / 'leaderboard.html'} (also .csv and .md)")
    if board.attrs["meta"]["interrupted"]:
        print("the comparison was interrupted: the leaderboard holds the models that finished", file=sys.stderr)
        return 130
    return 0


def cmd_serve(args) -> int:
    from .errors import ConfigError
    from .serve import create_app, find_runs

    if not 0 < args.port < 65536:
        raise ConfigError(f"invalid port {args.port}", "--port", "use 1-65535, e.g. 8000")
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise ConfigError("limits must be positive", "--max-upload-mb/--max-pixels", "use e.g. 5 and 25000000")
    runs = find_runs(args.runs)
    if args.threads < 1:
        raise ConfigError(f"invalid threads {args.threads}", "--threads", "use 1 or more")
    import torch

    torch.set_num_threads(args.threads)  # one image per request: parallel requests beat parallel ops
    app = create_app(args.runs, int(args.max_upload_mb * 1024 * 1024), args.max_pixels)
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this server", file=sys.stderr)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    print(f"serving {len(runs)} run(s) at http://{shown}:{args.port}/ (API docs at /docs); Ctrl-C stops")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_evaluate(args) -> int:
    from .api import evaluate
    from .evaluation import format_evaluation
    from .runs import load_run

    run = load_run(args.run)
    ev = evaluate(run, args.source, args.split)
    if args.json:
        print(json.dumps({k: v for k, v in ev.items() if k != "report_text"}, indent=2, ensure_ascii=False))
    else:
        print(format_evaluation(ev, args.split))
        print(f"saved {ev['saved_to']}")
    return 0


def cmd_predict(args) -> int:
    from .data.images import printable
    from .prediction import collect_inputs, format_csv, predict_paths, predict_template, rows_for, write_csv
    from .runs import load_run

    run = load_run(args.run)
    if len(args.inputs) == 1 and args.inputs[0].lower().endswith(".csv") and Path(args.inputs[0]).is_file():
        cols, rows = predict_template(run, args.inputs[0], args.image_column, args.image_pattern,
                                      args.label_column, args.top_k, args.submission)
    else:
        paths = collect_inputs(args.inputs)
        probs = predict_paths(run, paths)
        cols, rows = rows_for(run, [printable(p) for p in paths], probs, args.top_k)
        if len(paths) == 1 and not args.out:
            p = probs[0]
            print(f"{printable(paths[0])}: {run.class_names[int(p.argmax())]} ({p.max():.4f})")
            for name, v in sorted(zip(run.class_names, p), key=lambda t: -t[1]):
                print(f"  {name:<16} {v:.4f} {'#' * int(round(v * 40))}")
            return 0
    if args.out:
        write_csv(args.out, cols, rows)
        print(f"wrote {len(rows):,} predictions to {args.out}")
    else:
        print(format_csv([c for c in cols if not c.startswith("prob_")], rows), end="")
    return 0


def cmd_summary(args) -> int:
    from .models import spec_from  # torch-free: a summary needs shapes and counts, not a module

    shape = tuple(args.input_shape) if args.input_shape else None
    spec = spec_from(args.model, shape, args.classes)
    print(json.dumps(spec.summary_dict(), indent=2) if args.json else spec.summary())
    return 0


def cmd_models(args) -> int:
    from .models import PRESETS, parse_spec, preset_spec

    print(f"{'preset':<15}{'input':<13}{'params':>11}{'non-train.':>12}  description")
    for name, p in PRESETS.items():
        s = parse_spec(preset_spec(name))
        shape = "x".join(map(str, p.input_shape))
        print(f"{name:<15}{shape:<13}{s.total_params:>11,}{s.non_trainable_params:>12,}  {p.description}")
        if p.recipe:
            print(f"{'':<51}recipe: " + ", ".join(f"{k} {v}" for k, v in p.recipe.items()))
    print("\nA preset's recipe applies unless --recipe or your flags say otherwise.")
    print("Presets adapt to the data (input shape, number of classes): cnnlab summary PRESET "
          "--input-shape H W C --classes K")
    return 0


def cmd_datasets(args) -> int:
    from .data.builtin import availability

    rows = availability()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "yes" if r["available"] else "no "
        print(f"{r['name']:<15}{mark}  {r['where']}\n{'':<20}{r['title']}")
    print("\nYour own images:\n"
          "  folder:PATH   one sub-folder per class, optionally under train/ validation/ test/\n"
          "  csv:PATH      a table with an image column (path or id) and a label column\n"
          "  npz:PATH      arrays x_train, y_train (x_val, y_val, x_test, y_test optional)")
    return 0


def cmd_download(args) -> int:
    from .data.builtin import IDX_SETS, download
    from .errors import DataError

    if args.name not in IDX_SETS:
        raise DataError(f"'{args.name}' cannot be downloaded", "NAME",
                        f"use one of {', '.join(IDX_SETS)} (digits ships with scikit-learn)")
    dest = download(args.name, None if args.dir is None else Path(args.dir))
    print(f"{args.name} is in {dest}")
    return 0


def cmd_export(args) -> int:
    from .data.export import export_images
    from .data.sources import DataOptions, load_source

    if args.limit is not None and args.limit < 1:
        from .errors import ConfigError

        raise ConfigError(f"limit must be >= 1, got {args.limit}", "--limit", "use e.g. --limit 1000, or leave it out")
    ds = load_source(args.source, DataOptions(data_dir=args.data_dir, labels=args.labels))
    counts = export_images(ds, args.out, limit=args.limit)
    print(f"wrote {', '.join(f'{n:,} {k}' for k, n in counts.items())} images to {args.out}")
    return 0


PLOTS = ("curves", "confusion", "samples", "kernels", "feature-maps", "histograms", "misclassified",
         "diagram", "gradcam", "class-counts")


def cmd_report(args) -> int:
    from .report import build_report
    from .runs import load_run
    from .viz import default_split

    run = load_run(args.run)
    path = build_report(run, args.out, split=args.split or default_split(run))
    print(f"report written to {path}")
    return 0


def _image_arg(run, image: str | None):
    from .data.images import load_image

    return None if image is None else load_image(image, run.image_size, run.color_mode)


def cmd_plot(args) -> int:
    from . import viz
    from .atomic import write_with
    from .runs import load_run

    run = load_run(args.run)
    image = _image_arg(run, args.image)
    kind = args.kind
    split = args.split or viz.default_split(run)
    if kind == "feature-maps":
        fig = viz.feature_maps(run, image, split=split)
    elif kind == "gradcam":
        import numpy as np

        imgs = image[None] if image is not None else viz.run_split(run, split).x[:8]
        fig = viz.gradcam(run, np.asarray(imgs))
    elif kind in ("confusion", "misclassified"):
        fig = getattr(viz, kind)(run, split=split)
    else:
        fig = getattr(viz, kind.replace("-", "_"))(run)
    out = Path(args.out or run.path / f"{kind}.{args.format}")
    write_with(out, lambda tmp: fig.savefig(tmp, format=args.format, dpi=args.dpi))
    print(f"wrote {out}")
    return 0


def cmd_explain(args) -> int:
    from . import viz
    from .atomic import write_with
    from .runs import load_run
    from .viz.inspect import grad_cam

    run = load_run(args.run)
    image = _image_arg(run, args.image)
    probs = run.predict_proba(image[None])[0]
    out_dir = Path(args.out_dir or run.path / "explain" / Path(args.image).stem)
    order = probs.argsort()[::-1]
    figs = {"probabilities": viz.probabilities(probs, run.class_names, image, title=Path(args.image).name)}
    print(f"{args.image}: {run.class_names[order[0]]} ({probs[order[0]]:.4f})")
    for i in order[:5]:
        print(f"  {run.class_names[i]:<16} {probs[i]:.4f}")
    if viz.inspect.conv_indices(run.model):
        figs["feature_maps"] = viz.feature_maps(run, image)
        cam, classes = grad_cam(run, image[None])  # computed once: for the figure and the summary
        figs["gradcam"] = viz.figures.gradcam_overlay([image], [cam[0]], [run.class_names[int(classes[0])]])
        h, w = cam.shape[1:]
        ys, xs = divmod(int(cam[0].argmax()), w)
        where = ("top" if ys < h / 3 else "bottom" if ys > 2 * h / 3 else "middle") + "-" + \
                ("left" if xs < w / 3 else "right" if xs > 2 * w / 3 else "centre")
        print(f"  Grad-CAM: the evidence for {run.class_names[order[0]]} is strongest at the {where} "
              f"(pixel row {ys}, column {xs})")
    for name, fig in figs.items():
        write_with(out_dir / f"{name}.png", lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=100))
    print(f"figures written to {out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .comparison import DEFAULT_MODELS
    from .comparison.baselines import BASELINES

    p = argparse.ArgumentParser(prog="cnnlab", description="Train, evaluate and explain convolutional "
                                "image classifiers (Keras vocabulary, PyTorch engine).")
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors (default: off)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    t = sub.add_parser("train", help="train a model and evaluate it on the test set",
                       description="Train a model. With no arguments: fashion-cnn on Fashion-MNIST with the "
                       "notebooks' recipe (Adam, validation split 0.2, early stopping with patience 2, "
                       "best weights restored), evaluated on the test set.")
    add_train_options(t)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="one leaderboard: decision tree, forest, ... and CNNs on the same split",
                       description="Train every model on the same stratified split (or the same K stratified "
                       "folds) with the same pixel scaling, and print a leaderboard: accuracy, macro-F1, size, "
                       "train time and predict time. Saved as CSV, Markdown and HTML under --out; neural "
                       "models keep their run directories there. The source's test split is never read.")
    add_train_options(c, skip=("model", "name", "time_limit"), report=False)
    cg = c.add_argument_group("comparison")
    cg.add_argument("--models", default=",".join(DEFAULT_MODELS), metavar="LIST",
                    help="comma-separated: baselines " + ", ".join(BASELINES) + "; any preset (cnnlab models) "
                    "or spec file (default: %(default)s)")
    cg.add_argument("--cv", type=int, default=None, metavar="K",
                    help="K stratified folds of the labeled training data instead of one validation split "
                    "(default: none)")
    cg.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel jobs for the baselines (default: 1)")
    cg.add_argument("--subsample", default=None, metavar="N",
                    help="train each model on at most N images (stratified); per model: 20000,knn=5000 "
                    "(default: all)")
    cg.add_argument("--time-limit", dest="time_limit_each", default=None, metavar="S",
                    help="seconds per model and fold; a baseline over it is reported as timeout, a neural "
                    "model stops and keeps its best epoch; per model: 600,forest=120 (default: none)")
    cg.add_argument("--out", default=None, metavar="DIR",
                    help="where the leaderboard goes (default: RUNS_DIR/<timestamp>-compare-<source>)")
    c.set_defaults(func=cmd_compare)

    ck = sub.add_parser("check", help="check a dataset before training: duplicates, leakage, class balance, "
                        "unreadable files",
                        description="Load a data source as training would (same splits for the same --seed) and "
                        "report exact duplicates within and across splits, near duplicates across splits, class "
                        "counts and imbalance, unreadable files, image sizes and modes, and for CSV tables ids "
                        "without a file and files not in the table. Exit code 2 with --strict when images are "
                        "shared across splits.")
    add_train_options(ck, report=False, only=DATA_KEYS)
    ck.add_argument("--json", action="store_true", help="print the report as JSON (default: text)")
    ck.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON report to FILE")
    ck.add_argument("--no-near", action="store_true",
                    help="skip the near-duplicate search (perceptual hashes; default: search)")
    ck.set_defaults(func=cmd_check)

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
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                    help="server log level")
    sv.set_defaults(func=cmd_serve)

    e = sub.add_parser("evaluate", help="evaluate a run: loss, accuracy, per-class report, confusion matrix",
                       formatter_class=fmt)
    e.add_argument("run", help="run directory")
    e.add_argument("source", nargs="?", default=None,
                   help="data to evaluate on (default: the run's own data, split as in training)")
    e.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="which split")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files, folders, globs or a CSV template",
                        formatter_class=fmt)
    pr.add_argument("run", help="run directory")
    pr.add_argument("inputs", nargs="+", help="image files, folders, glob patterns, or one CSV template")
    pr.add_argument("--out", "-o", default=None, help="write predictions to this CSV file")
    pr.add_argument("--top-k", type=int, default=None, help="add the K most likely classes per image")
    pr.add_argument("--image-column", default=None, help="CSV template: the image path/id column")
    pr.add_argument("--image-pattern", default=None,
                    help="CSV template: file name template for ids, e.g. 'images/test/{}.png'")
    pr.add_argument("--label-column", default=None, help="CSV template: the column to fill")
    pr.add_argument("--submission", action="store_true",
                    help="CSV template: write only the template's columns (a competition submission)")
    pr.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", help="Keras-style model summary of a preset or spec", formatter_class=fmt)
    s.add_argument("model", help="preset name or spec file (.yaml/.json)")
    s.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                   help="adapt a preset to this input shape: H W C")
    s.add_argument("--classes", type=int, default=None, help="adapt a preset to this many classes")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_summary)

    r = sub.add_parser("report", help="write the run's self-contained report.html", formatter_class=fmt)
    r.add_argument("run", help="run directory")
    r.add_argument("--out", default=None, help="output file (default: RUN/report.html)")
    r.add_argument("--split", default=None, choices=["train", "validation", "test"],
                   help="the split whose results it shows (default: test, or validation when the run has no "
                   "test split)")
    r.set_defaults(func=cmd_report)

    pl = sub.add_parser("plot", help="write one figure of a run as PNG or SVG", formatter_class=fmt)
    pl.add_argument("run", help="run directory")
    pl.add_argument("kind", choices=PLOTS, help="which figure")
    pl.add_argument("--format", default="png", choices=["png", "svg"], help="file format")
    pl.add_argument("--out", default=None, help="output file (default: RUN/KIND.FORMAT)")
    pl.add_argument("--image", default=None, help="image for feature-maps / gradcam (default: test images)")
    pl.add_argument("--dpi", type=int, default=100, help="resolution of PNG files")
    pl.add_argument("--split", default=None, choices=["train", "validation", "test"],
                    help="the split for confusion, misclassified, feature-maps and gradcam (default: test, or "
                    "validation when the run has no test split)")
    pl.set_defaults(func=cmd_plot)

    ex = sub.add_parser("explain", help="prediction, feature maps and Grad-CAM for one image", formatter_class=fmt)
    ex.add_argument("run", help="run directory")
    ex.add_argument("image", help="an image file")
    ex.add_argument("--out-dir", default=None, help="where the PNG files go (default: RUN/explain/IMAGE_NAME)")
    ex.set_defaults(func=cmd_explain)

    m = sub.add_parser("models", help="list model presets", formatter_class=fmt)
    m.set_defaults(func=cmd_models)

    ds = sub.add_parser("datasets", help="list data sources and where they are", formatter_class=fmt)
    ds.add_argument("--json", action="store_true", help="print JSON")
    ds.set_defaults(func=cmd_datasets)

    dl = sub.add_parser("download", help="download fashion-mnist or mnist into the cache", formatter_class=fmt)
    dl.add_argument("name", help="fashion-mnist or mnist")
    dl.add_argument("--dir", default=None, help="target folder (default: the user cache)")
    dl.set_defaults(func=cmd_download)

    x = sub.add_parser("export-images", help="write a dataset as PNG files plus CSV labels", formatter_class=fmt)
    x.add_argument("source", help="a data source")
    x.add_argument("out", help="output folder")
    x.add_argument("--data-dir", default=None, help="where to look for IDX files first")
    x.add_argument("--labels", default="en", choices=["en", "ko"], help="class-name language")
    x.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    x.set_defaults(func=cmd_export)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """cnnlab's warnings as one line on stderr; other libraries' warnings as Python prints them."""
    from .errors import CnnlabWarning

    stream = file or sys.stderr
    if issubclass(category, CnnlabWarning):
        stream.write(f"warning: {message}\n")
    else:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


def _os_error_line(e: OSError) -> str:
    """A file-system failure (disk full, read-only folder, permission) as the one-line error."""
    import errno

    where = e.filename if e.filename is not None else "the file system"
    fixes = {errno.ENOSPC: "free some disk space, or write elsewhere (--runs-dir / --out)",
             errno.EACCES: "check the folder's permissions, or write elsewhere (--runs-dir / --out)",
             errno.EROFS: "the file system is read-only: write elsewhere (--runs-dir / --out)",
             errno.EDQUOT: "your disk quota is used up: free some space"}
    fix = fixes.get(e.errno, "check the path, the disk and the permissions")
    return f"{e.strerror or e} ({where}): {fix}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    previous_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except CnnlabError as e:
        if args.debug:
            raise
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (cnnlab ... | head): stop quietly, as command-line tools do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except OSError as e:  # disk full, read-only or missing folder, permissions: not a bug
        if args.debug:
            raise
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory: use a smaller --batch-size, --image-size or model", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so in one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error {type(e).__name__}: {e} (rerun with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous_show


if __name__ == "__main__":
    sys.exit(main())
