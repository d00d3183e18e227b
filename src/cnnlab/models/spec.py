"""Model specs in Keras vocabulary, validated and shape-inferred before any torch code runs.

A spec is ``{"input_shape": [H, W, C], "layers": [{"type": "Conv2D", "filters": 32, ...}, ...]}``
(YAML, JSON or Python dicts). Output shapes and parameter counts equal Keras' for the same
layers: BatchNormalization's moving mean and variance count as non-trainable parameters.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ShapeError, SpecError
from .layers import ALIASES, LAYERS, REQUIRED, LayerKind, lookup

ACTIVATIONS = ("relu", "elu", "gelu", "selu", "leaky_relu", "sigmoid", "tanh", "softmax",
               "linear", "silu", "swish", "softplus")

# Bounds that keep a spec buildable on one machine: a typo such as units: 1000000000 is an error
# with the layer's name, not an out-of-memory crash minutes later.
MAX_PARAMS = 1_000_000_000  # 4 GB of float32 weights
MAX_VALUES = 1 << 28  # values in one image's activations at any layer (1 GB as float32)
COMMON_ARGS = {"type", "name", "input_shape", "inputs"}
INPUT_NAME = "input_layer"  # Keras 3's name for keras.Input
# Keras' glorot_uniform and he_uniform, and cnnlab's data-dependent patch_whitening: the first
# Conv2D's kernels become the +/- principal components of the training images' patches, scaled
# to unit variance (a "whitened first layer"; build.SpecModel.init_from_data).
INITIALIZERS = ("glorot_uniform", "he_uniform", "patch_whitening")


def snake(name: str) -> str:
    """Keras' default layer name: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


@dataclass
class LayerInfo:
    index: int
    name: str
    type: str
    args: dict
    input_shape: tuple
    output_shape: tuple
    trainable: int
    non_trainable: int
    inputs: list = field(default_factory=list)  # the names of the layers (or input) it takes
    input_shapes: list = field(default_factory=list)  # their output shapes (one but for merges)

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


@dataclass
class Spec:
    """A validated spec: layers with their resolved arguments, shapes and parameter counts."""

    input_shape: tuple
    layers: list[LayerInfo]
    name: str = "model"
    input_name: str = INPUT_NAME

    @property
    def is_chain(self) -> bool:
        """Each layer takes the one before it (a Keras Sequential model)."""
        before = [self.input_name] + [layer.name for layer in self.layers[:-1]]
        return all(layer.inputs == [b] for layer, b in zip(self.layers, before))

    @property
    def output_units(self) -> int:
        return int(self.layers[-1].output_shape[-1])

    @property
    def head(self) -> str:
        """'binary' for a final Dense(1, sigmoid), else 'multiclass' (softmax over logits)."""
        last = self.layers[-1]
        return "binary" if self.output_units == 1 and last.args.get("activation") == "sigmoid" else "multiclass"

    @property
    def num_classes(self) -> int:
        return 2 if self.head == "binary" else self.output_units

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(layer.non_trainable for layer in self.layers)

    def to_dict(self) -> dict:
        """The spec as written (resolved arguments), loadable again by ``parse_spec``."""
        chain = self.is_chain
        layers = [] if chain else [{"type": "Input", "shape": list(self.input_shape), "name": self.input_name}]
        for layer in self.layers:
            d: dict[str, Any] = {"type": layer.type, "name": layer.name}
            if not chain:
                d["inputs"] = list(layer.inputs)
            d.update(_plain(layer.args))
            layers.append(d)
        if chain:
            return {"name": self.name, "input_shape": list(self.input_shape), "layers": layers}
        return {"name": self.name, "layers": layers}

    def summary_dict(self) -> dict:
        return {"layers": [{"name": l.name, "type": l.type,
                            "output_shape": [None, *l.output_shape], "params": l.params,
                            "connected_to": list(l.inputs)}
                           for l in self.layers],
                "total_params": self.total_params, "trainable_params": self.trainable_params,
                "non_trainable_params": self.non_trainable_params}

    def summary(self) -> str:
        """A Keras-style summary table; a graph's has Keras' "Connected to" column (and the input)."""
        def shape(s):
            return "(None, " + ", ".join(str(v) for v in s) + ")"

        rows = [(f"{l.name} ({l.type})", shape(l.output_shape), f"{l.params:,}",
                 [f"{n}[0][0]" for n in l.inputs]) for l in self.layers]
        chain = self.is_chain
        if not chain:
            rows.insert(0, (f"{self.input_name} (InputLayer)", shape(self.input_shape), "0", ["-"]))
        w0 = max(28, *(len(r[0]) + 2 for r in rows))
        w1 = max(26, *(len(r[1]) + 2 for r in rows))
        w3 = 0 if chain else max(len("Connected to"), *(len(c) + 2 for r in rows for c in r[3]))
        width = w0 + w1 + 12 + (w3 + 2 if w3 else 0)
        head = f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}"
        lines = [f'Model: "{self.name}"', "_" * width, head + ("  Connected to" if w3 else ""), "=" * width]
        for i, r in enumerate(rows):
            if chain:
                lines.append(f"{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:>10}")
            else:  # one input per line, as Keras prints them
                for k, c in enumerate(r[3]):
                    first = (r[0], r[1], r[2]) if k == 0 else ("", "", "")
                    sep = "," if k < len(r[3]) - 1 else ""
                    lines.append(f"{first[0]:<{w0}}{first[1]:<{w1}}{first[2]:>10}  {c}{sep}".rstrip())
            lines.append("_" * width if i < len(rows) - 1 else "=" * width)
        lines += [f"Total params: {self.total_params:,}",
                  f"Trainable params: {self.trainable_params:,}",
                  f"Non-trainable params: {self.non_trainable_params:,}", "_" * width]
        return "\n".join(lines)


def _plain(args: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}


# ----------------------------------------------------------------------------- parsing

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5", ".onnx", ".safetensors", ".pt", ".pth")


def load_spec_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix.lower() in KERAS_SUFFIXES or path.name.endswith(".weights.h5"):
        fix = (f"import it as a run first: cnnlab import-keras {path}, then train from it with --init-from RUN"
               if path.suffix.lower() in (".keras", ".h5", ".hdf5") else
               "give a spec (YAML or JSON with input_shape and layers), a preset, or start from a run's weights "
               "with --init-from RUN")
        raise SpecError(f"a model file ({path.suffix}) is not a spec", str(path), fix)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec: {e.strerror}", str(path), "check the path") from None
    except UnicodeDecodeError:
        raise SpecError("the spec is not text (a binary file?)", str(path),
                        "give a YAML or JSON spec with input_shape and layers") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError
        raise SpecError(f"cannot parse spec: {str(e).splitlines()[0]}", str(path),
                        "write a YAML or JSON mapping with input_shape and layers") from None
    if not isinstance(data, dict):
        raise SpecError("spec is not a mapping", str(path),
                        "write a mapping with input_shape and layers")
    data.setdefault("name", path.stem)
    return data


def _check_activation(v, where: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or v.lower() not in ACTIVATIONS:
        close = difflib.get_close_matches(str(v).lower(), ACTIVATIONS, 1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"activation={v!r} is unknown{hint}", where,
                        f"use one of {', '.join(ACTIVATIONS)}")
    v = v.lower()
    return None if v == "linear" else ("silu" if v == "swish" else v)


def _check_initializer(first: bool, kind: LayerKind, args: dict, shape: tuple, where: str) -> None:
    init = args["kernel_initializer"]
    if init not in INITIALIZERS or (init == "patch_whitening" and not kind.takes_patch_whitening):
        ok = INITIALIZERS if kind.takes_patch_whitening else INITIALIZERS[:2]
        raise SpecError(f"kernel_initializer={init!r} is unknown for {kind.name}", where,
                        f"use one of {', '.join(ok)}")
    if init != "patch_whitening":
        return
    if not first:
        raise SpecError("patch_whitening needs the image as the layer's input", where,
                        "use it on the first layer only")
    (kh, kw), f = args["kernel_size"], args["filters"]
    dims = kh * kw * shape[2] if len(shape) == 3 else kh * kw
    if not isinstance(f, int) or f % 2 or not 0 < f // 2 <= dims:
        raise SpecError(f"patch_whitening makes +/- pairs of at most {dims} components, but filters={f!r}",
                        where, f"use an even number of filters from 2 to {2 * dims}")


def _infer(kind: LayerKind, args: dict, shape: tuple | list, where: str) -> tuple[tuple, int, int]:
    """Output shape, trainable and non-trainable parameter counts of one layer."""
    if kind.needs_image and len(shape) != 3:
        fix = ("give input_shape a channel axis, e.g. [28, 28, 1]" if len(shape) == 2
               else "put it before Flatten / Dense")
        raise ShapeError(f"{kind.name} needs an (H, W, C) input but gets {tuple(shape)}", where, fix)
    return kind.infer(args, shape, where)


def _input_layer(data: dict, layers: list, where: str) -> tuple:
    """(input_shape, input name, layers after an Input entry, index of the first of them)."""
    input_shape, name, first_index = data.get("input_shape"), INPUT_NAME, 0
    first = layers[0]
    if isinstance(first, dict) and first.get("type") in ("Input", "InputLayer"):
        # {type: Input, shape: [28, 28, 1]} first, as the seeds' functional code starts
        extra = set(first) - {"type", "shape", "name"}
        if extra or "shape" not in first:
            got = ", ".join(sorted(set(first) - {"type"})) or "nothing"
            raise SpecError(f"Input takes shape (and name), got {got}",
                            f"{where}, layer 0 (Input)", "write {type: Input, shape: [28, 28, 1]}")
        shape_in = first["shape"]
        if input_shape is not None and list(input_shape) != list(shape_in if isinstance(shape_in, (list, tuple))
                                                                  else [shape_in]):
            raise SpecError(f"input_shape {input_shape!r} and Input shape {shape_in!r} differ",
                            f"{where}, layer 0 (Input)", "give the shape once")
        input_shape, layers, first_index = shape_in, layers[1:], 1
        name = str(first.get("name") or INPUT_NAME)
        if not layers:
            raise SpecError("spec has only an Input layer", where, "add layers after it")
    if input_shape is None and isinstance(layers[0], dict):
        input_shape = layers[0].get("input_shape")
    if (not isinstance(input_shape, (list, tuple)) or len(input_shape) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)):
        raise SpecError(f"input_shape={input_shape!r} is not [H, W, C] or [H, W]", where,
                        "use e.g. input_shape: [28, 28, 1]")
    if len(input_shape) == 3 and input_shape[2] not in (1, 3):
        raise SpecError(f"input_shape has {input_shape[2]} channels", where,
                        "use 1 (grayscale) or 3 (RGB) channels")
    shape = tuple(int(v) for v in input_shape)
    if math.prod(shape) > MAX_VALUES:
        raise SpecError(f"input_shape {list(shape)} has {math.prod(shape):,} values per image", where,
                        "use a smaller --image-size (e.g. 224 224)")
    return shape, name, layers, first_index


@dataclass
class _Written:
    """One layer as written, before its shapes are known."""

    index: int
    kind: LayerKind
    args: dict
    loc: str
    name: str = ""
    inputs: list[str] = field(default_factory=list)  # names as written (empty: the layer before it)


def _read_layer(raw, i: int, where: str) -> _Written:
    """A layer's type and arguments, checked and made whole (no shapes yet)."""
    if not isinstance(raw, dict) or "type" not in raw:
        raise SpecError(f"layer {i} is not a mapping with a 'type'", f"{where}, layer {i}",
                        "write e.g. {type: Conv2D, filters: 32, kernel_size: 3}")
    if not isinstance(raw["type"], str):
        raise SpecError(f"type={raw['type']!r} is not a layer name", f"{where}, layer {i}",
                        "write the type as a name, e.g. type: Conv2D")
    kind = lookup(raw["type"])
    loc = f"{where}, layer {i} ({raw['type']})"
    if kind is None:
        close = difflib.get_close_matches(str(raw["type"]), list(LAYERS) + list(ALIASES), 1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SpecError(f"unknown layer type '{raw['type']}'", loc, f"{hint}supported: {', '.join(LAYERS)}")
    ltype, allowed = kind.name, kind.args
    args = {}
    for k, v in raw.items():
        if k in COMMON_ARGS:
            continue
        if k not in allowed:
            ok = ", ".join(allowed) or "no arguments"
            raise SpecError(f"unknown argument '{k}'", loc, f"{ltype} takes {ok} (and name, inputs)")
        args[k] = v
    for k, default in allowed.items():
        if k not in args:
            if default is REQUIRED:
                raise SpecError(f"missing argument '{k}'", loc, f"give {ltype} a {k}")
            args[k] = default
    kind.normalise(args, loc)  # the way Keras does, e.g. kernel_size: 3 -> (3, 3)
    if isinstance(allowed.get("padding"), str):  # valid | same (ZeroPadding2D's padding is sizes)
        p = str(args["padding"]).lower()
        if p not in ("valid", "same"):
            raise SpecError(f"padding={args['padding']!r} is unknown", loc, "use valid or same")
        args["padding"] = p
    if "activation" in args:
        args["activation"] = _check_activation(args["activation"], loc)
    for flag in ("use_bias", "trainable"):
        if flag in args and not isinstance(args[flag], bool):
            raise SpecError(f"{flag}={args[flag]!r} is not true/false", loc, "use true or false")
    inputs = raw.get("inputs")
    if inputs is not None:
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs or not all(isinstance(v, str) for v in inputs):
            raise SpecError(f"inputs={raw['inputs']!r} is not a layer name or a list of them", loc,
                            "write e.g. inputs: [conv2d, conv2d_1]")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise SpecError(f"name={name!r} is not a name", loc, "write e.g. name: block1_conv")
    return _Written(i, kind, args, loc, name or "", inputs or [])


def _connect(written: list[_Written], input_name: str, where: str) -> list[_Written]:
    """Resolve each layer's inputs (the layer before it unless it says ``inputs``) and order the
    layers so that each comes after its inputs (as written where they allow). The graph has one
    input and one output: a cycle, an unknown name or a branch that leads nowhere is an error."""
    names = {w.name: w for w in written}
    for k, w in enumerate(written):
        if not w.inputs:
            w.inputs = [written[k - 1].name if k else input_name]
        for name in w.inputs:
            if name not in names and name != input_name:
                close = difflib.get_close_matches(name, [input_name, *names], 1)
                raise SpecError(f"input '{name}' is not a layer of this model", w.loc,
                                (f"did you mean {close[0]}? " if close else "")
                                + f"use the input ({input_name}) or a layer's name")
            if name == w.name:
                raise SpecError(f"layer '{name}' takes its own output", w.loc, "use an earlier layer's name")
        many = w.kind.merge
        if many and len(w.inputs) < 2:
            raise SpecError(f"{w.kind.name} merges two or more inputs but gets {len(w.inputs)}", w.loc,
                            "list them: inputs: [branch_a, branch_b]")
        if not many and len(w.inputs) > 1:
            raise SpecError(f"{w.kind.name} takes one input but gets {len(w.inputs)}", w.loc,
                            "merge them first with Add or Concatenate")
    order, done, waiting = [], {input_name}, list(written)
    while waiting:  # Kahn's algorithm, taking the first written layer whose inputs are ready
        ready = next((w for w in waiting if all(n in done for n in w.inputs)), None)
        if ready is None:  # walk back through inputs not yet placed until a layer repeats
            path, w = [], waiting[0]
            while w not in path:
                path.append(w)
                w = names[next(n for n in w.inputs if n not in done)]
            cycle = sorted(path[path.index(w):], key=lambda v: v.index)
            raise SpecError(f"the layers {', '.join(v.name for v in cycle)} form a cycle (each waits on another)",
                            cycle[0].loc, "make every layer take inputs only from layers before it")
        order.append(ready)
        done.add(ready.name)
        waiting.remove(ready)
    used = {n for w in written for n in w.inputs}
    if input_name not in used:
        raise SpecError(f"no layer takes the input '{input_name}'", where,
                        f"give the first layer inputs: {input_name}")
    for w in order[:-1]:
        if w.name not in used:
            raise SpecError(f"the output of layer '{w.name}' is not used (a branch that leads nowhere)", w.loc,
                            "add it to a later layer's inputs (e.g. an Add or Concatenate), or remove it")
    return order


def parse_spec(data: dict, where: str = "spec") -> Spec:
    """Validate a spec mapping and infer every layer's output shape and parameter count.

    ``layers`` is a chain, or a graph when layers name their ``inputs`` (Keras' functional
    API): each layer takes the one written before it unless it lists others, by name."""
    if not isinstance(data, dict):
        raise SpecError("spec is not a mapping", where, "give input_shape and layers")
    unknown_top = set(data) - {"input_shape", "layers", "name"}
    if unknown_top:
        raise SpecError(f"unknown key '{sorted(unknown_top)[0]}'", where,
                        "a spec has input_shape, layers and an optional name")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError("spec has no layers", where, "give a non-empty list under 'layers'")
    input_shape, input_name, layers, first_index = _input_layer(data, layers, where)
    written = [_read_layer(raw, i, where) for i, raw in enumerate(layers, start=first_index)]
    counters: dict[str, int] = {}
    names = {input_name}
    for w in written:  # Keras' default names, counted per type in the order written
        if not w.name:
            base = snake(w.kind.name)
            n = counters.get(base, 0)
            counters[base] = n + 1
            w.name = base if n == 0 else f"{base}_{n}"
        if w.name in names:
            raise SpecError(f"duplicate layer name '{w.name}'", w.loc, "give each layer its own name")
        names.add(w.name)
    shapes = {input_name: input_shape}
    infos: list[LayerInfo] = []
    for w in _connect(written, input_name, where):
        kind, args, loc = w.kind, w.args, w.loc
        ins = [shapes[n] for n in w.inputs]
        if "kernel_initializer" in args:
            _check_initializer(w.inputs == [input_name], kind, args, ins[0], loc)
        out, trainable, fixed = _infer(kind, args, ins if kind.merge else ins[0], loc)
        if args.get("trainable") is False:  # Keras counts a frozen layer's weights as non-trainable
            trainable, fixed = 0, fixed + trainable
        if math.prod(out) > MAX_VALUES:
            raise SpecError(f"the layer's output {list(out)} has {math.prod(out):,} values per image", loc,
                            "use fewer filters or units, or more pooling before it")
        infos.append(LayerInfo(w.index, w.name, kind.name, args, ins[0], out, trainable, fixed,
                               list(w.inputs), ins))
        shapes[w.name] = out
        total = sum(x.params for x in infos)
        if total > MAX_PARAMS:
            raise SpecError(f"the model reaches {total:,} parameters here (the limit is {MAX_PARAMS:,})", loc,
                            "use fewer filters or units (a Dense layer after Flatten grows with the image size)")
    spec = Spec(input_shape, infos, str(data.get("name") or "model"), input_name)
    last = infos[-1]
    if len(last.output_shape) != 1:
        raise ShapeError(f"the model's output has shape {tuple(last.output_shape)}",
                        f"{where}, layer {last.index} ({last.type})",
                        "end with Flatten or GlobalAveragePooling2D and a Dense layer")
    if not LAYERS[last.type].can_end:
        raise SpecError(f"the last layer is {last.type}", f"{where}, layer {last.index}",
                        "end with Dense(units=number of classes, activation=softmax)")
    act = last.args.get("activation")
    if spec.output_units == 1 and act != "sigmoid":
        raise SpecError("a 1-unit output needs activation sigmoid", f"{where}, layer {last.index}",
                        "use Dense(1, sigmoid) for two classes, or Dense(K, softmax) for K classes")
    if spec.output_units > 1 and act not in ("softmax", None):
        raise SpecError(f"the output layer's activation is {act}", f"{where}, layer {last.index}",
                        "use softmax (or none: outputs are then logits)")
    return spec


def check_fits(spec: Spec, input_shape: tuple, num_classes: int, where: str = "spec") -> None:
    """The spec must take the data's image shape and produce one output per class."""
    h, w, c = input_shape
    want = tuple(spec.input_shape)
    if want[:2] != (h, w) or (len(want) == 3 and want[2] != c) or (len(want) == 2 and c != 1):
        raise SpecError(f"input_shape {list(want)} does not match the data's images {[h, w, c]}",
                        f"{where}, input_shape",
                        f"set input_shape: {[h, w, c]}, or pass --image-size {want[0]} {want[1]}"
                        + (" and --color-mode " + ("rgb" if len(want) == 3 and want[2] == 3 else "grayscale")
                           if len(want) == 3 and want[2] != c else ""))
    if spec.head == "binary":
        if num_classes != 2:
            raise SpecError(f"Dense(1, sigmoid) is for 2 classes but the data has {num_classes}",
                            f"{where}, layer {spec.layers[-1].index}",
                            f"use Dense(units={num_classes}, activation=softmax)")
    elif spec.output_units != num_classes:
        raise SpecError(f"the output layer has {spec.output_units} units but the data has "
                        f"{num_classes} classes", f"{where}, layer {spec.layers[-1].index} "
                        f"({spec.layers[-1].name}), units", f"use units: {num_classes}")

