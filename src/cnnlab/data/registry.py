"""The data-source registry (as timm registers its models): each kind of source registers where
its loader is defined (``data/builtin.py``, ``data/files.py``); ``load_source``, ``cnnlab
datasets``, the source help and the "did you mean" hint read ``SOURCES``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceKind:
    """One kind of data source.

    ``load(path, opts, class_names, require_labels, on_missing) -> Dataset``: ``path`` is what
    follows ``name:`` (None for a named built-in set); ``opts`` the DataOptions; ``class_names`` the
    names from ``--class-names`` (resolved), which a loader with ``reads_class_names`` uses
    itself; ``on_missing='skip'`` leaves out listed files that do not exist.
    """

    name: str
    load: Callable
    title: str  # one line for `cnnlab datasets`
    takes_path: bool = False  # written NAME:PATH (else the name alone is the source)
    claims: Callable[[Path], bool] | None = None  # a bare path this kind reads (a folder, a .csv file)
    reads_class_names: bool = False  # the loader applies --class-names itself
    in_memory: bool = False  # arrays resized and converted to --image-size / --color-mode after loading
    translates: bool = False  # the loader gives class names in the --labels language itself
    available: Callable[[], tuple[bool, str]] | None = None  # a built-in set: (found, where or how to get it)

    @property
    def usage(self) -> str:
        return f"{self.name}:PATH" if self.takes_path else self.name


SOURCES: dict[str, SourceKind] = {}


def register_source(kind: SourceKind) -> SourceKind:
    SOURCES[kind.name] = kind
    return kind
