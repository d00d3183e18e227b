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


class ConfigError(CnnlabError):
    """An option or config-file key is unknown or has a bad value."""


class DataError(CnnlabError):
    """A dataset is missing, corrupt, empty or inconsistent."""


class SpecError(CnnlabError):
    """A model spec is invalid or does not fit the data."""


class RunError(CnnlabError):
    """A run directory is missing or incomplete."""


class TrainingError(CnnlabError):
    """Training could not go on (for example the loss became NaN)."""


class CnnlabWarning(UserWarning):
    """Something the user should know that does not stop the command (dropped duplicates, a run
    that did not finish, skipped images). The CLI prints ``warning: <what> (<where>): <fix>``."""


def warn(what: str, where: str | None = None, fix: str | None = None) -> None:
    import warnings

    warnings.warn(CnnlabWarning(CnnlabError(what, where, fix).line()), stacklevel=2)
