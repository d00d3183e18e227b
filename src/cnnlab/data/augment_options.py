"""The augmentation settings (Keras ImageDataGenerator names), without torch: the configuration
and the command line read them; data/augment.py applies them to batches."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


@dataclass
class AugmentOptions:
    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float | list = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    random_crop: int = 0
    random_erasing: float = 0.0

    def validate(self) -> None:
        if self.fill_mode not in FILL_MODES:
            raise ConfigError(f"unknown fill_mode '{self.fill_mode}'", "--fill-mode",
                              f"use one of {', '.join(FILL_MODES)}")
        for name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}",
                                  "--" + name.replace("_", "-"), "use a non-negative number")
        z = self.zoom_range
        if isinstance(z, (list, tuple)) and not (
                len(z) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                    for v in z)):
            raise ConfigError(f"zoom_range {z!r} is not a number or a pair of numbers", "--zoom-range",
                              "use e.g. 0.2 for [0.8, 1.2], or two numbers LO HI")
        lo, hi = self.zoom_bounds()
        if not 0 < lo <= hi:
            raise ConfigError(f"zoom_range {self.zoom_range} gives zoom factors {lo}..{hi}",
                              "--zoom-range", "use a number in [0, 1) or a pair lo < hi, lo > 0")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"random_erasing must be a probability, got {self.random_erasing}",
                              "--random-erasing", "use a number in [0, 1]")
        if self.random_crop < 0:
            raise ConfigError(f"random_crop must be >= 0, got {self.random_crop}",
                              "--random-crop", "use a padding in pixels, e.g. 2")

    def zoom_bounds(self) -> tuple[float, float]:
        z = self.zoom_range
        if isinstance(z, (list, tuple)):
            return float(z[0]), float(z[1])
        return 1.0 - float(z), 1.0 + float(z)

    @property
    def active(self) -> bool:
        return self.affine or self.horizontal_flip or self.vertical_flip or \
            self.random_crop > 0 or self.random_erasing > 0

    @property
    def affine(self) -> bool:
        return any((self.rotation_range, self.width_shift_range, self.height_shift_range,
                    self.shear_range)) or self.zoom_bounds() != (1.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)
