"""A search space: training keys and a model spec, in cnnlab's (Keras') vocabulary, with ranges
or choices in place of values.

    epochs: 8
    lr: {loguniform: [1.0e-4, 1.0e-2]}
    batch_size: {choice: [32, 64, 128]}
    model:
      name: tuned-cnn
      layers:
        - repeat: {int: [1, 3], name: conv_blocks}
          layers:
            - {type: Conv2D, filters: {choice: [16, 32, 64], name: filters}, kernel_size: 3,
               padding: same, activation: relu}
            - {type: MaxPooling2D, pool_size: 2}
        - {type: Flatten}
        - {type: Dense, units: {choice: [64, 128, 256]}, activation: relu}
        - {type: Dropout, rate: {uniform: [0.1, 0.5]}}
        - {type: Dense, units: 10, activation: softmax}

``start:`` (optional) lists points to try first, as parameter names and values (e.g. the model
the search starts from); they run as the study's first trials.

A search node is a mapping with one of ``choice`` (a list), ``uniform`` / ``loguniform`` ([low,
high] floats) or ``int`` ([low, high], with ``step`` or ``log: true``), and optionally ``name``
(the parameter's name in the study and the leaderboard; by default its path, e.g.
``model.layers.4.rate``). In a ``layers`` list, ``{repeat: N or a node, layers: [...]}`` stands
for its layers written N times; each copy draws its own values, named ``<name>_<copy>`` from 1.
``model`` may also be a preset name, a spec file, or a choice of them.

The walk is define-by-run (Optuna's way): a repeated block's later copies are only drawn when
the drawn count reaches them, so conditional parameters are natural.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from ..config import check_keys, read_yaml_keys
from ..errors import ConfigError

KINDS = ("choice", "uniform", "loguniform", "int")
MAX_REPEAT = 64  # copies of a repeated block: more is a typo, and would build thousands of layers
NODE_EXTRAS = {"name", "step", "log"}
# set by the study (data and where runs go) or per worker (threads, device), never searched
NOT_SEARCHED = ("source", "val_source", "test_source", "val_split", "test_split", "runs_dir", "name", "quiet",
                "device", "threads", "check", "strict", "time_limit", "seed")

# suggest(name, kind, spec) -> value; spec is the node: {"choice": [...]} etc.
Suggest = Callable[[str, str, dict], object]


def is_node(v) -> bool:
    return isinstance(v, dict) and any(k in v for k in KINDS)


def load_space(path: str | Path) -> dict:
    """The space file as a mapping, its structure checked (each node, every key), so a mistake is
    one line before any trial runs."""
    data = read_yaml_keys(path, "the search space", "write key: value or key: {choice: [...]} lines (an example: "
                          "cnnlab tune --example-space)")
    if not data:
        raise ConfigError("the search space is empty", str(path),
                          "write key: {choice: [...]} lines (an example: cnnlab tune --example-space)")
    check_space(data, str(path))
    return data


def check_space(space: dict, where: str) -> None:
    starts = space.get("start", [])
    if not isinstance(starts, list) or not all(isinstance(p, dict) and p for p in starts):
        raise ConfigError("start must be a list of parameter mappings", f"{where}: start",
                          "write e.g. start: [{lr: 0.001, batch_size: 32}] (the trials to run first)")
    space = {k: v for k, v in space.items() if k != "start"}
    check_keys(space, where)
    fixed = [k for k in space if k in NOT_SEARCHED]
    if fixed:
        raise ConfigError(f"'{fixed[0]}' cannot be part of a search space", f"{where}: {fixed[0]}",
                          "give it as a flag of cnnlab tune instead (it is the same for every trial)")
    if not any(_nodes(space, "")):
        raise ConfigError("the search space searches nothing", where,
                          "put {choice: [...]}, {uniform: [low, high]}, {loguniform: [...]} or {int: [...]} "
                          "in place of a value")
    for path, node in _nodes(space, ""):
        check_node(node, f"{where}: {path}")
    check_start({**space, "start": starts}, where)


def _nodes(v, path: str):
    """(path, node) for every search node, repeats' counts included, copies not expanded."""
    if is_node(v):
        yield path, v
    elif isinstance(v, dict):
        for k, item in v.items():
            yield from _nodes(item, f"{path}.{k}" if path else str(k))
    elif isinstance(v, list):
        for i, item in enumerate(v):
            yield from _nodes(item, f"{path}.{i}")


def check_node(node: dict, where: str) -> None:
    kinds = [k for k in KINDS if k in node]
    extra = sorted(set(node) - set(KINDS) - NODE_EXTRAS)
    if len(kinds) > 1 or extra:
        raise ConfigError(f"a search node has {', '.join(kinds[1:] + extra)} beside {kinds[0]}", where,
                          "write one of choice, uniform, loguniform, int (with name, step or log)")
    kind, arg = kinds[0], node[kinds[0]]
    if "name" in node and not (isinstance(node["name"], str) and node["name"].strip()):
        raise ConfigError("a search node's name must be a word", where, "write e.g. name: filters")
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ConfigError("choice needs a list of values", where, "write e.g. {choice: [16, 32, 64]}")
        if set(node) - {"choice", "name"}:
            raise ConfigError("choice takes no step or log", where, "list the values you want")
        return
    numbers = isinstance(arg, list) and len(arg) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in arg)
    example = {"uniform": "{uniform: [0.1, 0.5]}", "loguniform": "{loguniform: [1.0e-4, 1.0e-2]}",
               "int": "{int: [1, 3]}"}[kind]
    if not numbers or not arg[0] < arg[1]:
        raise ConfigError(f"{kind} needs [low, high] with low < high, got {arg!r}", where, f"write e.g. {example}")
    if kind == "loguniform" and arg[0] <= 0:
        raise ConfigError(f"loguniform needs a low above 0, got {arg[0]!r}", where, f"write e.g. {example}")
    if kind == "int":
        if not all(isinstance(v, int) for v in arg):
            raise ConfigError(f"int needs whole numbers, got {arg!r}", where, f"write e.g. {example}")
        step = node.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ConfigError(f"step must be a whole number of at least 1, got {step!r}", where,
                              "write e.g. step: 16")
        if node.get("log") and (arg[0] < 1 or step != 1):
            raise ConfigError("int with log: true needs low >= 1 and no step", where,
                              "write e.g. {int: [8, 128], log: true}")
    elif "log" in node:
        raise ConfigError(f"{kind} takes no log", where, "use loguniform for a log scale")
    elif "step" in node and kind == "loguniform":
        raise ConfigError("loguniform takes no step", where, "use uniform with step, or no step")
    elif "step" in node:
        step = node["step"]
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not math.isfinite(step) or step <= 0 \
                or step > arg[1] - arg[0]:
            raise ConfigError(f"step must be a number above 0 and at most high - low, got {step!r}", where,
                              "write e.g. {uniform: [0.1, 0.5], step: 0.05}")


def primitive(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def draw(space: dict, suggest: Suggest) -> tuple[dict, dict | str | None]:
    """One point of the space: (training keys, model) with every node replaced by ``suggest``'s
    value. The model is a spec mapping, a preset or file name, or None (not in the space)."""
    names: dict[str, str] = {}
    values = {}
    for k, v in space.items():
        if k != "start":  # the points to try first (search.open_study), not a key
            values[k] = _draw(v, k, suggest, names)
    model = values.pop("model", None)
    return values, model


def _draw(v, path: str, suggest: Suggest, names: dict, copy: int | str | None = None):
    if is_node(v):
        kind = next(k for k in KINDS if k in v)
        name = str(v.get("name") or path)
        if copy is not None:
            name = f"{name}_{copy}"
        if names.setdefault(name, path) != path:
            raise ConfigError(f"two search nodes are named '{name}'", path, "give each node its own name")
        return suggest(name, kind, v)
    if isinstance(v, dict):
        return {k: _draw(item, f"{path}.{k}", suggest, names, copy) for k, item in v.items()}
    if isinstance(v, list):
        out = []
        for i, item in enumerate(v):
            if isinstance(item, dict) and "repeat" in item:
                out += _repeat(item, f"{path}.{i}", suggest, names, copy)
            else:
                out.append(_draw(item, f"{path}.{i}", suggest, names, copy))
        return out
    return v


def _repeat(block: dict, path: str, suggest: Suggest, names: dict, copy: int | str | None) -> list:
    extra = sorted(set(block) - {"repeat", "layers"})
    if extra or not isinstance(block.get("layers"), list) or not block["layers"]:
        raise ConfigError(f"a repeat block takes 'repeat' and a list of 'layers'{', not ' + extra[0] if extra else ''}",
                          path, "write {repeat: {int: [1, 3]}, layers: [...]}")
    n = _draw(block["repeat"], f"{path}.repeat", suggest, names, copy)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_REPEAT:
        raise ConfigError(f"repeat must be a whole number from 0 to {MAX_REPEAT}, got {n!r}", f"{path}.repeat",
                          "write e.g. repeat: {int: [1, 3]}")
    out = []
    for k in range(1, n + 1):
        inner = k if copy is None else f"{copy}_{k}"
        out += _draw(block["layers"], f"{path}.layers", suggest, names, inner)
    return out


def optuna_suggest(trial) -> Suggest:
    """Draws through an Optuna trial. Choices that are not plain values (lists, mappings) are
    offered to Optuna as their JSON text and turned back."""

    def suggest(name: str, kind: str, node: dict):
        arg = node[kind]
        if kind == "choice":
            if all(primitive(c) for c in arg):
                return trial.suggest_categorical(name, arg)
            return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in arg]))
        if kind == "int":
            return trial.suggest_int(name, arg[0], arg[1], step=node.get("step", 1), log=bool(node.get("log")))
        return trial.suggest_float(name, float(arg[0]), float(arg[1]), log=kind == "loguniform",
                                   step=node.get("step"))

    return suggest


def first_values(name: str, kind: str, node: dict):
    """A stand-in suggest for checking a space before the study: the first choice, the low end."""
    arg = node[kind]
    return arg[0] if kind in ("choice", "int") else float(arg[0])


def candidates(kind: str, node: dict) -> list:
    """The values a check of the space tries for one node: every choice, both ends of a range."""
    arg = node[kind]
    if kind == "choice":
        return list(arg)
    if kind == "int":
        step = node.get("step", 1)
        return [arg[0], arg[0] + (arg[1] - arg[0]) // step * step]
    return [float(arg[0]), float(arg[1])]


def repeat_nodes(v) -> set[int]:
    """The ids of the nodes that count a repeated block's copies."""
    found: set[int] = set()
    if isinstance(v, dict):
        if "repeat" in v and is_node(v["repeat"]):
            found.add(id(v["repeat"]))
        for item in v.values():
            found |= repeat_nodes(item)
    elif isinstance(v, list):
        for item in v:
            found |= repeat_nodes(item)
    return found


def points_to_check(space: dict):
    """(node path, value, suggest) for each value a check of the space tries: every choice and both
    ends of every range, one node at a time; the other nodes at their first value, a repeated
    block at its most copies (so the nodes inside it are drawn)."""
    counts = repeat_nodes(space)
    for path, target in _nodes({k: v for k, v in space.items() if k != "start"}, ""):
        kind = next(k for k in KINDS if k in target)
        for value in candidates(kind, target):
            def suggest(name, kind, node, target=target, value=value):
                if node is target:
                    return value
                return candidates(kind, node)[-1] if id(node) in counts else first_values(name, kind, node)

            yield path, value, suggest


def check_value_in_node(name: str, kind: str, node: dict, value, where: str) -> None:
    """A start point's value must be one the node could draw."""
    arg = node[kind]
    if kind == "choice":
        if not any(json.dumps(value, sort_keys=True) == json.dumps(c, sort_keys=True) for c in arg):
            raise ConfigError(f"{name}: {value!r} is not one of the choices {arg!r}", where,
                              "give one of the node's choices, or add it to them")
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and arg[0] <= value <= arg[1]
    if kind == "int":
        step = node.get("step", 1)
        ok = ok and isinstance(value, int) and (value - arg[0]) % step == 0
    if not ok:
        kind_words = "a whole number " if kind == "int" else "a number "
        raise ConfigError(f"{name}: {value!r} is not {kind_words}in [{arg[0]}, {arg[1]}]"
                          + (f" on steps of {node['step']}" if "step" in node else ""), where,
                          "give a value the search could draw")


def start_suggest(point: dict, seen: dict, where: str) -> Suggest:
    """A suggest that answers a start point's values (each checked against its node) and the first
    value elsewhere; ``seen`` collects the names the walk met."""

    def suggest(name: str, kind: str, node: dict):
        seen[name] = (kind, node)
        if name in point:
            check_value_in_node(name, kind, node, point[name], where)
            return point[name]
        return first_values(name, kind, node)

    return suggest


def check_start(space: dict, where: str) -> None:
    """Every start point names parameters of the space (a typo is an error, with the names there
    are) and gives each a value its node could draw."""
    import difflib

    for i, point in enumerate(space.get("start", [])):
        seen: dict = {}
        draw(space, start_suggest(point, seen, f"{where}: start.{i}"))
        unknown = [k for k in point if k not in seen]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(seen), 1)
            raise ConfigError(f"start point {i} names '{unknown[0]}', which is not a parameter of the space",
                              f"{where}: start.{i}", (f"did you mean '{close[0]}'? " if close else "") +
                              f"the parameters are {', '.join(seen)}")


def example_space() -> str:
    """The example space for Fashion-MNIST shipped with the package (around the notebooks'
    fashion-cnn)."""
    return (Path(__file__).parent / "fashion_space.yaml").read_text(encoding="utf-8")

