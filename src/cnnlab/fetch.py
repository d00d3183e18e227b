"""Downloads that arrive whole or not at all: a progress bar (bytes, rate, ETA), HTTP Range to
resume a partial file, an MD5 or SHA-256 check, and a rename into place only after the check.

``fetch(url, dest, digest)`` writes ``dest``. While it downloads, the bytes go to ``dest.part``
beside it: a process that is killed leaves that file, and the next call resumes it with a Range
request. Every failure it reports (no network, an HTTP error, a truncated body after its retries,
a hash mismatch, a full disk, a file of the wrong kind) removes the partial file and raises
FetchError with one line: what, where, and how to place the file by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

CHUNK = 1 << 16
RETRIES = 3  # a body cut short is asked for again from where it stopped, this many times


class FetchError(DataError):
    """A download that did not arrive whole; the partial file is gone."""


@dataclass(frozen=True)
class Digest:
    """A published hash: ``algorithm`` is md5 or sha256 (Keras' file_hash: 32 hex digits are MD5,
    64 SHA-256)."""
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str, where: str) -> Digest:
        """``HEX`` (by its length) or ``sha256=HEX`` / ``md5=HEX`` (pip's URL fragment)."""
        algo, _, value = text.rpartition("=")
        value = value.strip().lower()
        algo = algo.strip().lower() or {32: "md5", 64: "sha256"}.get(len(value), "")
        want = {"md5": 32, "sha256": 64}
        if algo not in want or not re.fullmatch(f"[0-9a-f]{{{want.get(algo, 0)}}}", value):
            raise DataError(f"'{text}' is not a hash", where,
                            "write #sha256= and 64 hex digits, or #md5= and 32 (pip's form)")
        return cls(algo, value)

    def of_file(self, path: Path) -> str:
        h = hashlib.new(self.algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def __str__(self) -> str:
        return f"{self.algorithm}={self.hex}"


def split_url(text: str, where: str) -> tuple[str, Digest | None]:
    """``URL#sha256=HEX`` -> the URL and its digest (None without a fragment)."""
    url, _, fragment = text.partition("#")
    return url, Digest.parse(fragment, where) if fragment else None


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Bar:
    """One line on stderr: received / total, rate and ETA; redrawn in place on a terminal (at most
    every 0.2 s), else written once at the end."""

    def __init__(self, name: str, total: int | None, start: int, out=None, quiet: bool = False):
        self.name, self.total, self.start, self.got = name, total, start, start
        self.out = out or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.t0 = self.last = time.perf_counter()

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-6)
        rate = (self.got - self.start) / dt
        size = f"{_human(self.got)} / {_human(self.total)}" if self.total else _human(self.got)
        pct = f" {100 * self.got / self.total:5.1f}%" if self.total else ""
        eta = f", ETA {max(0.0, (self.total - self.got) / rate):.0f} s" if self.total and rate > 0 else ""
        resumed = f" (resumed at {_human(self.start)})" if self.start else ""
        return f"{self.name}:{pct} {size} at {_human(rate)}/s{eta}{resumed}"

    def update(self, n: int) -> None:
        self.got += n
        now = time.perf_counter()
        if self.tty and not self.quiet and now - self.last >= 0.2:
            self.last = now
            print("\r" + self.line(), end="", file=self.out, flush=True)

    def done(self) -> None:
        if not self.quiet:
            print(("\r" if self.tty else "") + self.line(), file=self.out, flush=True)


@contextlib.contextmanager
def file_lock(dest: Path):
    """One process at a time downloads ``dest`` (an flock on ``dest.lock``); the others wait, then
    find the file in place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network file systems): no waiting
            pass
        yield


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http, https, file: checked by fetch)


def _total(response, offset: int) -> tuple[int | None, bool]:
    """The whole file's size (None when the server does not say) and whether the server resumes."""
    if offset and getattr(response, "status", 200) == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == offset:
            return (int(m.group(2)) if m.group(2) != "*" else None), True
    length = response.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), False


def fetch(url: str, dest: Path, digest: Digest | None = None, *, what: str = "file", by_hand: str = "",
          timeout: float = 30.0, quiet: bool = False, check=None) -> Path:
    """Download ``url`` into ``dest`` (the folder is made). ``digest``: the published hash, checked
    before the rename; ``check(path)``: raises DataError when the file is not of the kind wanted
    (e.g. not HDF5); ``by_hand``: how a user places the file without this download."""
    scheme = urllib.parse.urlsplit(url).scheme
    hand = by_hand or f"download it elsewhere and copy it to {dest}"
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"cannot download {url!r}: only http://, https:// and file:// URLs", what, hand)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(url, part, what, hand, timeout, quiet)
        if digest is not None:
            got = digest.of_file(part)
            if got != digest.hex:
                raise FetchError(f"{url} has {digest.algorithm} {got}, but {digest.hex} was published", what,
                                 "the file changed or the download was altered: check the URL or the mirror; "
                                 "nothing was kept")
        if check is not None:
            check(part)
        os.replace(part, dest)
    except OSError as e:  # the disk: full, read-only, no permission
        _remove(part)
        raise FetchError(f"cannot write {dest}: {e.strerror or e}", what,
                         f"free space or choose another cache folder ($CNNLAB_HOME); {hand}") from None
    except BaseException as e:
        if not isinstance(e, (KeyboardInterrupt, SystemExit)):  # killed: the next call resumes the part
            _remove(part)
        raise
    return dest


def _download(url: str, part: Path, what: str, hand: str, timeout: float, quiet: bool) -> None:
    for attempt in range(RETRIES + 1):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the part is already whole (or bigger): start again
                _remove(part)
                continue
            raise FetchError(f"{url} answered HTTP {e.code} {e.reason}", what, hand) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise FetchError(f"cannot reach {url} ({reason})", what, hand) from None
        with response:
            total, resumed = _total(response, offset)
            bar = Bar(part.name.removesuffix(".part"), total, offset if resumed else 0, quiet=quiet)
            with open(part, "ab" if resumed else "wb") as f:
                try:
                    while block := response.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
                except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                    if attempt == RETRIES:
                        raise FetchError(f"{url} stopped after {_human(bar.got)} ({e})", what, hand) from None
                    continue
        if total is None or bar.got == total:
            bar.done()
            return
        if bar.got > total or attempt == RETRIES:
            raise FetchError(f"{url} sent {_human(bar.got)} of {_human(total)} (truncated, {attempt + 1} tries)",
                             what, hand)
    raise FetchError(f"{url} could not be resumed", what, hand)

