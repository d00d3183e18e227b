"""`cnnlab models`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from . import add_command


@dataclass
class Options:
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "models", Options, help="list model presets and training recipes").set_defaults(func=handle)


def handle(args) -> int:
    from ..models import PRESETS, parse_spec, preset_spec
    from ..recipes import RECIPES

    print(f"{'preset':<15}{'input':<13}{'params':>11}{'non-train.':>12}  description")
    for name, p in PRESETS.items():
        s = parse_spec(preset_spec(name))
        shape = "x".join(map(str, p.input_shape))
        print(f"{name:<15}{shape:<13}{s.total_params:>11,}{s.non_trainable_params:>12,}  {p.description}")
        if p.recipe:
            print(f"{'':<51}recipe: {p.recipe}")
    print(f"\n{'recipe':<15}settings")
    for r in RECIPES.values():
        settings = ", ".join(f"{k} {v}" for k, v in r.settings.items()) or "the defaults"
        print(f"{r.name:<15}{r.description}\n{'':<15}{settings}")
    print("\nA preset's recipe applies unless --recipe or your flags say otherwise.")
    print("Presets adapt to the data (input shape, number of classes): cnnlab summary PRESET "
          "--input-shape H W C --classes K")
    return 0
