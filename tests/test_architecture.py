"""The package's layers (docs/architecture.md): no import runs up, lazy imports inside functions
included. A module may import its own layer and the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cnnlab"

# lowest first; a module belongs to the first prefix that matches its dotted name
LAYERS = [
    ("foundation", ["cnnlab.errors", "cnnlab.atomic", "cnnlab.fetch", "cnnlab.options", "cnnlab.recipes",
                    "cnnlab.textwidth", "cnnlab.version",
                    "cnnlab.shipping"]),
    ("data and models", ["cnnlab.data", "cnnlab.models"]),
    ("engine", ["cnnlab.engine"]),
    ("configuration and run files", ["cnnlab.config", "cnnlab.runs", "cnnlab.evaluation"]),
    ("a training run, predictions", ["cnnlab.training", "cnnlab.prediction"]),
    ("API and comparison", ["cnnlab.api", "cnnlab.comparison", "cnnlab.exporting", "cnnlab.importing",
                            "cnnlab.tuning", "cnnlab.labelissues", "cnnlab.parity", "cnnlab.modelcard",
                            "cnnlab.quantizing", "cnnlab.triton", "cnnlab.exportcli"]),
    ("figures", ["cnnlab.viz"]),
    ("report and server", ["cnnlab.report", "cnnlab.serve", "cnnlab.tracking", "cnnlab.webexport"]),
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


def _module_names() -> set[str]:
    return {module_name(p) for p in SRC.rglob("*.py")}


def _as_module(target: str, known: set[str]) -> str | None:
    """The module an import target names (``cnnlab.models.spec``, or for ``from pkg import name``
    the package itself when ``name`` is not a module); None outside cnnlab."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_nothing_imports_the_package_front():
    """cnnlab/__init__.py is the public face (lazy names); a module that imports from it depends
    on everything the front may load, and hides a circle."""
    known = _module_names()
    wrong = [f"{path.relative_to(SRC)}:{line} imports {target}"
             for path in sorted(SRC.rglob("*.py")) if module_name(path) != "cnnlab"
             for line, target in imports(path) if _as_module(target, known) == "cnnlab"]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_inside_a_part():
    """Modules of one part (models/, engine/, ...) import each other in one direction only, lazy
    (function-level) imports included: a circle hidden in a function is still a circle. A package's
    own __init__ (which gathers its public names) is left out of the graph."""
    known = _module_names()
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        me = module_name(path)
        if path.name == "__init__.py":
            continue
        deps = {_as_module(t, known) for _, t in imports(path)}
        graph[me] = {d for d in deps if d and d != me and d in graph.keys() | known
                     and not (SRC.parent / (d.replace(".", "/") + "/__init__.py")).is_file()
                     and layer_of(d) == layer_of(me)}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_functions_take_at_most_8_parameters_and_80_lines():
    """Issue 29: no function in src/ takes more than 8 parameters (dataclasses group the rest) or is
    longer than 80 lines."""
    many, long = set(), set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            n -= bool(a.args and a.args[0].arg in ("self", "cls"))
            where = f"{path.relative_to(SRC).as_posix()}:{node.name}"
            if n > 8:
                many.add(where)
            if node.end_lineno - node.lineno + 1 > 80:
                long.add(where)
    assert not many, f"over 8 parameters: {sorted(many)}"
    assert not long, f"over 80 lines: {sorted(long)}"
