"""A read-only, seekable view of a gzip stream that never restarts from the first byte on a backward seek.

A gzip stream cannot be entered in the middle, and the members of a ``.tar.gz`` are read in name order,
which is not the order inside most archives (``tar czf`` stores directory order); the naive way
(``tarfile.extractfile`` on a ``gzip.GzipFile``, whose backward seeks restart from the first byte) makes
reading n members O(n²). :class:`GzipReader` continues decompressing when reading forward, and a seek
backwards resumes from the nearest saved decompressor state (``zlib`` ``copy()``, ~40 kB each), taken every
:data:`GZIP_CHECKPOINT_SPACING` bytes of output (the spacing doubles to keep at most
:data:`GZIP_MAX_CHECKPOINTS`, i.e. ≤ 40 MB per open archive per process). A random read then costs at most
one spacing of decompression. Measurements: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import bisect
import io
import zlib
from typing import IO, Any

__all__ = ["GZIP_CHECKPOINT_SPACING", "GZIP_MAX_CHECKPOINTS", "GzipReader"]

#: Least distance (uncompressed bytes) between two saved states of a gzip stream; doubles whenever more than
#: :data:`GZIP_MAX_CHECKPOINTS` would be kept, so memory stays ≤ 1024 × 40 kB per open ``.tar.gz``.
GZIP_CHECKPOINT_SPACING = 64 << 10
GZIP_MAX_CHECKPOINTS = 1024


class GzipReader(io.RawIOBase):
    """A read-only, seekable view of the uncompressed content of a gzip file (concatenated members and zero
    padding are accepted, as ``gzip`` does).

    Unlike :class:`gzip.GzipFile`, a seek backwards does not restart from the beginning: decompression
    resumes from the nearest saved state (a copy of the ``zlib`` decompressor, ~40 kB) at or before the
    target. States are saved as the stream is first decompressed, every ``spacing`` bytes of output; when
    more than ``max_checkpoints`` would be kept, every other one is dropped and the spacing doubles. So a
    random read costs at most ``spacing`` bytes of decompression, and memory stays bounded.
    """

    _CHUNK = 64 << 10  # compressed bytes read at a time
    _OUT = 32 << 10  # most bytes inflated per call (the finest spacing of saved states)

    def __init__(
        self,
        fileobj: IO[bytes],
        *,
        spacing: int = GZIP_CHECKPOINT_SPACING,
        max_checkpoints: int = GZIP_MAX_CHECKPOINTS,
    ) -> None:
        super().__init__()
        self._raw = fileobj
        self._spacing = max(1, int(spacing))
        self._max_checkpoints = max(2, int(max_checkpoints))
        self._cp_upos: list[int] = []  # uncompressed offsets of the saved states (sorted)
        self._cp: list[tuple[int, Any]] = []  # (compressed offset, decompressor copy)
        self._rewind()

    # position bookkeeping: the decompressor has produced ``_out`` bytes; ``_buf[_bufpos:]`` are not yet read
    def _rewind(self) -> None:
        self._raw.seek(0)
        self._d: Any = None  # zlib decompressor of the current gzip member; None between members
        self._pending = b""  # compressed bytes not yet given to the decompressor
        self._out = 0
        self._buf = b""
        self._bufpos = 0

    def _restore(self, i: int) -> None:
        cpos, state = self._cp[i]
        self._raw.seek(cpos)
        self._d = state.copy()
        self._pending = b""
        self._out = self._cp_upos[i]
        self._buf = b""
        self._bufpos = 0

    def _checkpoint(self) -> None:
        last = self._cp_upos[-1] if self._cp_upos else 0
        if self._out - last < self._spacing:
            return
        # the decompressor has consumed everything but ``_pending``: resume by feeding it from there
        self._cp_upos.append(self._out)
        self._cp.append((self._raw.tell() - len(self._pending), self._d.copy()))
        if len(self._cp) > self._max_checkpoints:
            self._cp_upos = self._cp_upos[1::2]
            self._cp = self._cp[1::2]
            self._spacing *= 2

    def _inflate(self) -> bytes:
        """The next piece of output; ``b""`` at the end of the stream."""
        while True:
            if self._d is not None and self._d.eof:
                self._pending = self._d.unused_data
                self._d = None
            if not self._pending:
                self._pending = self._raw.read(self._CHUNK)
                if not self._pending:
                    if self._d is not None:
                        raise EOFError("compressed stream ends before its end-of-stream marker (truncated)")
                    return b""
            if self._d is None:  # between gzip members: skip zero padding, then start the next member
                self._pending = self._pending.lstrip(b"\x00")
                if not self._pending:
                    continue
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = self._d.decompress(self._pending, self._OUT)
            self._pending = self._d.unconsumed_tail
            if out:
                self._out += len(out)
                if not self._d.eof:
                    self._checkpoint()
                return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._out - (len(self._buf) - self._bufpos)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("GzipReader cannot seek from the end")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        cur = self.tell()
        if offset == cur:
            return cur
        i = bisect.bisect_right(self._cp_upos, offset) - 1
        start = self._cp_upos[i] if i >= 0 else 0
        if not start <= cur <= offset:  # going back, or a saved state is nearer than where we are
            if i >= 0:
                self._restore(i)
            else:
                self._rewind()
        self._skip(offset)
        return self.tell()

    def _skip(self, target: int) -> None:
        while True:
            here = self.tell()
            if here >= target:
                return
            avail = len(self._buf) - self._bufpos
            if avail == 0:
                self._buf, self._bufpos = self._inflate(), 0
                if not self._buf:
                    return  # past the end: reads return b""
                continue
            self._bufpos += min(avail, target - here)

    def read(self, size: int | None = -1) -> bytes:
        parts = []
        need = -1 if size is None or size < 0 else size
        while need != 0:
            if self._bufpos >= len(self._buf):
                self._buf, self._bufpos = self._inflate(), 0
                if not self._buf:
                    break
            end = len(self._buf) if need < 0 else min(len(self._buf), self._bufpos + need)
            parts.append(self._buf[self._bufpos : end])
            if need > 0:
                need -= end - self._bufpos
            self._bufpos = end
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            self._cp, self._cp_upos = [], []
        super().close()
