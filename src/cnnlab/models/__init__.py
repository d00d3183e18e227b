"""Model specs, presets and the torch modules built from them."""

from .build import SpecModel, build_module
from .presets import PRESETS, get_preset, list_presets, preset_spec, spec_from
from .spec import Spec, check_fits, load_spec_file, parse_spec

__all__ = ["PRESETS", "Spec", "SpecModel", "build_module", "check_fits", "get_preset",
           "list_presets", "load_spec_file", "parse_spec", "preset_spec", "spec_from"]
