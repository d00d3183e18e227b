"""Errors a user can act on.

Every error carries three parts: what was wrong, where (a file, a layer, an argument)
and how to fix it. The CLI prints ``error: <what> (<where>): <how to fix>`` and exits 2.
"""

from __future__ import annotations


class CnnlabError(Exception):
    """Base class: a problem with the user's input, data, spec or environment."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f": {self.fix}"
        return text


# The API's errors are also the built-in exceptions a Python user expects to catch (scikit-learn's
# habit): a bad value is a ValueError, a wrong type a TypeError, a missing file a FileNotFoundError.

class ConfigError(CnnlabError, ValueError):
    """An option or config-file key is unknown or has a bad value."""


class DataError(CnnlabError, ValueError):
    """A dataset is missing, corrupt, empty or inconsistent."""


class SpecError(CnnlabError, ValueError):
    """A model spec is invalid or does not fit the data."""


class ShapeError(SpecError):
    """A layer does not fit the shape it receives (a pooling larger than its input, merged branches of
    different shapes): the spec may fit other images, or other values of a searched setting."""


class RunError(CnnlabError, ValueError):
    """A run directory is missing or incomplete."""


class TrainingError(CnnlabError, RuntimeError):
    """Training could not go on (for example the loss became NaN)."""


class ArgumentTypeError(CnnlabError, TypeError):
    """An API argument of the wrong type (an int where a run or a source belongs)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file, folder or image that does not exist."""


class MissingModelFileError(SpecError, FileNotFoundError):
    """A model or weights file that does not exist."""


class MissingRunError(RunError, FileNotFoundError):
    """A run directory that does not exist."""


class CnnlabWarning(UserWarning):
    """Something the user should know that does not stop the command (dropped duplicates, a run
    that did not finish, skipped images). The CLI prints ``warning: <what> (<where>): <fix>``."""


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception from a library as a message quotes it: its first line, cut to ``limit``
    characters (its type's name when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def warn(what: str, where: str | None = None, fix: str | None = None) -> None:
    import warnings

    warnings.warn(CnnlabWarning(CnnlabError(what, where, fix).line()), stacklevel=2)
