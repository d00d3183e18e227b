"""int8 exports: ``cnnlab export RUN --quantize int8``.

ONNX Runtime's static quantization (onnxruntime.quantization.quantize_static, QDQ format): the
weights of Conv, Gemm and MatMul become int8 per output channel, and their inputs uint8 with scales
calibrated (min-max) on up to 1,000 of the run's training images. The first and the last layer
stay float, as the graph around the layers does (the scaling of raw uint8 images, flips, the
temperature, softmax and the ood score). On Fashion-MNIST's fashion-cnn: quantizing the 1,010-weight
output layer too took the agreement with the run from 99.62% to 98.97%, for 0.3% of the file's
size; quantizing the first Conv (one input channel: 288 weights) made the whole model slower (int8
pays on wide layers, and a 3x3 kernel over one channel is not one). The
file is checked like every export (parity.py), with the int8 rule: the class must agree on at
least 99% of the test images. The record adds the file sizes, ONNX Runtime's images/s for the
float32 and int8 files side by side, and the test accuracy of both.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from . import exporting as ex
from .errors import DataError
from .parity import certify, parity_images, timed
from .runs import Run

CALIBRATION_IMAGES = 1000
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]


def calibration_images(run: Run, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to ``n`` of the run's training images, drawn without replacement (seed 0)."""
    from .api import run_dataset
    from .errors import CnnlabError

    try:
        train = run_dataset(run)["train"]
    except (CnnlabError, OSError, KeyError):
        train = None
    if train is None or not len(train.x):
        raise DataError("int8 quantization calibrates on the run's training images, and they are not here",
                        str(run.path), "make the run's data available (cnnlab datasets), or export float32")
    pick = np.sort(np.random.default_rng(0).permutation(len(train.x))[:n])
    return np.asarray(train.x[pick])


def _reader(images: np.ndarray, batch: int = 50):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {"images": np.ascontiguousarray(b)}

    return Reader()


def quantize(run: Run, float_path: Path, out: str | Path, calib: np.ndarray) -> None:
    """``out``: the int8 model of the float ONNX file at ``float_path``, with cnnlab's metadata."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    onnx, _ = ex.require_onnx()
    pre = float_path.with_name("pre.onnx")
    quant_pre_process(str(float_path), str(pre))
    ends = ("/model/blocks.0.", f"/model/blocks.{len(run.spec.layers) - 1}.")  # torch.onnx's scope names
    kept = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(ends)]
    quantize_static(str(pre), str(out), _reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS,
                    nodes_to_exclude=kept)
    how = {"method": "onnxruntime static quantization (QDQ, min-max)", "weights": "int8 per channel",
           "activations": "uint8", "ops": QUANTIZED_OPS, "float_nodes": kept,
           "calibration_images": len(calib)}
    ex.stamp(onnx.load(str(out)), {**ex.metadata(run), "quantization": json.dumps(how)}, out)


def export_int8(run: Run, out: str | Path | None = None, opset: int = 17) -> dict:
    """Write ``out`` (default RUN/model.int8.onnx): the run's ONNX model quantized to int8, checked
    against the run on its test split (top-1 agreement >= 99%) before it is kept; its record says
    the file sizes, images/s and accuracy of float32 and int8."""
    ex.require_onnx()
    out = Path(out) if out else run.path / "model.int8.onnx"
    ex.not_a_folder(out, "model.int8.onnx")
    images, split, labels = parity_images(run)
    calib = calibration_images(run)
    binary = run.spec.head == "binary"
    found: dict = {}

    def write_checked(tmp: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            float_path = Path(d) / "float.onnx"
            ex.write_graph(run, float_path, opset)
            quantize(run, float_path, tmp, calib)
            fsess = ex.session(float_path)
            float_probs, float_speed = timed(lambda x: ex.onnx_proba(fsess, x, binary), images)
            float_bytes = float_path.stat().st_size
        p = ex.check_onnx(tmp, run, images, split, out.name, precision="int8")
        p.images_per_s["onnxruntime-cpu float32"] = round(float_speed, 1)
        p.file_bytes = {"float32": float_bytes, "int8": Path(tmp).stat().st_size}
        if labels is not None and len(labels):
            int8_probs = ex.onnx_proba(ex.session(tmp), images, binary)
            p.accuracy = {"float32": float((float_probs.argmax(1) == labels).mean()),
                          "int8": float((int8_probs.argmax(1) == labels).mean())}
        found["parity"] = p
        certify(p, out)

    from . import atomic

    atomic.write_with(out, write_checked)  # kept only once it has been checked
    return {"path": out, "opset": opset, **ex.finish(run, found["parity"], out)}


def int8_lines(result: dict) -> list[str]:
    """What ``--quantize int8`` adds to the export's report: size, speed and accuracy against float32."""
    p = result["parity"]
    sizes = p.file_bytes or {}
    lines = []
    if sizes:
        lines.append(f"size: {sizes['int8'] / 1e6:.2f} MB int8, {sizes['float32'] / 1e6:.2f} MB float32 "
                     f"({sizes['float32'] / max(sizes['int8'], 1):.2f}x smaller)")
    fast, slow = p.images_per_s.get("onnxruntime-cpu"), p.images_per_s.get("onnxruntime-cpu float32")
    if fast and slow:
        lines.append(f"onnxruntime images/s: {fast:,.0f} int8, {slow:,.0f} float32 ({fast / slow:.2f}x; one pass "
                     "each, side by side: benchmarks/int8.py takes medians)")
    if p.accuracy:
        a = p.accuracy
        lines.append(f"{p.split} accuracy: {a['int8']:.4f} int8, {a['float32']:.4f} float32 "
                     f"({(a['int8'] - a['float32']) * 100:+.2f} points)")
    return lines
