"""The augmentation settings (Keras ImageDataGenerator names), without torch: the configuration
and the command line read them; data/augment.py applies them to batches."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..options import Choice, Interval, Rule, check_values, key

FILL_MODES = ("nearest", "constant", "reflect", "wrap")
AUGMENTATION = "augmentation (training batches only)"  # the group of these keys in --help


def _zoom_ok(z) -> bool:
    """A number z (zoom in [1-z, 1+z]) or a pair lo <= hi, with every zoom factor above 0."""
    if isinstance(z, (list, tuple)):
        if not (len(z) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                    for v in z)):
            return False
        lo, hi = float(z[0]), float(z[1])
    else:
        lo, hi = 1.0 - float(z), 1.0 + float(z)
    return 0 < lo <= hi


def _aug(default, help, check=None, **kw):
    return key(default, help, check, group=AUGMENTATION, **kw)


@dataclass
class AugmentOptions:
    rotation_range: float = _aug(0.0, "random rotation, degrees", Interval(0), metavar="DEG", example="10")
    width_shift_range: float = _aug(0.0, "horizontal shift, fraction of width (< 1) or pixels", Interval(0),
                                    metavar="F", example="0.1")
    height_shift_range: float = _aug(0.0, "vertical shift, fraction of height (< 1) or pixels", Interval(0),
                                     metavar="F", example="0.1")
    shear_range: float = _aug(0.0, "shear angle, degrees", Interval(0), metavar="DEG", example="10")
    zoom_range: float | list = _aug(0.0, "zoom: Z for [1-Z, 1+Z], or two numbers LO HI",
                                    Rule(_zoom_ok, "a number in [0, 1) or a pair LO <= HI above 0"),
                                    nargs="+", metavar="Z", example="0.2")
    horizontal_flip: bool = _aug(False, "flip half the images left-right")
    vertical_flip: bool = _aug(False, "flip half the images upside down")
    fill_mode: str = _aug("nearest", "how points outside the image are filled", Choice(FILL_MODES))
    cval: float = _aug(0.0, "pixel value (0..255) for fill-mode constant", Interval(0, 255))
    random_crop: int = _aug(0, "pad by PIXELS and crop back at a random offset", Interval(0), metavar="PIXELS",
                            example="2")
    random_erasing: float = _aug(0.0, "probability of erasing a random rectangle", Interval(0, 1), metavar="P",
                                 example="0.5")

    def validate(self, places=None) -> object:
        check_values(self, places)
        return self

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
