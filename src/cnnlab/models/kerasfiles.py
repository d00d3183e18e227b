"""Keras model files in and out, without Keras: ``.keras`` (Keras 3: a zip of config.json and
model.weights.h5) and legacy HDF5 (``model.save("x.h5")``, and the weights-only files Keras
Applications downloads).

- ``read_keras(path)``: the model's config and each layer's weights (numpy, Keras' layouts).
- ``spec_from_keras(config)``: that config as a cnnlab spec (Sequential -> a chain, Functional
  -> a graph); a layer cnnlab does not know, or an argument it cannot honour, is one line.
- ``torch_state(spec, weights)`` / ``keras_weights(spec, state)``: weights converted between the
  two layouts by each layer kind's ``keras_weights`` (conv kernels (kh, kw, in, out) <-> (out, in,
  kh, kw), dense (in, out) <-> (out, in), depthwise (kh, kw, c, m) <-> (c*m, 1, kh, kw)). Flatten
  works in (H, W, C) order in cnnlab too, so a Dense after it needs no reordering.
- ``write_keras(path, spec, state, preprocessing)``: a Keras 3 ``.keras`` file of a cnnlab model,
  with the run's pixel scaling as a leading Rescaling layer, so it takes raw pixel values.

Nothing here unpickles anything: the configs are JSON, the weights HDF5 datasets.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CnnlabError, MissingModelFileError, SpecError
from .layers import LAYERS, lookup
from .spec import INPUT_NAME, Spec, parse_spec

# Keras arguments cnnlab ignores on import: how weights start, regularizers and constraints
# (training-time only), dtypes and the like. Any other argument cnnlab does not take, with a value
# that is not Keras' default, is an error.
IGNORED = {"name", "dtype", "trainable", "kernel_initializer", "bias_initializer", "depthwise_initializer",
           "pointwise_initializer", "beta_initializer", "gamma_initializer", "moving_mean_initializer",
           "moving_variance_initializer", "kernel_regularizer", "bias_regularizer", "activity_regularizer",
           "depthwise_regularizer", "pointwise_regularizer", "beta_regularizer", "gamma_regularizer",
           "kernel_constraint", "bias_constraint", "depthwise_constraint", "pointwise_constraint",
           "beta_constraint", "gamma_constraint", "seed", "noise_shape", "synchronized", "renorm",
           "renorm_clipping", "renorm_momentum", "fused", "virtual_batch_size", "adjustment", "batch_input_shape",
           "input_shape", "batch_size", "lora_alpha", "quantization_config", "input_dim"}
# Keras arguments that must keep these values for cnnlab to compute the same thing.
REQUIRED_VALUES = {"data_format": ("channels_last", None), "axis": (-1, 3, [3], [-1]), "keepdims": (False, None),
                   "center": (True,), "scale": (True,), "lora_rank": (None,), "rms_scaling": (False,)}
SCALING = "cnnlab_scaling"  # the leading Rescaling layer of an exported run
# An exported run's second output: the energy score of the raw logits (engine/ood.py), from a Dense
# layer beside the last one holding its uncalibrated weights. logsumexp(z) is z - log_softmax(z) in
# any column; a Dense(1) with kernel 1/K takes their mean. A binary head's energy is softplus(z).
OOD_OUTPUT = "ood_score"
OOD_LAYERS = (f"{OOD_OUTPUT}_logits", f"{OOD_OUTPUT}_log_softmax", f"{OOD_OUTPUT}_terms", OOD_OUTPUT)
# Keras activations under another name here (relu6 has no cnnlab activation: use a ReLU layer)
ACTIVATION_NAMES = {"swish": "silu", "linear": None}


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise SpecError("reading and writing Keras files needs h5py", "h5py", "pip install h5py") from None
    return h5py


@dataclass
class KerasFile:
    config: dict  # {"class_name": "Sequential" | "Functional" | ..., "config": {...}}
    weights: dict  # layer name -> list of arrays, in Keras' order
    keras_version: str
    path: str
    cnnlab: dict | None = None  # what cnnlab export wrote beside the model: classes, scaling


# ----------------------------------------------------------------------------- reading

def read_keras(path: str | Path) -> KerasFile:
    """A ``.keras`` zip or a legacy ``.h5`` model file: its config and weights."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise MissingModelFileError("Keras model file not found", where,
                                    "give the .keras or .h5 file ModelCheckpoint saved")
    try:
        if zipfile.is_zipfile(p):
            return _read_zip(p)
        h5py = _h5py()
        if h5py.is_hdf5(p):
            with h5py.File(p, "r") as f:
                return _read_legacy(f, where)
    except CnnlabError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise SpecError(f"cannot read the Keras file: {type(e).__name__}: {str(e).splitlines()[0]}", where,
                        "save the model again with model.save('model.keras')") from None
    raise SpecError("not a Keras model file (neither a .keras zip nor HDF5)", where,
                    "give the .keras or .h5 file that model.save or ModelCheckpoint wrote")


def _read_zip(p: Path) -> KerasFile:
    h5py = _h5py()
    with zipfile.ZipFile(p) as z:
        names = set(z.namelist())
        if "config.json" not in names:
            raise SpecError("the .keras file has no config.json", str(p),
                            "save the model again with model.save('model.keras')")
        config = _json(z.read("config.json"), str(p), "config.json")
        meta = _json(z.read("metadata.json"), str(p), "metadata.json") if "metadata.json" in names else {}
        meta = meta if isinstance(meta, dict) else {}
        blob = z.read("model.weights.h5") if "model.weights.h5" in names else None
    check_config(config, str(p))
    if blob is None:
        raise SpecError("the .keras file has no weights (no model.weights.h5 in it)", str(p),
                        "save the trained model with model.save('model.keras')")
    with h5py.File(io.BytesIO(blob), "r") as f:
        weights = _zip_weights(f.get("layers"), config, str(p))
    ours = meta.get("cnnlab") if isinstance(meta.get("cnnlab"), dict) else None
    return KerasFile(config, weights, str(meta.get("keras_version", "")), str(p), ours)


MODELS = ("Functional", "Sequential", "Model")


def _is_op(layer: dict) -> bool:
    """An operation written as an expression (ConvNeXt's ``inputs + x``: keras.src.ops.numpy.Add):
    in the config, but not a layer, so Keras keeps no weights group for it."""
    return str(layer.get("module") or "").startswith("keras.src.ops")


def _weight_order(config: dict) -> list[dict]:
    """A model config's layers in the order Keras 3 files their weights."""
    layers = (config.get("config") or {}).get("layers") or []
    if config.get("class_name") == "Sequential":
        layers = [layer for layer in layers if layer.get("class_name") != "InputLayer"]
    else:  # the order Keras rebuilds the graph in decides where each layer's weights are
        outs = (config.get("config") or {}).get("output_layers")
        names = [outs[0]] if isinstance(outs, list) and outs and isinstance(outs[0], str) else \
            [o[0] for o in outs if isinstance(o, list) and o] if isinstance(outs, list) else []
        layers = keras_layer_order(layers, names) if names and all(isinstance(n, str) for n in names) else layers
    return [layer for layer in layers if not _is_op(layer)]


def _zip_weights(group, config: dict, where: str) -> dict:
    """Layer name -> arrays of a Keras 3 weights file. Keras files each layer's weights under its
    class name made unique in layer order (conv2d, conv2d_1, ...), not under its own name; a
    nested model's (ConvNeXt's stem, a conv_base inside a model) under its own ``layers`` group."""
    layers = _weight_order(config)
    out: dict = {}
    for layer, key in zip(layers, storage_keys([layer.get("class_name", "") for layer in layers])):
        g = group.get(key) if group is not None else None
        cls = layer.get("class_name")
        if g is not None and cls in MODELS:
            check_config(layer, where)
            out.update(_zip_weights(g.get("layers"), layer, where))
        elif g is not None and set(g.keys()) - {"vars"}:  # an LSTM's cell, say
            raise SpecError(f"layer '{_layer_name(layer)}' is a {cls}, which cnnlab does not compute", where,
                            f"cnnlab imports image models of the layers {', '.join(LAYERS)}")
        else:
            vs = g.get("vars") if g is not None else None
            out[_layer_name(layer)] = [np.asarray(vs[k]) for k in sorted(vs.keys(), key=int)] if vs is not None else []
    return out


def _json(data: bytes, where: str, member: str):
    try:
        return json.loads(data)
    except RecursionError:
        raise SpecError(f"{member} is nested too deeply to be a model config", where,
                        "save the model again with model.save('model.keras')") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"{member} is not JSON: {str(e).splitlines()[0][:120]}", where,
                        "save the model again with model.save('model.keras')") from None


def check_config(config, where: str) -> None:
    """A model config's structure, before anything reads it: an object with a ``config`` object whose
    ``layers`` is a list of layer objects (a damaged file is one line, never an AttributeError)."""
    fix = "the file's config.json is damaged: save the model again with model.save('model.keras')"
    if not isinstance(config, dict):
        raise SpecError(f"the model config is a JSON {type(config).__name__}, not an object", where, fix)
    inner = config.get("config")
    if not isinstance(inner, dict):
        raise SpecError("the model config has no 'config' object", where, fix)
    layers = inner.get("layers")
    if not isinstance(layers, list):
        raise SpecError(f"the model config's layers are a {type(layers).__name__}, not a list", where, fix)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config", {}), dict):
            raise SpecError(f"layer {i} of the model config is a {type(layer).__name__}, not a layer object"
                            if not isinstance(layer, dict) else f"layer {i}'s config is not an object", where, fix)


def check_weights(weights: dict, where: str) -> None:
    """Weights that a model could use: finite numbers (NaN or infinite values would predict NaN)."""
    for name, arrays in weights.items():
        for k, a in enumerate(arrays):
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise SpecError(f"layer '{name}' weight {k} holds NaN or infinite values", where,
                                "the model diverged before it was saved: save a checkpoint from before that")


def _layer_name(layer: dict) -> str:
    return str((layer.get("config") or {}).get("name") or layer.get("name"))


def _inbound_names(layer: dict) -> list[str]:
    """The layers a config layer takes, from its first inbound node (Keras 3's keras_history)."""
    nodes = layer.get("inbound_nodes") or []
    if not nodes or not isinstance(nodes[0], dict):
        return [n[0] for n in (nodes[0] if nodes and isinstance(nodes[0], list) else [])
                if isinstance(n, list) and n and isinstance(n[0], str)]  # Keras 2: [[name, 0, 0, {}], ...]
    names = []

    def walk(v):
        if isinstance(v, dict):
            hist = (v.get("config") or {}).get("keras_history") if v.get("class_name") == "__keras_tensor__" else None
            if isinstance(hist, list) and hist and isinstance(hist[0], str):
                names.append(hist[0])
            else:
                for x in v.values():
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(nodes[0].get("args", []))
    return names


def keras_layer_order(layers: list[dict], outputs: str | list[str]) -> list[dict]:
    """The layers of a functional config in the order Keras 3 gives them when it builds the model
    (keras.src.ops.function.map_graph): by depth from the outputs, deepest first, ties in the order
    a depth-first walk from each output in turn meets them. Keras files each layer's weights by its
    place in this order, not by name, so a file written in any other order puts weights into the
    wrong layers when Keras loads it (two parallel branches swapped their convolutions)."""
    by_name: dict = {layer.get("name"): layer for layer in layers}
    parents = {name: [p for p in _inbound_names(layer) if p in by_name] for name, layer in by_name.items()}
    outputs = [outputs] if isinstance(outputs, str) else outputs
    if any(o not in by_name for o in outputs):
        return list(layers)
    preorder: dict[str, int] = {}
    postorder: list[str] = []
    finished: set[str] = set()
    for output in outputs:
        if output not in finished:
            preorder.setdefault(output, len(preorder))
            _walk(output, parents, preorder, postorder, finished)
    depth: dict[str, int] = {}
    for name in reversed(postorder):
        d = depth.setdefault(name, 0)
        for p in parents[name]:
            depth[p] = max(d + 1, depth.get(p, 0))
    unreached = len(layers)
    return sorted(layers, key=lambda layer: (-depth.get(str(layer.get("name")), -1),
                                             preorder.get(str(layer.get("name")), unreached)))


def _walk(output: str, parents: dict, preorder: dict, postorder: list, finished: set) -> None:
    """Keras' _build_map_helper from one output, without recursion: the order layers are first met
    (``preorder``) and finished (``postorder``)."""
    stack = [(output, iter(parents[output]))]
    while stack:
        name, rest = stack[-1]
        nxt = next(rest, None)
        if nxt is None:
            stack.pop()
            finished.add(name)
            postorder.append(name)
        elif nxt not in finished and nxt not in {n for n, _ in stack}:
            preorder.setdefault(nxt, len(preorder))
            stack.append((nxt, iter(parents[nxt])))


def storage_keys(class_names: list[str]) -> list[str]:
    """Where a .keras file keeps each layer's weights: ``layers/<key>/vars``, the key being the
    class name in snake case, numbered from the second of a kind (Keras' saving_lib)."""
    used: dict[str, int] = {}
    keys = []
    for cls in class_names:
        base = re.sub(r"\W+", "", cls)
        base = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", base)
        base = re.sub("([a-z])([A-Z])", r"\1_\2", base).lower()
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def legacy_weights(group) -> dict:
    """Layer name -> arrays of a legacy HDF5 weights group (``layer_names`` and each layer's
    ``weight_names`` attributes, as Keras 2 and Keras Applications' files have them)."""
    out = {}
    for lname in group.attrs.get("layer_names", []):
        lname = _text(lname)
        g = group[lname]
        names = [_text(w) for w in g.attrs.get("weight_names", [])]
        out[lname] = [np.asarray(g[w]) for w in names]
        for sub, arrays in _nested(lname, names, out[lname]).items():
            out.setdefault(sub, arrays)
    return out


def _nested(group: str, names: list[str], arrays: list) -> dict:
    """A nested model's weights (ConvNeXt's stem, a conv_base inside a model) by the layers inside
    it: weight names 'stem/stem_conv/kernel' or 'stem_conv/kernel:0' name the inner layer first."""
    inner: dict[str, list] = {}
    for n, a in zip(names, arrays):
        parts = n.split("/")
        if parts[0] == group:
            parts = parts[1:]
        if len(parts) >= 2 and parts[0] != group:
            inner.setdefault(parts[-2], []).append(a)
    return inner


def _read_legacy(f, where: str) -> KerasFile:
    if "model_config" not in f.attrs:
        raise SpecError("the HDF5 file holds weights but no model", where,
                        "save the whole model (model.save('model.h5') or .keras), not save_weights; "
                        "for a backbone's weights use --backbone NAME --weights FILE.h5")
    config = _json(_text(f.attrs["model_config"]).encode(), where, "model_config")
    check_config(config, where)
    weights = legacy_weights(f["model_weights"] if "model_weights" in f else f)
    return KerasFile(config, weights, _text(f.attrs.get("keras_version", "")), where)


# ----------------------------------------------------------------------------- config -> spec

def _activation(v):
    """A Keras activation as cnnlab names it (``parse_spec`` checks it)."""
    if isinstance(v, dict):  # {"class_name": "function", "config": "relu"} or a registered object
        v = v.get("config") if isinstance(v.get("config"), str) else v.get("class_name")
    return ACTIVATION_NAMES.get(v, v) if isinstance(v, str) else v


def _layer_args(kind, cfg: dict, where: str) -> dict:
    args = {}
    for k, v in cfg.items():
        if k in kind.args:
            args[k] = _activation(v) if k == "activation" else v
        elif k in REQUIRED_VALUES:
            if v not in REQUIRED_VALUES[k]:
                raise SpecError(f"{k}={v!r} is not supported", where,
                                f"cnnlab computes {kind.name} with {k}={REQUIRED_VALUES[k][0]!r} only")
        elif k not in IGNORED:
            raise SpecError(f"argument '{k}' of {kind.name} is not supported", where,
                            f"cnnlab's {kind.name} takes {', '.join(kind.args) or 'no arguments'}")
    if "kernel_initializer" in kind.args:
        args.pop("kernel_initializer", None)  # the weights come from the file
    if cfg.get("trainable") is False and "trainable" in kind.args:
        args["trainable"] = False
    return args


def _inbound(layer: dict, where: str) -> list[str]:
    """The names of the layers a functional layer takes (Keras 3's and Keras 2's formats)."""
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise SpecError(f"layer '{layer.get('name')}' is called {len(nodes)} times (a shared layer)", where,
                        "cnnlab imports models where each layer is used once")
    if not nodes:
        return []
    node = nodes[0]
    names: list[str] = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("class_name") == "__keras_tensor__":
                names.append(v["config"]["keras_history"][0])
            else:
                for x in v.values():
                    walk(x)
        elif isinstance(v, (list, tuple)):
            if len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int):  # Keras 2: [name, node, tensor, {}]
                names.append(v[0])
            else:
                for x in v:
                    walk(x)

    walk(node["args"] if isinstance(node, dict) else node)
    return names


def _input_shape(layer_cfg: dict) -> list | None:
    shape = layer_cfg.get("batch_shape") or layer_cfg.get("batch_input_shape")
    return list(shape[1:]) if shape else None


def spec_from_keras(model: dict, where: str, name: str | None = None, fold_scaling: bool = False) -> dict:
    """A Keras model config as a cnnlab spec mapping (checked by ``parse_spec``). ``fold_scaling``
    leaves out the Rescaling layer cnnlab export put first (its scaling is the run's preprocessing)."""
    kind_of_model = model.get("class_name")
    cfg = model.get("config") or {}
    if kind_of_model not in ("Sequential", "Functional", "Model"):
        raise SpecError(f"the file holds a {kind_of_model}, not a Sequential or functional model", where,
                        "save a keras.Sequential or keras.Model built from layers")
    layers = cfg.get("layers") or []
    out: list[dict] = []
    functional = kind_of_model != "Sequential"
    if functional:
        ins, outs = cfg.get("input_layers"), cfg.get("output_layers")
        ins = [ins] if ins and isinstance(ins[0], str) else ins
        outs = [outs] if outs and isinstance(outs[0], str) else outs
        if outs and len(outs) == 2 and isinstance(outs[1], list) and outs[1][:1] == [OOD_OUTPUT]:
            outs = outs[:1]  # cnnlab's export: its energy branch is left out (cnnlab scores a model itself)
            layers = [la for la in layers if _layer_name(la) not in OOD_LAYERS]
        if len(ins or []) != 1 or len(outs or []) != 1:
            raise SpecError(f"the model has {len(ins or [])} inputs and {len(outs or [])} outputs", where,
                            "cnnlab imports models with one image input and one output")
    renamed: dict = {}
    input_shape, input_name = _flat_layers(layers, functional, where, renamed, fold_scaling, out, set())
    if input_shape is None:
        raise SpecError("the model does not say its input shape", where,
                        "build the model with keras.Input(shape) before saving it")
    if len(input_shape) == 2:
        input_shape = [*input_shape, 1] if not out or LAYERS[out[0]["type"]].needs_image else input_shape
    head = {"type": "Input", "shape": input_shape, "name": input_name}
    return {"name": name or cfg.get("name") or "keras-model", "layers": [head, *out]}


def _flat_layers(layers: list, functional: bool, where: str, renamed: dict, fold_scaling: bool, out: list,
                 seen: set, entry: list | None = None) -> tuple:
    """Appends a model config's layers to ``out`` as spec entries, a nested model's layers in its
    place (``entry``: what its input stands for; ``renamed``: a nested model's name -> its last
    layer); returns the input's (shape, name) at the top level."""
    input_shape, input_name, last = None, INPUT_NAME, None
    for layer in layers:
        cls, lcfg = layer.get("class_name"), layer.get("config") or {}
        lname = _layer_name(layer)
        loc = f"{where}, layer '{lname}' ({cls})"
        if cls == "InputLayer":
            if entry is None:
                input_shape, input_name = _input_shape(lcfg), lname or INPUT_NAME
            else:
                renamed[lname] = entry[0] if entry else INPUT_NAME
            continue
        if fold_scaling and cls == "Rescaling" and lname == SCALING:  # cnnlab's own: back into preprocessing
            renamed[lname] = input_name
            continue
        if entry is None and input_shape is None and _input_shape(lcfg):  # Keras 2 Sequential: the first layer
            input_shape = _input_shape(lcfg)
        ins = [renamed.get(n, n) for n in _inbound(layer, loc)] if functional else (
            [last] if last else [input_name] if entry is None else list(entry))
        if cls in MODELS:  # a nested model (ConvNeXt's stem, Chollet's conv_base): its layers, in place
            check_config(layer, loc)
            inner = lcfg.get("layers") or []
            shape = next((_input_shape(x.get("config") or {}) for x in inner if x.get("class_name") == "InputLayer"),
                         None)
            if entry is None and input_shape is None and shape:
                input_shape = shape
            _flat_layers(inner, cls != "Sequential", loc, renamed, False, out, seen, ins)
            renamed[lname] = out[-1]["name"]
            last = out[-1]["name"]
            continue
        kind = lookup(cls) if isinstance(cls, str) else None
        if kind is None or cls == "Input":
            raise SpecError(f"layer type {cls} is not supported", loc,
                            f"cnnlab knows {', '.join(LAYERS)}; replace the layer in Keras and save again")
        if lname in seen:
            raise SpecError(f"two layers are named '{lname}' (one inside a nested model)", loc,
                            "rename one in Keras and save again")
        seen.add(lname)
        entry_ = {"type": kind.name, "name": lname, **_layer_args(kind, lcfg, loc)}
        if functional or entry is not None:
            entry_["inputs"] = ins
        out.append(entry_)
        last = lname
    return input_shape, input_name


# ----------------------------------------------------------------------------- weights

def _to_torch(layout: str, a: np.ndarray) -> np.ndarray:
    if layout == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
        return a.transpose(3, 2, 0, 1)
    if layout == "depthwise":  # (kh, kw, c, m) -> (c * m, 1, kh, kw): output channel c * m + j, as torch groups
        kh, kw, c, m = a.shape
        return a.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]
    if layout == "dense":  # (in, out) -> (out, in)
        return a.T
    return a


def _to_keras(layout: str, t: np.ndarray, info) -> np.ndarray:
    if layout == "conv":
        return t.transpose(2, 3, 1, 0)
    if layout == "depthwise":
        c = info.input_shape[2]
        kh, kw = t.shape[2:]
        return t[:, 0].transpose(1, 2, 0).reshape(kh, kw, c, -1)
    if layout == "dense":
        return t.T
    return t


def _block_keys(state: dict, i: int) -> list[str]:
    """Layer i's tensors in the order Keras lists its weights (torch registers them that way)."""
    pre = f"blocks.{i}."
    return [k for k in state if k.startswith(pre) and not k.endswith("num_batches_tracked")]


def torch_state(spec: Spec, state: dict, weights: dict, where: str) -> dict:
    """``state`` (a model's state_dict) with every layer's Keras weights put in, converted."""
    return put_weights(spec, state, weights, where, strict=True)[0]


def put_weights(spec: Spec, state: dict, weights: dict, where: str, strict: bool = False,
                skip: tuple = ()) -> tuple[dict, list, list]:
    """Layer by layer (by name), the Keras ``weights`` converted into ``state``; returns the new
    state, the layers loaded and the layers with weights the file does not have (``strict``: an
    error). A layer whose weights do not fit is an error naming it; ``skip`` names layers left as
    they are (a new head)."""
    import torch

    state = dict(state)
    loaded, missing = [], []
    ours = {layer.name for layer in spec.layers}
    for i, info in enumerate(spec.layers):
        keys = _block_keys(state, i)
        if not keys or info.name in skip:
            continue
        name = info.name if info.name in weights else _auto_named(info.name, weights, ours)
        if name is None and not strict:
            missing.append(info.name)
            continue
        theirs = weights.get(name, [])
        if len(theirs) != len(keys):
            raise SpecError(f"layer '{info.name}' has {len(theirs)} weight arrays in the file but cnnlab's "
                            f"{info.type} needs {len(keys)}", where, "the file's weights do not fit this model")
        layout = LAYERS[info.type].keras_weights
        for n, (k, a) in enumerate(zip(keys, theirs)):
            kind = layout[n] if n < len(layout) else "vector"
            t = _to_torch(kind, np.asarray(a, np.float32))
            if tuple(t.shape) != tuple(state[k].shape):
                want = _to_keras(kind, np.zeros(tuple(state[k].shape), np.float32), info).shape
                raise SpecError(f"layer '{info.name}' weight {n} has shape {list(a.shape)} in the file, but this "
                                f"model's is {list(want)}", where,
                                "the file's weights do not fit this model (for a backbone: the same width)")
            state[k] = torch.from_numpy(np.ascontiguousarray(t)).to(state[k].dtype)
        loaded.append(info.name)
    return state, loaded, missing


def _auto_named(name: str, weights: dict, ours: set) -> str | None:
    """The file's layer for a layer Keras names itself (``layer_normalization`` becomes
    ``layer_normalization_3`` when the process built other models first): the one file layer of
    that name and a number that no layer of ours (the names in ``ours``) has."""
    base = re.sub(r"_\d+$", "", name)
    found = [k for k in weights if k not in ours and re.fullmatch(rf"{re.escape(base)}(_\d+)?", k)]
    return found[0] if len(found) == 1 else None


def bgr_to_rgb(spec: Spec, state: dict) -> None:
    """Weights trained on BGR pixels (Keras' caffe mode) made to take RGB: the first convolution's
    input channels reversed in ``state``, in place."""
    first = next(i for i, layer in enumerate(spec.layers) if layer.type == "Conv2D")
    key = next(k for k in _block_keys(state, first) if k.endswith("weight"))
    if state[key].shape[1] == 3:
        state[key] = state[key].flip(1)


def keras3_weights(f, layers: list[tuple[str, str]] | None, where: str) -> dict:
    """Layer name -> arrays of a Keras 3 weights file (``model.save_weights('x.weights.h5')``). Keras 3
    keeps a layer's weights by its position among layers of its class (``layers/conv2d_1/vars``), not
    by its name, so the names come from the model the file is for: ``layers`` lists (name, Keras
    class) in Keras' order, the Input layer first."""
    if layers is None:
        raise SpecError("this is a Keras 3 weights file (model.save_weights), which keeps layers by position, "
                        "not by name", where, "load it with --backbone NAME --weights FILE, or save the whole model "
                        "(model.save('model.keras')) and use cnnlab import-keras")
    group = f["layers"]
    stored = {}
    for key in group.keys():
        sub = group[key]
        if set(sub.keys()) - {"vars"}:
            raise SpecError(f"the Keras 3 weights file holds a nested model ('{key}'), not the backbone itself",
                            where, "save the backbone's own weights: keras.applications.NAME(include_top=False, "
                            "...).save_weights('backbone.weights.h5')")
        vs = sub.get("vars")
        stored[key] = [np.asarray(vs[k]) for k in sorted(vs.keys(), key=int)] if vs is not None else []
    keys = storage_keys([cls for _, cls in layers])
    unknown = sorted(set(stored) - set(keys))
    if unknown:
        raise SpecError(f"the Keras 3 weights file has layers this model does not ({', '.join(unknown[:3])})", where,
                        "give the weights of the same backbone and width, saved from the backbone itself "
                        "(include_top=False)")
    return {name: stored[key] for (name, _), key in zip(layers, keys) if key in stored}


def read_weights(path: str | Path, layers: list[tuple[str, str]] | None = None) -> dict:
    """Layer name -> arrays from any Keras file: a .keras model, a legacy .h5 model, a weights-only
    .h5 file such as Keras Applications downloads, or a Keras 3 ``.weights.h5`` file (``layers``: the
    model's (name, Keras class) in order, which that format needs; see keras3_weights)."""
    p = Path(path)
    if not p.is_file():
        raise MissingModelFileError("weights file not found", str(p), "give the .h5 file Keras Applications downloads")
    if zipfile.is_zipfile(p):
        return read_keras(p).weights
    h5py = _h5py()
    try:
        if not h5py.is_hdf5(p):
            raise SpecError("not an HDF5 or .keras file", str(p), "give the .h5 file Keras Applications downloads")
        with h5py.File(p, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs and "layers" in f:
                return keras3_weights(f, layers, str(p))
            return legacy_weights(group)
    except CnnlabError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise SpecError(f"cannot read the weights file: {type(e).__name__}: {str(e).splitlines()[0]}", str(p),
                        "download it again") from None


def _numpy(t) -> np.ndarray:
    """A tensor as NumPy: floats as float32, integers (Normalization's count) as they are."""
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).numpy()


def keras_weights(spec: Spec, state: dict) -> dict:
    """Layer name -> its weights as Keras stores them."""
    out = {}
    for i, info in enumerate(spec.layers):
        layout = LAYERS[info.type].keras_weights
        out[info.name] = [_to_keras(layout[n] if n < len(layout) else "vector", _numpy(state[k]), info)
                          for n, k in enumerate(_block_keys(state, i))]
    return out


# ----------------------------------------------------------------------------- writing

def _keras_layer_config(info) -> dict:
    cfg = {"name": info.name}
    for k, v in info.args.items():
        if k == "kernel_initializer":
            continue  # cnnlab's patch_whitening is not a Keras initializer; the weights are in the file
        cfg[k] = list(v) if isinstance(v, tuple) else v
    if "activation" in cfg and cfg["activation"] is None:
        cfg["activation"] = "linear"
    return cfg


def _node(names: list[str], shapes: dict) -> list:
    tensors = [{"class_name": "__keras_tensor__",
                "config": {"shape": [None, *shapes[n]], "dtype": "float32", "keras_history": [n, 0, 0]}}
               for n in names]
    return [{"args": [tensors if len(tensors) > 1 else tensors[0]], "kwargs": {}}]


def keras_config(spec: Spec, scaling: tuple[list, list] | None, name: str, ood: bool = False) -> dict:
    """A Keras 3 functional model config of the spec; ``scaling`` (scale, offset) becomes a
    leading Rescaling layer named ``cnnlab_scaling``; ``ood``: a second output, the energy score
    (OOD_LAYERS, beside a final Dense layer)."""
    shape = list(spec.input_shape)
    shapes = {spec.input_name: shape}
    layers: list[dict] = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                           "name": spec.input_name, "inbound_nodes": [],
                           "config": {"batch_shape": [None, *shape], "dtype": "float32", "name": spec.input_name}}]
    first = spec.input_name
    if scaling is not None:
        scale, offset = scaling
        layers.append({"module": "keras.layers", "class_name": "Rescaling", "registered_name": None,
                       "name": SCALING, "inbound_nodes": _node([first], shapes),
                       "config": {"name": SCALING, "scale": scale, "offset": offset}})
        shapes[SCALING] = shape
        first = SCALING
    for info in spec.layers:
        ins = [first if n == spec.input_name else n for n in info.inputs]
        kind = LAYERS[info.type]
        layers.append({"module": kind.keras_module, "class_name": info.type,
                       "registered_name": None if kind.keras_module == "keras.layers" else info.type,
                       "name": info.name, "inbound_nodes": _node(ins, shapes),
                       "build_config": {"input_shape": ([[None, *s] for s in info.input_shapes]
                                                        if LAYERS[info.type].merge else [None, *info.input_shape])},
                       "config": _keras_layer_config(info)})
        shapes[info.name] = list(info.output_shape)
    outputs = [spec.layers[-1].name]
    if ood:
        last = spec.layers[-1]
        layers += _ood_layers([first if n == spec.input_name else n for n in last.inputs], last.input_shape,
                              spec.output_units, spec.head == "binary", shapes)
        outputs.append(OOD_OUTPUT)
    layers = keras_layer_order(layers, outputs)  # Keras' own order: see keras_layer_order
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": name, "trainable": True, "layers": layers, "input_layers": [spec.input_name, 0, 0],
                       "output_layers": [[o, 0, 0] for o in outputs] if ood else [outputs[0], 0, 0]}}


def _ood_layers(ins: list[str], in_shape, k: int, binary: bool, shapes: dict) -> list[dict]:
    """The energy score's layers (OOD_LAYERS) on the last layer's input ``ins``."""
    def layer(cls: str, lname: str, inputs: list[str], config: dict, out_shape: list) -> dict:
        build = [[None, *shapes[n]] for n in inputs] if len(inputs) > 1 else [None, *shapes[inputs[0]]]
        shapes[lname] = out_shape
        return {"module": "keras.layers", "class_name": cls, "registered_name": None, "name": lname,
                "inbound_nodes": _node(inputs, shapes), "build_config": {"input_shape": build},
                "config": {"name": lname, **config}}

    logits, log_softmax, terms = OOD_LAYERS[:3]
    if binary:  # the energy of the logits [0, z]: softplus(z)
        return [layer("Dense", OOD_OUTPUT, ins, {"units": 1, "activation": "softplus", "use_bias": True}, [1])]
    return [layer("Dense", logits, ins, {"units": k, "activation": "linear", "use_bias": True}, [k]),
            layer("Activation", log_softmax, [logits], {"activation": "log_softmax"}, [k]),
            layer("Subtract", terms, [logits, log_softmax], {}, [k]),
            layer("Dense", OOD_OUTPUT, [terms], {"units": 1, "activation": "linear", "use_bias": False}, [1])]


def ood_weights(kernel: np.ndarray, bias: np.ndarray, binary: bool) -> dict:
    """The energy branch's weights, Keras layout, from the last Dense layer's uncalibrated torch
    weights (``kernel`` (K, D), ``bias`` (K,))."""
    dense = [np.ascontiguousarray(kernel.T, np.float32), np.asarray(bias, np.float32)]
    if binary:
        return {OOD_OUTPUT: dense}
    k = kernel.shape[0]
    return {OOD_LAYERS[0]: dense, OOD_OUTPUT: [np.full((k, 1), 1.0 / k, np.float32)]}


def write_keras(path: Path, spec: Spec, state: dict, scaling: tuple | None, name: str,
                cnnlab: dict | None = None, ood: dict | None = None) -> None:
    """A ``.keras`` file (written to ``path``, which the caller makes atomic); ``cnnlab`` goes into
    metadata.json (Keras reads only its own keys there); ``ood``: the energy branch's weights
    (``ood_weights``), a second output."""
    import datetime

    h5py = _h5py()
    weights = {**keras_weights(spec, state), **(ood or {})}
    blob = io.BytesIO()
    with h5py.File(blob, "w") as f:
        layers = f.create_group("layers")
        config = keras_config(spec, scaling, name, ood=bool(ood))
        order = config["config"]["layers"]
        for layer, key in zip(order, storage_keys([layer["class_name"] for layer in order])):
            vs = layers.create_group(key).create_group("vars")
            vs.attrs["name"] = layer["name"]
            for n, a in enumerate(weights.get(layer["name"], [])):
                # a scalar stays a scalar (Normalization's count; ascontiguousarray would make it [1])
                vs.create_dataset(str(n), data=np.array(a, np.int64 if a.dtype.kind in "iu" else np.float32))
        f.create_group("vars").attrs["name"] = name
    from ..version import __version__

    meta = {"keras_version": "3.0.0", "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "written_by": f"cnnlab {__version__}", **({"cnnlab": cnnlab} if cnnlab else {})}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", json.dumps(meta))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", blob.getvalue())


def parse_keras_spec(kf: KerasFile, name: str | None = None) -> Spec:
    fold = bool(kf.cnnlab and isinstance(kf.cnnlab, dict) and kf.cnnlab.get("preprocessing"))
    check_weights(kf.weights, kf.path)
    try:
        mapping = spec_from_keras(kf.config, kf.path, name, fold)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        raise SpecError(f"the model config is damaged ({type(e).__name__}: {str(e)[:120]})", kf.path,
                        "save the model again with model.save('model.keras')") from None
    return parse_spec(mapping, kf.path)


def keras_proba(kf: KerasFile, spec: Spec, images: np.ndarray, prep) -> np.ndarray:
    """What the file's model computes for uint8 images (N, H, W, C), in cnnlab's layout, run by
    cnnlab's own build of it: how ``cnnlab export --format keras`` checks what it wrote."""
    return keras_outputs(kf, spec, images, prep)[0]


def keras_outputs(kf: KerasFile, spec: Spec, images: np.ndarray, prep) -> tuple[np.ndarray, np.ndarray | None]:
    """The probabilities and, for a file with cnnlab's energy branch, its ood score (N,): that
    branch's weights applied to what the file's last layer takes, as OOD_LAYERS compute it."""
    import torch

    from .build import build_module

    model = build_module(spec).eval()
    model.load_state_dict(torch_state(spec, model.state_dict(), kf.weights, kf.path))
    branch = kf.weights.get(OOD_LAYERS[0]) or kf.weights.get(OOD_OUTPUT)
    taken: list = []
    last = model.blocks[len(spec.layers) - 1]
    hook = last[0].register_forward_pre_hook(lambda m, args: taken.append(args[0])) \
        if branch and isinstance(last, torch.nn.Sequential) and len(last) else None
    try:
        with torch.no_grad():
            x = prep.apply_tensor(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
            probs = model.probabilities(model(x)).numpy()
    finally:
        if hook is not None:
            hook.remove()
    if not branch or len(branch) != 2 or not taken:
        return probs, None
    z = taken[0].double().numpy() @ branch[0].astype(np.float64) + branch[1].astype(np.float64)
    if OOD_LAYERS[0] not in kf.weights:  # binary: softplus(z)
        return probs, np.logaddexp(0.0, z[:, 0])
    top = z.max(1, keepdims=True)
    mean = kf.weights[OOD_OUTPUT][0].astype(np.float64)  # (K, 1): 1/K each
    return probs, ((z - (z - top - np.log(np.exp(z - top).sum(1, keepdims=True)))) @ mean)[:, 0]
