"""What ``cnnlab export`` prints for the ONNX and Keras formats, and ``--check-only``: the glue
between the command and exporting.py / quantizing.py (registered in shipping.py)."""

from __future__ import annotations

from pathlib import Path

from .errors import CnnlabError, RunError
from .exporting import check_keras, check_onnx, export_keras, export_onnx, keras_snippet, snippet
from .parity import Parity, parity_images, record
from .runs import Run


def checked_lines(result: dict) -> list[str]:
    """What every export prints about its check: the parity line, its images and runtime, and the
    files written beside the model."""
    from .modelcard import CARD, METADATA
    from .parity import CHECK_FILE

    p: Parity = result["parity"]
    speeds = ", ".join(f"{k} {v:,.0f}" for k, v in p.images_per_s.items())
    score = "" if p.ood_score_max_rel_diff is None else f", ood score {p.ood_score_max_rel_diff:.1e} relative"
    return [f"{p.line()}{score} ({p.split} split, {p.runtime}; images/s: {speeds})",
            f"wrote {CHECK_FILE}, {CARD} and {METADATA} beside it"]


def onnx_command(run: Run, out: str | None, options: dict) -> list[str]:
    """``cnnlab export --format onnx [--quantize int8]``: the file written and checked, and how to
    use it."""
    extra = []
    if options.get("quantize", "none") == "int8":
        from .quantizing import export_int8, int8_lines

        result = export_int8(run, out, options.get("opset", 17))
        extra = int8_lines(result)
    else:
        result = export_onnx(run, out, options.get("opset", 17))
    return [f"wrote {result['path']} (opset {result['opset']})", *checked_lines(result), *extra,
            "use it with onnxruntime:", snippet(run, result["path"])]


def keras_command(run: Run, out: str | None, options: dict) -> list[str]:
    """``cnnlab export --format keras``: the file written and checked, and how to use it."""
    if options.get("quantize", "none") != "none":
        from .errors import ConfigError

        raise ConfigError(f"--quantize {options['quantize']} is for ONNX exports", "--quantize",
                          "use --format onnx --quantize int8, or leave --quantize out")
    result = export_keras(run, out)
    lines = [f"wrote {result['path']}", *checked_lines(result)]
    if result["flip_tta_left_out"]:
        lines.append("note: the run averages flipped images (--tta flip); the .keras model predicts without that")
    return lines + ["use it with Keras 3:", keras_snippet(run, result["path"])]


def check_file(run: Run, path: str | Path) -> list[str]:
    """``cnnlab export --check-only FILE RUN``: an exported file checked against the run again (on
    the same images an export is), its record written to export-check.json beside it; a file that
    disagrees is an error (the file stays: it is the user's)."""
    from . import modelcard

    path = Path(path)
    if not path.is_file():
        raise RunError("the file to check is not there", str(path), "give an exported .onnx or .keras file")
    images, split, _ = parity_images(run)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        p = check_onnx(path, run, images, split)
    elif suffix == ".keras":
        p = check_keras(path, run, images, split)
    else:
        raise CnnlabError(f"cannot check a {suffix or 'suffix-less'} file", str(path),
                          "give an exported .onnx or .keras file (a web export's model.onnx is one)")
    record(p, path.parent)
    if p.refused:
        raise CnnlabError(f"the file disagrees with the run: {p.refused}; {p.line()}", str(path),
                          "export it again: cnnlab export RUN --out FILE")
    modelcard.write(run, path.parent)
    return checked_lines({"parity": p})
