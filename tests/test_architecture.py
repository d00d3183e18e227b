"""The package's layers (docs/architecture.md): no import runs up, lazy imports inside functions
included. A module may import its own layer and the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cnnlab"

# lowest first; a module belongs to the first prefix that matches its dotted name
LAYERS = [
    ("foundation", ["cnnlab.errors", "cnnlab.atomic", "cnnlab.fetch", "cnnlab.options", "cnnlab.recipes",
                    "cnnlab.textwidth", "cnnlab.__version__"]),
    ("data and models", ["cnnlab.data", "cnnlab.models"]),
    ("engine", ["cnnlab.engine"]),
    ("configuration and run files", ["cnnlab.config", "cnnlab.runs", "cnnlab.evaluation"]),
    ("a training run, predictions", ["cnnlab.training", "cnnlab.prediction"]),
    ("API and comparison", ["cnnlab.api", "cnnlab.comparison", "cnnlab.exporting", "cnnlab.importing",
                            "cnnlab.tuning"]),
    ("figures", ["cnnlab.viz"]),
    ("report and server", ["cnnlab.report", "cnnlab.serve", "cnnlab.tracking"]),
    ("command line", ["cnnlab.cli", "cnnlab.commands", "cnnlab"]),
]


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, module
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported cnnlab module) for every import in the file, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cnnlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cnnlab":
                continue
            if node.module is None or target in ("cnnlab",):  # from . import x: x may be a module
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def test_no_import_runs_up_the_layers():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        for line, target in imports(path):
            if me == "cnnlab":  # the package's lazy public names: the top of the stack
                continue
            if layer_of(target) > layer_of(me):
                wrong.append(f"{path.relative_to(SRC)}:{line} {me} ({LAYERS[layer_of(me)][0]}) imports "
                             f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_table_covers_every_module():
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path))
