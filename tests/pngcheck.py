"""A small PNG reader (stdlib zlib and struct only), for asserting what a screenshot shows.

Reads 8-bit greyscale, RGB and RGBA images without interlacing, which is what
headless chromium writes; anything else is refused rather than misread.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 6: 4}  # colour type → bytes per pixel at bit depth 8


@dataclass(frozen=True)
class Image:
    """A decoded image: size, and each row's pixels as bytes of `channels` per pixel."""

    width: int
    height: int
    channels: int
    rows: tuple[bytes, ...]

    def colours(self, step: int = 1) -> Counter[tuple[int, ...]]:
        """How many pixels (every `step`-th of every `step`-th row) have each RGB colour."""
        n = self.channels
        seen: Counter[tuple[int, ...]] = Counter()
        for row in self.rows[::step]:
            for x in range(0, self.width, step):
                pixel = row[x * n:x * n + n]
                seen[tuple(pixel[:3]) if n >= 3 else (pixel[0],) * 3] += 1
        return seen


def read_png(path: Path) -> Image:
    """Decode `path`.

    Raises:
        ValueError: not a PNG, or a kind this reader does not handle.
    """
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    pos, header, idat = len(SIGNATURE), b"", []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour {colour}, interlace {interlace}")
    channels = _CHANNELS[colour]
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError("image data does not match the header's size")
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous,
                        channels)
        rows.append(row)
        previous = row
    return Image(width, height, channels, tuple(rows))


def _unfilter(kind: int, row: bytearray, up: bytes, bpp: int) -> bytes:
    if kind == 0:
        return bytes(row)
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(row, up, strict=True))
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + ((left + up[i]) >> 1)) & 0xFF
        elif kind == 4:
            corner = up[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + _paeth(left, up[i], corner)) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter {kind}")
    return bytes(row)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c
