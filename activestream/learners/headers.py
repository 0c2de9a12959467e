"""What an encoded image claims to be, read from its header before any decoding.

A small file can claim a huge image; decoders allocate by the claim. Everything here
reads only lengths, types and sizes, so refusing a decoding bomb costs next to nothing.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from activestream.errors import InvalidInput

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
# PNG colour type -> channels once decoded (a palette expands to RGB)
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# The chunks libspng needs to decode pixels. The rest never reach it: it would inflate a
# zTXt, iTXt or iCCP chunk (up to 64 MB each) that nothing here reads, and pyspng exposes
# none of libspng's options to skip them.
PNG_KEPT = frozenset((b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"))
PNG_CHUNK = struct.Struct(">I4s")  # a chunk's length and type
PNG_IEND = b"\0\0\0\0IEND\xaeB`\x82"  # IEND is empty: always these 12 bytes
# Markers of a JPEG frame header: SOF0-3, 5-7, 9-11, 13-15 (C4 is DHT, C8 reserved, CC DAC).
JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
JPEG_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM and RSTn carry no length field
# Cameras write under 20 segments before the frame header: the cap bounds the walk's cost.
JPEG_MAX_STEPS = 64
JPEG_FILL = re.compile(rb"\xff+")  # any number of 0xFF may pad a marker
WEBP_ANIMATED = 0x02  # VP8X flag


@dataclass(frozen=True)
class Header:
    """``fmt``: PNG, JPEG or WebP; ``channels`` as stored (a JPEG's components, a PNG's
    channels once a palette is expanded; 0 for WebP, which says only whether it has alpha);
    ``detail``: a PNG's colour type and bit depth, a JPEG's precision, WebP's VP8X flags."""

    fmt: str
    width: int
    height: int
    channels: int
    detail: tuple[int, ...] = ()


def read_header(data: bytes) -> Header:
    """The header of a PNG, JPEG or WebP image; ``InvalidInput("corrupt_image")`` for anything else.

    >>> read_header(b"RIFF\\x1a\\0\\0\\0WEBPVP8L\\x0d\\0\\0\\0\\x2f\\x09\\xc0\\x03\\0")
    Header(fmt='WebP', width=10, height=16, channels=0, detail=())
    """
    if data.startswith(PNG):
        return _png(data)
    if data.startswith(JPEG):
        return _jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    raise InvalidInput("corrupt_image", "not a PNG, JPEG or WebP image (unknown signature); send one of those")


def _png(data: bytes) -> Header:
    if len(data) < 33 or data[8:16] != b"\0\0\0\rIHDR":
        raise corrupt("PNG", "no header chunk")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if colour not in PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise corrupt("PNG", f"colour type {colour}, bit depth {depth}")
    return Header("PNG", width, height, PNG_CHANNELS[colour], (colour, depth))


def pixel_chunks(data: bytes, max_chunks: int) -> bytes:
    """``data`` up to its IEND chunk, without the chunks that do not hold pixels (CRCs kept).

    Reads only each chunk's length and type; returns ``data`` itself when nothing is dropped.
    """
    end = len(data)
    # the usual layout (IHDR, one IDAT, IEND) in one look: a third of the walk's cost
    if data.endswith(PNG_IEND) and end >= 57 and PNG_CHUNK.unpack_from(data, 33) == (end - 57, b"IDAT"):
        return data
    pos, kept, dropped = 8, [PNG], False
    for _ in range(max_chunks):
        if pos + 12 > end:
            raise corrupt("PNG", f"cut short at byte {pos}, before its IEND chunk")
        length, kind = PNG_CHUNK.unpack_from(data, pos)
        stop = pos + 12 + length
        if stop > end or not kind.isalpha():
            raise corrupt("PNG", f"chunk {kind!r} at byte {pos} is garbled or runs past the end ({length} bytes)")
        if kind in PNG_KEPT:
            kept.append(data[pos:stop])
        elif kind[0] & 0x20:  # ancillary (lower-case first letter): safe to drop
            dropped = True
        else:
            raise corrupt("PNG", f"unknown critical chunk {kind!r}")
        pos = stop
        if kind == b"IEND":
            return data if pos == end and not dropped else b"".join(kept)
    raise corrupt("PNG", f"over {max_chunks} chunks, more than encoders write for an image this size; re-encode it")


def _jpeg(data: bytes) -> Header:
    """The frame header (SOFn), reached the way libjpeg reads markers (segments skipped by
    their length), so it is the header it decodes."""
    pos, end = 2, len(data)
    for _ in range(JPEG_MAX_STEPS):
        pos = data.find(b"\xff", pos)  # libjpeg skips stray bytes between segments
        if pos < 0:
            raise corrupt("JPEG", "no frame header (SOF) marker")
        if pos + 1 < end and data[pos + 1] == 0xFF:
            pos = JPEG_FILL.match(data, pos).end() - 1
        if pos + 3 >= end:
            raise corrupt("JPEG", "cut short before its frame header (SOF)")
        marker, length = data[pos + 1], (data[pos + 2] << 8) | data[pos + 3]
        if marker == 0x00 or marker in JPEG_NO_LENGTH:  # FF00 is a stuffed byte, not a marker
            pos += 2
        elif marker in JPEG_SOF:
            if pos + 10 > end:
                raise corrupt("JPEG", "cut short inside its frame header (SOF)")
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            return Header("JPEG", width, height, components, (precision,))
        elif marker in (0xD8, 0xD9, 0xDA) or length < 2:
            raise corrupt("JPEG", f"marker 0x{marker:02X} at byte {pos} before any frame header (SOF), "
                                  f"or with a bad length")
        else:
            pos += 2 + length
    raise corrupt("JPEG", f"over {JPEG_MAX_STEPS} markers before the frame header (SOF); re-encode it")


def _webp(data: bytes) -> Header:
    """The first chunk's size: a VP8X canvas, a lossless VP8L or a lossy VP8 key frame.

    libwebp allocates an animation's canvas from VP8X before decoding any frame."""
    kind, body = data[12:16], data[20:]
    if kind == b"VP8X" and len(body) >= 10:
        flags = body[0]
        width, height = 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
        return Header("WebP", width, height, 0, (flags,))
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return Header("WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), 0)
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", body, 6)
        return Header("WebP", width & 0x3FFF, height & 0x3FFF, 0)
    raise corrupt("WebP", f"first chunk {kind!r} is not a readable VP8X, VP8L or VP8 header")


def corrupt(fmt: str, why: str) -> InvalidInput:
    return InvalidInput("corrupt_image", f"not a decodable {fmt} image: {why}")
