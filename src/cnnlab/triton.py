"""``cnnlab export RUN --format triton [--out DIR]``: a Triton Inference Server model repository.

    DIR/NAME/config.pbtxt      the model configuration (backend, inputs, outputs, dynamic batching)
    DIR/NAME/labels.txt        the class names, one per line (Triton's classification extension)
    DIR/NAME/1/model.onnx      the run's ONNX export, checked like every export (parity.py)

NAME is the run's model name. The repository folder is built beside its final place and moved there
whole, so a failed export leaves nothing; an existing DIR/NAME is never overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import CnnlabError
from .runs import Run

MAX_BATCH = 256

CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
  {{
    name: "images"
    data_type: TYPE_UINT8
    dims: [ {h}, {w}, {c} ]
  }}
]
output [
  {{
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ {k} ]
    label_filename: "labels.txt"
  }},
  {{
    name: "ood_score"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 100
}}
parameters {{
  key: "cnnlab_ood_threshold"
  value: {{ string_value: "{threshold}" }}
}}
"""


def model_name(run: Run) -> str:
    """A Triton model name (a folder name) from the run's model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run.spec.name).strip("-.") or "model"


def config_text(run: Run, name: str) -> str:
    h, w = run.image_size
    k = 1 if run.spec.head == "binary" else len(run.class_names)
    threshold = run.ood_threshold(0.95) if run.ood else ""
    return CONFIG.format(name=name, max_batch=MAX_BATCH, h=h, w=w, c=3 if run.color_mode == "rgb" else 1, k=k,
                         threshold=threshold)


def export_triton(run: Run, out: str | Path | None = None, opset: int = 17) -> dict:
    """DIR/NAME/{config.pbtxt, labels.txt, 1/model.onnx}; DIR defaults to RUN/model_repository."""
    from .exporting import export_onnx

    repo = Path(out) if out else run.path / "model_repository"
    if repo.exists() and not repo.is_dir():
        raise CnnlabError("the output is a file, and a Triton model repository is a folder", str(repo),
                          "give a folder, e.g. --out model_repository")
    name = model_name(run)
    final = repo / name
    if final.exists():
        raise CnnlabError(f"the repository already holds a model named {name}", str(final),
                          "delete that folder, or give another repository with --out")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        (tmp / "1").mkdir()
        result = export_onnx(run, tmp / "1" / "model.onnx", opset)
        labels = run.class_names if run.spec.head != "binary" else run.class_names[1:]
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / "config.pbtxt").write_text(config_text(run, name), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, "path": final / "1" / "model.onnx", "repository": repo, "name": name}


def triton_command(run: Run, out: str | None, options: dict) -> list[str]:
    """``cnnlab export --format triton``: the repository written, and how to serve it."""
    from .exportcli import checked_lines

    if options.get("quantize", "none") != "none":
        from .errors import ConfigError

        raise ConfigError("--quantize is for --format onnx", "--quantize", "leave it out for a Triton repository")
    r = export_triton(run, out, options.get("opset", 17))
    repo = r["repository"].resolve()
    return [f"wrote the Triton model repository {r['repository']} (model {r['name']}: config.pbtxt, labels.txt, "
            "1/model.onnx)", *checked_lines(r), "serve it with Triton's container (docs/deploy.md):",
            f"docker run --rm -p8000:8000 -p8001:8001 -v {repo}:/models nvcr.io/nvidia/tritonserver:24.08-py3 "
            "tritonserver --model-repository=/models"]
