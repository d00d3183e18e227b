"""IDX files (the MNIST format), raw or gzip-compressed, parsed with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type codes -> numpy dtypes (big-endian on disk).
_DTYPES: dict[int, type | str] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file: {e.strerror}", str(path),
                        "check the path and its permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise DataError("corrupt gzip data in IDX file", str(path),
                            "delete the file and fetch it again (cnnlab download NAME)") from None
    return raw


def parse_idx(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array; every inconsistency is a DataError."""
    fix = "delete the file and fetch it again (cnnlab download NAME)"
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError("not an IDX file (bad magic number)", where, fix)
    code, ndim = data[2], data[3]
    if code not in _DTYPES or ndim == 0:
        raise DataError(f"not an IDX file (type 0x{code:02x}, {ndim} dimensions)", where, fix)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError("truncated IDX header", where, fix)
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"IDX file holds {len(data) - header} data bytes but its header "
                        f"{list(dims)} needs {expected}", where, fix)
    # A writable, native-endian copy (frombuffer views of bytes are read-only).
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path: str | Path, arr: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as IDX (gzip when the name ends in .gz). Used by tests and export."""
    from ..atomic import write_bytes

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = head + arr.tobytes()
    path = Path(path)
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6)
    write_bytes(path, payload)
