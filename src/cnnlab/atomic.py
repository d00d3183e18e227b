"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file
(or nothing) in place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # say which file could not be written, not a temporary name
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename in (tmp, None) and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        where = getattr(e, "where", None)
        if isinstance(where, str) and tmp in where:  # a CnnlabError about the file
            e.where = where.replace(tmp, str(path))  # type: ignore[attr-defined]  # the file asked for, not ours
            e.args = (e.line(),)  # type: ignore[attr-defined]
        code = storage_errno(e, path.parent) if isinstance(e, Exception) and not isinstance(e, OSError) else None
        if code is not None:  # a library's own error for a full or read-only disk: the OSError it is
            raise OSError(code, os.strerror(code), str(path)) from None
        raise
    return path


# What libraries say when the file system fails them: safetensors' SafetensorError carries the OS's
# text ("No space left on device (os error 28)"); torch.save's zip writer says only "unexpected pos"
# when a write came up short.
_STORAGE_TEXTS = {"no space left on device": errno.ENOSPC, "os error 28": errno.ENOSPC,
                  "disk quota exceeded": errno.EDQUOT, "os error 122": errno.EDQUOT,
                  "read-only file system": errno.EROFS, "os error 30": errno.EROFS,
                  "permission denied": errno.EACCES, "os error 13": errno.EACCES}


def storage_errno(e: Exception, folder: Path) -> int | None:
    """The errno a library's exception stands for, when it is a file-system failure; else None."""
    text = str(e).lower()
    for words, code in _STORAGE_TEXTS.items():
        if words in text:
            return code
    if "unexpected pos" in text:  # a short write: a full disk, unless the disk has room (then I/O)
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        return errno.ENOSPC if free < (64 << 20) else errno.EIO
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write_with(path, _w)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_npy(path: str | os.PathLike, array) -> Path:
    """A NumPy array as a .npy file (never pickled objects)."""
    import numpy as np

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)

    return write_with(path, _w)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
