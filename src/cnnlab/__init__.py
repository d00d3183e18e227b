"""cnnlab: train, compare and explain convolutional image classifiers.

The public names load on first use (PEP 562), so ``import cnnlab`` and the command line start
without torch or matplotlib, and a worker process that needs one small module stays light.
The modules behind them are named differently (``engine``, ``prediction``, ``evaluation``), so an
import of a submodule never replaces a public function.
"""

from .version import __version__

_LAZY = {"build_model": "api", "compare": "api", "evaluate": "api", "load_dataset": "api", "predict": "api",
         "resume": "api", "summary": "api", "train": "api", "CnnlabError": "errors", "Run": "runs", "load_run": "runs",
         "Callback": "engine.callbacks", "import_keras": "importing", "export_keras": "exporting",
         "tune": "tuning", "label_issues": "api", "calibrate": "api", "ood": "api", "robustness": "api"}

__all__ = ["Callback", "CnnlabError", "Run", "build_model", "calibrate", "compare", "evaluate", "export_keras",
           "import_keras", "label_issues", "list_models", "load_dataset", "load_run", "ood", "predict", "resume",
           "robustness", "summary", "train", "tune", "__version__"]


def __getattr__(name: str):
    import importlib

    if name == "list_models":
        from .models import list_presets

        globals()[name] = list_presets
        return list_presets
    if name == "viz":  # the figures module, as its docstring uses it: cnnlab.viz.curves(run)
        return importlib.import_module(".viz", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
