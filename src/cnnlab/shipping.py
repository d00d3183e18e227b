"""Registries of what a run ships as and predicts with: export formats (``cnnlab export --format``)
and prediction engines (``--engine`` of predict and serve). Each registers like a layer kind: a
name, a line of help, and the function that does the work, named as ``module:function`` and
imported only when used, so that building the command line stays free of torch and ONNX.

Adding a format is one file that calls ``register_format`` (docs/architecture.md shows one;
tests/test_export.py adds one end to end):

    register_format(ExportFormat("npz", "weights as a NumPy archive", "mypackage.npzexport:export"))

``export(run, out, options) -> list[str]`` writes the file (``out``, or a file in the run directory
when it is None) and returns the lines to print;
an engine's ``use(run) -> Run`` returns the run predicting through it (``run.with_engine``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


def _load(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    help: str
    export: str  # "module:function": (run, out: str | None, options: dict) -> lines to print

    def run(self, run, out: str | None, options: dict) -> list[str]:
        return _load(self.export)(run, out, options)


@dataclass(frozen=True)
class Engine:
    name: str
    help: str
    use: str | None  # "module:function": run -> the run predicting with this engine; None: the torch model
    check: str | None = None  # "module:function": () -> None, raising a one-line error when it cannot run here

    def apply(self, run):
        return run if self.use is None else _load(self.use)(run)

    def require(self) -> None:
        if self.check is not None:
            _load(self.check)()


FORMATS: dict[str, ExportFormat] = {}
ENGINES: dict[str, Engine] = {}


def register_format(f: ExportFormat) -> ExportFormat:
    FORMATS[f.name] = f
    return f


def register_engine(e: Engine) -> Engine:
    ENGINES[e.name] = e
    return e


register_format(ExportFormat("onnx", "ONNX: uint8 images (N, H, W, C) at the run's size in, class probabilities out "
                             "(--opset)", "cnnlab.exportcli:onnx_command"))
register_format(ExportFormat("keras", "a Keras 3 .keras file: raw pixel values in, its first layer a Rescaling with "
                             "the run's scaling", "cnnlab.exportcli:keras_command"))
register_format(ExportFormat("triton", "a Triton Inference Server model repository (--out DIR): NAME/config.pbtxt, "
                             "labels.txt and 1/model.onnx, with dynamic batching", "cnnlab.triton:triton_command"))
register_format(ExportFormat("web", "a static web page (--out DIR) that runs the model in the browser with ONNX "
                             "Runtime Web: upload, drawing, webcam (--quantize int8, --check-browser)",
                             "cnnlab.webexport:web_command"))
register_engine(Engine("torch", "the run's own PyTorch model", None))
register_engine(Engine("onnx", "ONNX Runtime on the run's model.onnx (exported when missing; pip install "
                       "'cnnlab[onnx]')", "cnnlab.exporting:use_onnx", "cnnlab.exporting:require_onnx"))
