"""Model specs, presets and the torch modules built from them.

Specs and presets are torch-free; ``SpecModel`` and ``build_module`` (torch) load on first use, so
the command line and spec checks start without torch.
"""

from .presets import PRESETS, get_preset, list_presets, preset_spec, spec_from
from .spec import Spec, check_fits, load_spec_file, parse_spec

__all__ = ["PRESETS", "Spec", "SpecModel", "build_module", "check_fits", "get_preset",
           "list_presets", "load_spec_file", "parse_spec", "preset_spec", "spec_from"]


def __getattr__(name: str):
    if name in ("SpecModel", "build_module"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'cnnlab.models' has no attribute {name!r}")
