"""Data larger than memory: folder and CSV images decoded once into an on-disk uint8 cache, read a
batch at a time.

The cache of a list of image files is one raw file of uint8 (N, H, W, C) rows plus ``meta.json``,
in ``$CNNLAB_CACHE/decoded/<key>/`` (default ``~/.cache/cnnlab/decoded``). The key hashes the files'
paths, sizes and modification times, the image size, the colour mode and how bad files are handled,
so a changed file, size or mode builds a new cache, and the same ones reuse it. A cache is built in
a temporary folder and renamed into place when complete: an interrupted build leaves nothing that
could be mistaken for a cache.

``DiskImages`` reads rows with ``os.preadv`` into a fresh array: only the rows asked for are in the
process's memory, and the operating system's page cache keeps the file's hot parts. Splits of it
are views (``subset``), never copies. Training takes its batches from it (engine/loop.py), in a
background thread that reads the next batch while the current one trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from .images import available_memory, printable

CACHE_MODES = ("auto", "memory", "disk")
CHUNK = 512  # images decoded (in threads) and written per step of a build
DATA_FILE, META_FILE = "images.u8", "meta.json"


def cache_root() -> Path:
    base = os.environ.get("CNNLAB_CACHE")
    if base:
        return Path(base) / "decoded"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / "decoded"


def choose(mode: str, n: int, size: tuple[int, int], channels: int) -> str:
    """'memory' or 'disk': ``auto`` takes the disk when the decoded images would need more than
    half of the memory that is free."""
    if mode != "auto":
        return mode
    need = n * size[0] * size[1] * channels
    free = available_memory()
    return "disk" if free is not None and need > 0.5 * free else "memory"


class DiskImages:
    """uint8 images (N, H, W, C) in a raw file, read only when indexed.

    ``x[i]``, ``x[a:b]``, ``x[::k]`` and ``x[index_array]`` return NumPy arrays of those rows;
    ``subset(idx)`` is a view of some rows (a split); ``np.asarray(x)`` reads every row.
    """

    def __init__(self, path: str | Path, item_shape: tuple, rows: np.ndarray | None = None, n_file: int | None = None):
        self.path = Path(path)
        self.item_shape = tuple(int(v) for v in item_shape)
        self.row_bytes = int(np.prod(self.item_shape))
        self.n_file = n_file if n_file is not None else os.path.getsize(self.path) // max(1, self.row_bytes)
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self._fd: int | None = None

    # ------------------------------------------------------------------ array-like
    @property
    def shape(self) -> tuple:
        return (len(self), *self.item_shape)

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.n_file if self.rows is None else len(self.rows)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {key} is out of range for {len(self)} images")
            out = self.take(np.array([i]))[0]
        elif isinstance(key, slice):
            out = self.take(np.arange(len(self))[key])
        else:
            idx = np.asarray(key)
            out = self.take(np.flatnonzero(idx) if idx.dtype == bool else idx)
        if not rest:
            return out
        return out[rest] if out.ndim == 3 else out[(slice(None), *rest)]  # one image, or rows of them

    def __array__(self, dtype=None, copy=None):
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={self.shape})"

    def subset(self, idx) -> DiskImages:
        idx = np.asarray(idx, np.int64)
        return DiskImages(self.path, self.item_shape, idx if self.rows is None else self.rows[idx], self.n_file)

    # ------------------------------------------------------------------ reading
    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The rows ``idx`` (positions in this view) as a new uint8 array; runs of consecutive rows
        are read in one call."""
        idx = np.asarray(idx, np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"an index is out of range for {len(self)} images")
        idx = np.where(idx < 0, idx + len(self), idx)
        rows = idx if self.rows is None else self.rows[idx]
        out = np.empty((len(rows), *self.item_shape), np.uint8)
        flat = out.reshape(len(rows), -1)
        fd, rb = self._file(), self.row_bytes
        start = 0
        while start < len(rows):  # a run: consecutive rows in the file, consecutive in the output
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1 and (end - start) * rb < (64 << 20):
                end += 1
            want = (end - start) * rb
            got = os.preadv(fd, [memoryview(flat[start:end]).cast("B")], int(rows[start]) * rb)  # type: ignore[arg-type]
            if got != want:
                raise DataError(f"the decoded-image cache is shorter than expected ({got} of {want} bytes)",
                                printable(self.path), "delete the cache folder; it is rebuilt on the next run")
            start = end
        return out


def chunk_digest(data) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


VERIFY_ALL_BYTES = 4 << 30  # caches up to this size are checked whole on reuse; larger ones by sample
VERIFY_SAMPLE = 32


def verify_chunks(path: Path, row_bytes: int, chunks: list) -> str | None:
    """Whether the cache's bytes are those it was built with: each chunk's digest, recorded at
    build time, against the file now (every chunk of a cache up to VERIFY_ALL_BYTES, else the first,
    the last and a seeded sample). None when they match, else what differs."""
    starts = np.cumsum([0] + [int(n) for n, _ in chunks])
    total = int(starts[-1]) * row_bytes
    picks: list[int] | range = range(len(chunks))
    if total > VERIFY_ALL_BYTES and len(chunks) > VERIFY_SAMPLE:
        rng = np.random.default_rng(len(chunks))
        picks = sorted({0, len(chunks) - 1, *rng.choice(len(chunks), VERIFY_SAMPLE - 2, replace=False).tolist()})
    with open(path, "rb") as f:
        for k in picks:
            f.seek(int(starts[k]) * row_bytes)
            want = int(chunks[k][0]) * row_bytes
            data = f.read(want)
            if len(data) != want or chunk_digest(data) != chunks[k][1]:
                return f"images {int(starts[k]):,} to {int(starts[k + 1]) - 1:,} changed since it was written"
    return None


def files_key(paths: list[Path], size, color_mode: str, on_bad: str) -> str:
    """The cache's name: the files' paths, sizes, modification and change times, the image size,
    colour mode and bad-file rule. The change time (ctime) moves whenever a file is rewritten, also
    when its modification time is set back (``touch -r``, ``cp -p``), which no one can fake."""
    h = hashlib.sha256(f"{tuple(size)}|{color_mode}|{on_bad}|v2\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n"
                     .encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{os.path.abspath(p)}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def read_cached(paths: list[Path], size: tuple[int, int], color_mode: str, on_bad: str, quiet: bool = False):
    """The files decoded into the disk cache (built now, or found from an earlier run): a
    ``ReadResult`` whose ``x`` is a DiskImages."""
    from .images import ReadResult, read_images

    channels = 1 if color_mode == "grayscale" else 3
    root = cache_root()
    folder = root / files_key(paths, size, color_mode, on_bad)
    meta_path = folder / META_FILE
    if meta_path.is_file():
        problem: str | None = "its files are incomplete"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            x = DiskImages(folder / DATA_FILE, (size[0], size[1], channels), n_file=meta["n"])
            if os.path.getsize(folder / DATA_FILE) == meta["n"] * x.row_bytes:
                problem = verify_chunks(folder / DATA_FILE, x.row_bytes, meta["chunks"])
                if problem is None:
                    return ReadResult(x, tuple(size), color_mode, np.asarray(meta["kept"], np.int64),
                                      [tuple(b) for b in meta["bad"]])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        from ..errors import warn

        warn(f"the decoded-image cache is damaged ({problem}); decoding the images again", printable(folder),
             "nothing to do: the cache is rebuilt now")
        shutil.rmtree(folder, ignore_errors=True)  # damaged: build it again
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{folder.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot create the decoded-image cache: {e.strerror}", str(root),
                        "set $CNNLAB_CACHE to a writable folder with room for the decoded images, "
                        "or use --cache memory") from None
    kept, bad, chunks, t0, last = [], [], [], time.perf_counter(), 0.0
    try:
        with open(tmp / DATA_FILE, "wb") as f:
            for i in range(0, len(paths), CHUNK):
                part = paths[i:i + CHUNK]
                try:
                    r = read_images(part, size, color_mode, on_bad)
                except DataError:
                    if on_bad == "error":
                        raise
                    r = None  # with --on-bad-image skip, a chunk of only bad files is left out whole
                if r is None:
                    bad += [(printable(p), "cannot be read as an image") for p in part]
                    continue
                data = np.ascontiguousarray(r.x).data
                f.write(data)
                chunks.append([len(r.x), chunk_digest(data)])
                kept += (r.kept + i).tolist()
                bad += r.bad
                now = time.perf_counter()
                if not quiet and (now - last > 2 or i + CHUNK >= len(paths)):
                    done = min(len(paths), i + CHUNK)
                    rate = done / max(now - t0, 1e-9)
                    print(f"decoding images into the disk cache: {done:,}/{len(paths):,} ({rate:,.0f}/s)",
                          file=sys.stderr, flush=True)
                    last = now
        (tmp / META_FILE).write_text(json.dumps({"n": len(kept), "kept": kept, "bad": bad, "size": list(size),
                                                  "color_mode": color_mode, "chunks": chunks}), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    x = DiskImages(folder / DATA_FILE, (size[0], size[1], channels), n_file=len(kept))
    return ReadResult(x, tuple(size), color_mode, np.asarray(kept, np.int64), bad)


def read_any(paths: list[Path], size, color_mode: str, on_bad: str, cache: str = "memory", quiet: bool = False):
    """Image files decoded into memory, or (``cache`` 'disk', or 'auto' when they would not fit
    comfortably) into the disk cache: a ReadResult either way."""
    from .images import read_images, resolve_size_and_mode

    if cache == "memory":
        return read_images(paths, size, color_mode, on_bad)
    size, color_mode, _ = resolve_size_and_mode(paths, size, color_mode, on_bad)
    if choose(cache, len(paths), size, 1 if color_mode == "grayscale" else 3) == "memory":
        return read_images(paths, size, color_mode, on_bad)
    return read_cached(paths, size, color_mode, on_bad, quiet)
