"""A corpus of hostile and odd input images, generated in memory (no files are shipped).

Each :class:`Case` names one *kind* of input a public Space can receive, the file name a user
(or an attacker) would upload it under, a deterministic generator of its bytes, and what
:func:`app.images.prepare_image` (UI defaults) must do with it:

* ``expect="ok"``: it is converted to an 8-bit RGB array; ``hint`` (when not empty) must appear in
  one of the notices, because the user should know about the conversion;
* ``expect="error"``: it ends with a one-line :class:`app.errors.ImageInputError`; ``hint`` must
  appear in the message.

Used by ``tests/test_hostile_images.py`` and ``scripts/robustness_report.py``; keep it free of
pytest so the report script can import it. Everything here is small (the largest generated file
is ~0.3 MB) and fast (the whole corpus builds in well under a second).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Expect = Literal["ok", "error"]


@dataclass(frozen=True)
class Case:
    """One kind of hostile input."""

    kind: str
    filename: str
    make: Callable[[], bytes]
    expect: Expect
    hint: str
    what: str

    def data(self) -> bytes:
        return _built(self.kind)


# --------------------------------------------------------------------------------- helpers


def _noise(w: int, h: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _rgb(w: int = 48, h: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(_noise(w, h, 3, seed), "RGB")


def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    """Encode a Pillow image to bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(ctype: bytes, payload: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` overrides the correct checksum (to forge a bad one)."""
    if crc is None:
        crc = zlib.crc32(ctype + payload)
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc & 0xFFFFFFFF)


def png_raw(
    width: int,
    height: int,
    bit_depth: int,
    color_type: int,
    idat: bytes,
    interlace: int = 0,
    extra: bytes = b"",
) -> bytes:
    """A PNG file from an already-compressed IDAT payload (header fields are not checked)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_from_array(arr: np.ndarray, color_type: int, interlace: bool = False) -> bytes:
    """Hand-written PNG encoder (filter 0) for what Pillow cannot write: 16-bit RGB(A), Adam7."""
    bit_depth = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w = arr.shape[:2]
    be = arr.astype(">u2") if bit_depth == 16 else arr

    def rows(a: np.ndarray) -> bytes:
        if a.size == 0:
            return b""
        flat = a.reshape(a.shape[0], -1).view(np.uint8)
        return b"".join(b"\x00" + r.tobytes() for r in flat)

    if not interlace:
        raw = rows(be)
    else:  # Adam7: (x0, y0, dx, dy) of the seven passes
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(rows(np.ascontiguousarray(be[y0::dy, x0::dx])) for x0, y0, dx, dy in passes)
    return png_raw(w, h, bit_depth, color_type, zlib.compress(raw, 9), int(interlace))


def _zero_rows_zlib(row_bytes: int, rows: int) -> bytes:
    """zlib stream of ``rows`` all-zero PNG scanlines, compressed without holding them in memory."""
    comp = zlib.compressobj(9)
    row = bytes(row_bytes + 1)
    block = row * max(1, (1 << 20) // len(row))
    per_block = len(block) // len(row)
    out = []
    done = 0
    while done < rows:
        n = min(per_block, rows - done)
        out.append(comp.compress(block if n == per_block else row * n))
        done += n
    out.append(comp.flush())
    return b"".join(out)


def _small_jpeg(**kw: object) -> bytes:
    return save(_rgb(64, 48), "JPEG", quality=90, **kw)


def _patch_jpeg_sof(data: bytes, height: int, width: int) -> bytes:
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def _with_exif_segment(jpeg: bytes, app1_payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI."""
    seg = b"\xff\xe1" + struct.pack(">H", len(app1_payload) + 2) + app1_payload
    return jpeg[:2] + seg + jpeg[2:]


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _gif_1px_frames(screen_w: int, screen_h: int, frames: int) -> bytes:
    """A GIF whose logical screen is ``screen_w``×``screen_h`` with ``frames`` 1×1 frames."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x80, 0, 0))
    out += b"\x00\x00\x00\xff\xff\xff"  # 2-colour global palette
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control extension, 0.1 s
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one pixel
    return bytes(out + b"\x3b")


def _animated(fmt: str, frames: int = 3, **kw: object) -> bytes:
    imgs = [_rgb(32, 24, seed=i) for i in range(frames)]
    return save(imgs[0], fmt, save_all=True, append_images=imgs[1:], duration=100, loop=0, **kw)


def _tiff_multipage() -> bytes:
    return save(_rgb(32, 24), "TIFF", save_all=True, append_images=[_rgb(16, 16, 1), _rgb(8, 8, 2)])


def _float_tiff(values: np.ndarray) -> bytes:
    return save(Image.fromarray(values.astype(np.float32), "F"), "TIFF")


def _svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100000" '
        b'height="100000"><script>alert(1)</script><rect width="10" height="10"/></svg>\n'
    )


def _heic_like() -> bytes:
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    box = struct.pack(">I", 8 + len(ftyp) - 4) + ftyp
    rng = np.random.default_rng(7)
    return box + b"\x00\x00\x01\x00meta" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()


def _png_bad_crc() -> bytes:
    data = bytearray(save(_rgb(), "PNG"))
    i = data.index(b"IDAT")
    length = struct.unpack(">I", data[i - 4 : i])[0]
    data[i + 4 + length] ^= 0xFF  # first byte of IDAT's CRC
    return bytes(data)


def _png_idat_corrupt() -> bytes:
    data = bytearray(save(_rgb(), "PNG"))
    i = data.index(b"IDAT") + 4
    data[i + 10 : i + 40] = bytes(range(200, 230))  # CRC left stale too
    return bytes(data)


def _png_ihdr_bad_crc() -> bytes:
    data = bytearray(save(_rgb(), "PNG"))
    data[29] ^= 0x01  # IHDR CRC is bytes 29..32
    return bytes(data)


def _polyglot_png_zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload.html", "<script>alert(document.domain)</script>")
    return save(_rgb(), "PNG") + buf.getvalue()


def _polyglot_gif_script() -> bytes:
    gif = bytearray(save(_rgb(16, 16).convert("P"), "GIF"))
    comment = b"*/=1;alert(1);/*<script>alert(2)</script>"
    ext = b"\x21\xfe" + bytes([len(comment)]) + comment + b"\x00"
    i = gif.rindex(b"\x3b")
    return bytes(gif[:i] + ext + gif[i:]) + b"<?php system($_GET['c']); ?>"


def _jpeg_html_comment() -> bytes:
    return save(_rgb(), "JPEG", comment=b"<html><body onload=alert(1)>")


def _eps() -> bytes:
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
        b"(/etc/passwd) (r) file 100 string readstring pop print\nshowpage\n%%EOF\n"
    )


def _png_ztxt_bomb() -> bytes:
    text = zlib.compress(b"A" * (32 << 20), 9)  # 32 MB of text in ~32 kB
    ztxt = b"Comment\x00\x00" + text
    arr = _noise(16, 16)
    png = png_from_array(arr, 2)
    return png[:33] + png_chunk(b"zTXt", ztxt) + png[33:]


def _png_iccp_garbage() -> bytes:
    arr = _noise(16, 16)
    png = png_from_array(arr, 2)
    iccp = b"evil\x00\x00" + zlib.compress(b"\xde\xad\xbe\xef" * 64)
    return png[:33] + png_chunk(b"iCCP", iccp) + png[33:]


def _bmp_huge_header() -> bytes:
    data = bytearray(save(_rgb(8, 8), "BMP"))
    struct.pack_into("<ii", data, 18, 30000, 30000)
    return bytes(data)


def _tiff_huge_header() -> bytes:
    # little-endian TIFF: one IFD with ImageWidth/ImageLength = 60000, 8-bit grey, one tiny strip
    entries = [
        (256, 4, 1, 60000),  # ImageWidth (LONG)
        (257, 4, 1, 60000),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # Photometric BlackIsZero
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 60000),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16)


def _exif_garbage() -> bytes:
    rng = np.random.default_rng(3)
    payload = b"Exif\x00\x00II*\x00" + struct.pack("<I", 0xFFFFFF00) + rng.integers(
        0, 256, 600, dtype=np.uint8
    ).tobytes()
    return _with_exif_segment(_small_jpeg(), payload)


def _exif_ifd_loop() -> bytes:
    # IFD0 at offset 8 with one entry whose next-IFD pointer points back at itself
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 8)
    return _with_exif_segment(_small_jpeg(), b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd)


def _ppm_huge_header() -> bytes:
    return b"P6\n100000 100000\n255\n" + bytes(300)


def _pgm_16bit() -> bytes:
    arr = (np.arange(32 * 16, dtype=np.uint32).reshape(16, 32) * 120).astype(">u2")
    return b"P5\n32 16\n65535\n" + arr.tobytes()


def _png_bomb_valid_data() -> bytes:
    side = 20000  # 400 MP of mode "1" zeros: 50 MB raw, ~50 kB compressed
    return png_raw(side, side, 1, 0, _zero_rows_zlib(side // 8, side))


def _png_just_over_limit() -> bytes:
    # 8200 x 8000 = 65.6 MP: above our 64 MP limit but under Pillow's own 2x "error" threshold
    return png_raw(8200, 8000, 1, 0, _zero_rows_zlib(8200 // 8 + 1, 8000))


def _png_huge_header_tiny_data() -> bytes:
    return png_raw(50000, 50000, 8, 2, zlib.compress(b"\x00" * 64))


def _png_max_dims() -> bytes:
    return png_raw(2**31 - 1, 1, 8, 0, zlib.compress(b"\x00" * 64))


def _png_zero_width() -> bytes:
    return png_raw(0, 16, 8, 2, zlib.compress(b"\x00" * 64))


def _png_at_limit_short_data() -> bytes:
    # exactly 64 MP (allowed) but the pixel data stops after a few rows: Pillow fills the rest
    return png_raw(8000, 8000, 8, 0, zlib.compress(bytes(8001) * 4))


def _png_bad_colour_type() -> bytes:
    return png_raw(16, 16, 8, 7, zlib.compress(bytes(16 * 49)))


def _i16_png() -> bytes:
    a = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    return save(Image.fromarray(a, "I;16"), "PNG")


def _rgb16_png() -> bytes:
    a = (np.arange(32 * 24 * 3, dtype=np.uint32).reshape(24, 32, 3) * 28).astype(np.uint16)
    return png_from_array(a, 2)


def _rgba16_png() -> bytes:
    a = (np.arange(16 * 16 * 4, dtype=np.uint32).reshape(16, 16, 4) * 64).astype(np.uint16)
    a[..., 3] = 30000
    return png_from_array(a, 6)


def _palette_trns() -> bytes:
    img = _rgb(32, 32).convert("P")
    return save(img, "PNG", transparency=0)


def _la_png() -> bytes:
    a = np.stack([_noise(32, 32, 1), np.full((32, 32), 128, np.uint8)], axis=-1)
    return save(Image.fromarray(a, "LA"), "PNG")


def _rgba_png() -> bytes:
    a = np.concatenate([_noise(32, 32), np.full((32, 32, 1), 100, np.uint8)], axis=-1)
    return save(Image.fromarray(a, "RGBA"), "PNG")


def _mode1_png() -> bytes:
    return save(Image.fromarray(_noise(40, 40, 1) > 127).convert("1"), "PNG")


def _int32_tiff() -> bytes:
    a = np.linspace(-(2**31), 2**31 - 1, 32 * 16).reshape(16, 32).astype(np.int32)
    return save(Image.fromarray(a, "I"), "TIFF")


def _cmyk_tiff() -> bytes:
    return save(_rgb().convert("CMYK"), "TIFF")


def _avif() -> bytes:
    return save(_rgb(), "AVIF", quality=60)


def _webp() -> bytes:
    return save(_rgb(), "WEBP", quality=80)


def _jp2() -> bytes:
    return save(_rgb(), "JPEG2000")


def _ico() -> bytes:
    return save(_rgb(64, 64), "ICO", sizes=[(16, 16), (32, 32), (64, 64)])


def _tga() -> bytes:
    return save(_rgb(), "TGA")


def _qoi() -> bytes:
    return save(_rgb(), "QOI")


def _pcx() -> bytes:
    return save(_rgb(), "PCX")


def _strip(w: int, h: int) -> bytes:
    return save(Image.new("RGB", (w, h), (200, 30, 30)), "PNG")


# --------------------------------------------------------------------------------- the corpus

# fmt: off
CORPUS: tuple[Case, ...] = (
    # --- not an image at all
    Case("zero_bytes", "empty.png", lambda: b"", "error", "empty", "0-byte file"),
    Case("text_as_png", "photo.png", lambda: b"hello, I am a text file\n" * 20, "error", "not an image", "text with a .png name"),
    Case("text_file", "notes.txt", lambda: "Grüße — plain UTF-8 text\n".encode() * 10, "error", "not an image", "a .txt file"),
    Case("svg", "logo.svg", _svg, "error", "not an image", "SVG with a script (vector: not supported)"),
    Case("html_as_jpg", "cat.jpg", lambda: b"<html><script>alert(1)</script></html>", "error", "not an image", "HTML named .jpg"),
    Case("unknown_format", "data.xyz", lambda: np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error", "not an image", "4 kB of random bytes"),
    Case("heic_like", "IMG_0001.HEIC", _heic_like, "error", "", "HEIC ftyp box + garbage (no HEIF decoder)"),
    Case("eps_postscript", "figure.eps", _eps, "error", "", "EPS that reads /etc/passwd if Ghostscript ran"),
    # --- truncated / corrupted
    Case("png_truncated", "cut.png", lambda: save(_rgb(), "PNG")[:400], "error", "cannot decode", "PNG cut in its IDAT"),
    Case("jpeg_truncated", "cut.jpg", lambda: _small_jpeg()[:700], "error", "cannot decode", "baseline JPEG cut mid-scan"),
    Case("jpeg_header_only", "head.jpg", lambda: _small_jpeg()[:40], "error", "", "JPEG SOI + part of a segment"),
    Case("png_bad_crc", "crc.png", _png_bad_crc, "ok", "", "IDAT checksum flipped (Pillow skips IDAT CRCs; pixels intact)"),
    Case("png_idat_corrupt", "idat.png", _png_idat_corrupt, "error", "cannot decode", "bytes inside the zlib stream overwritten"),
    Case("png_ihdr_bad_crc", "crc2.png", _png_ihdr_bad_crc, "error", "", "IHDR checksum flipped"),
    Case("png_bad_colour_type", "ct7.png", _png_bad_colour_type, "error", "", "IHDR colour type 7 (undefined)"),
    Case("png_zero_width", "w0.png", _png_zero_width, "error", "", "IHDR width 0"),
    # --- decompression bombs and forged sizes (must be refused before decoding)
    Case("png_bomb_valid_data", "bomb.png", _png_bomb_valid_data, "error", "MP", "20000x20000 valid zeros, ~50 kB file"),
    Case("png_just_over_limit", "over.png", _png_just_over_limit, "error", "MP", "8200x8000 = 65.6 MP (over our 64 MP)"),
    Case("png_huge_header_tiny_data", "huge.png", _png_huge_header_tiny_data, "error", "MP", "IHDR 50000x50000, 64 bytes of data"),
    Case("png_max_dims", "max.png", _png_max_dims, "error", "MP", "IHDR width 2^31-1"),
    Case("png_at_limit_short_data", "limit.png", _png_at_limit_short_data, "ok", "downscaled", "exactly 64 MP (allowed), 110-byte file: 4 rows of data"),
    Case("gif_huge_screen", "huge.gif", lambda: _gif_1px_frames(65535, 65535, 1), "error", "MP", "GIF screen 65535x65535, 1x1 frame"),
    Case("jpeg_huge_sof", "huge.jpg", lambda: _patch_jpeg_sof(_small_jpeg(), 65500, 65500), "error", "MP", "JPEG SOF 65500x65500"),
    Case("bmp_huge_header", "huge.bmp", _bmp_huge_header, "error", "MP", "BMP header 30000x30000, 8x8 data"),
    Case("tiff_huge_header", "huge.tif", _tiff_huge_header, "error", "MP", "TIFF IFD 60000x60000, 16 bytes of data"),
    Case("ppm_huge_header", "huge.ppm", _ppm_huge_header, "error", "MP", "PPM 100000x100000, 300 bytes"),
    Case("png_ztxt_bomb", "text.png", _png_ztxt_bomb, "error", "cannot decode", "zTXt chunk inflating to 32 MB (Pillow caps text at 1 MB)"),
    # --- odd but legitimate images (converted, with a notice where the user should know)
    Case("png_1x1", "dot.png", lambda: _strip(1, 1), "ok", "", "1x1 RGB"),
    Case("png_3x100000", "strip_wide.png", lambda: _strip(100000, 3), "ok", "downscaled", "100000 wide x 3 high"),
    Case("png_100000x3", "strip_tall.png", lambda: _strip(3, 100000), "ok", "downscaled", "3 wide x 100000 high"),
    Case("png_rgba", "alpha.png", _rgba_png, "ok", "transparency", "RGBA, alpha 100"),
    Case("png_palette_trns", "pal.png", _palette_trns, "ok", "transparency", "palette + tRNS"),
    Case("png_la", "la.png", _la_png, "ok", "transparency", "grey + alpha (LA)"),
    Case("png_i16", "depth16.png", _i16_png, "ok", "16-bit", "16-bit grey (I;16)"),
    Case("png_rgb16", "rgb16.png", _rgb16_png, "ok", "", "16-bit RGB (hand-written)"),
    Case("png_rgba16", "rgba16.png", _rgba16_png, "ok", "transparency", "16-bit RGBA (hand-written)"),
    Case("png_mode1", "bw.png", _mode1_png, "ok", "greyscale", "1-bit black and white"),
    Case("png_interlaced", "adam7.png", lambda: png_from_array(_noise(37, 23), 2, interlace=True), "ok", "", "Adam7 interlaced"),
    Case("png_iccp_garbage", "icc.png", _png_iccp_garbage, "ok", "", "iCCP chunk with a garbage profile"),
    Case("apng_animated", "anim.png", lambda: _animated("PNG"), "ok", "animated", "APNG, 3 frames"),
    Case("gif_animated", "anim.gif", lambda: _animated("GIF"), "ok", "animated", "GIF, 3 frames"),
    Case("gif_many_frames", "frames.gif", lambda: _gif_1px_frames(4000, 4000, 2000), "ok", "animated", "GIF 4000x4000 screen, 2000 1x1 frames"),
    Case("webp", "photo.webp", _webp, "ok", "", "lossy WebP"),
    Case("webp_animated", "anim.webp", lambda: _animated("WEBP"), "ok", "animated", "animated WebP, 3 frames"),
    Case("avif", "photo.avif", _avif, "ok", "", "AVIF"),
    Case("jpeg2000", "photo.jp2", _jp2, "ok", "", "JPEG 2000"),
    Case("jpeg_progressive", "prog.jpg", lambda: _small_jpeg(progressive=True), "ok", "", "progressive JPEG"),
    Case("jpeg_cmyk", "print.jpg", lambda: save(_rgb().convert("CMYK"), "JPEG"), "ok", "CMYK", "CMYK JPEG"),
    Case("jpeg_grey", "grey.jpg", lambda: save(_rgb().convert("L"), "JPEG"), "ok", "greyscale", "greyscale JPEG"),
    Case("jpeg_exif_rotated", "phone.jpg", lambda: _small_jpeg(exif=_exif(6)), "ok", "EXIF orientation", "EXIF orientation 6 (90° CW)"),
    Case("jpeg_exif_orientation_9", "bad_orient.jpg", lambda: _small_jpeg(exif=_exif(9)), "ok", "", "EXIF orientation 9 (undefined)"),
    Case("jpeg_exif_garbage", "exif.jpg", _exif_garbage, "ok", "", "APP1 Exif with a wild IFD offset + random bytes"),
    Case("jpeg_exif_ifd_loop", "loop.jpg", _exif_ifd_loop, "ok", "", "EXIF IFD chain that points at itself"),
    Case("bmp", "photo.bmp", lambda: save(_rgb(), "BMP"), "ok", "", "24-bit BMP"),
    Case("tiff_multipage", "scan.tif", _tiff_multipage, "ok", "frames", "TIFF, 3 pages"),
    Case("tiff_cmyk", "print.tif", _cmyk_tiff, "ok", "CMYK", "CMYK TIFF"),
    Case("tiff_float", "depth.tif", lambda: _float_tiff(np.linspace(0, 1, 32 * 16).reshape(16, 32)), "ok", "8 bits", "mode F (float32) in [0, 1]"),
    Case("tiff_float_nonfinite", "nan.tif", lambda: _float_tiff(np.array([[np.nan, np.inf], [-np.inf, 0.5]])), "error", "NaN", "mode F with NaN and ±inf"),
    Case("tiff_int32", "int.tif", _int32_tiff, "ok", "8 bits", "mode I (int32) with negatives"),
    Case("pgm_16bit", "depth.pgm", _pgm_16bit, "ok", "8 bits", "16-bit PGM (maxval 65535)"),
    Case("ico", "favicon.ico", _ico, "ok", "", "ICO with 3 sizes"),
    Case("tga", "photo.tga", _tga, "ok", "", "Targa"),
    Case("qoi", "photo.qoi", _qoi, "error", "not an image", "QOI (outside the allowed formats)"),
    Case("pcx", "photo.pcx", _pcx, "error", "not an image", "PCX (outside the allowed formats)"),
    # --- polyglots: the image is used, the payload never leaves (we re-encode)
    Case("polyglot_png_zip", "poly.png", _polyglot_png_zip, "ok", "", "PNG + appended ZIP with HTML"),
    Case("polyglot_gif_script", "poly.gif", _polyglot_gif_script, "ok", "", "GIF with JS comment + trailing PHP"),
    Case("jpeg_html_comment", "comment.jpg", _jpeg_html_comment, "ok", "", "JPEG COM segment with HTML"),
)
# fmt: on

BY_KIND: dict[str, Case] = {c.kind: c for c in CORPUS}


@functools.cache
def _built(kind: str) -> bytes:
    return BY_KIND[kind].make()


def corpus() -> tuple[Case, ...]:
    """All cases, in table order."""
    return CORPUS


def hostile_filenames() -> list[str]:
    """File names that must not break one-line messages or paths (valid on Linux)."""
    return [
        "plain.png",
        "with space and ümlaut 😀.png",
        "new\nline.png",
        "tab\tand\rcarriage.png",
        "ansi\x1b[31mred\x1b[0m.png",
        "rtl \u202egnp.exe",
        "a" * 200 + ".png",
        "no_extension",
        ".hidden.png",
        "double.png.exe",
    ]


def sample_images() -> dict[str, bytes]:
    """Small valid seeds for mutation fuzzing, one per common format."""
    return {
        "png": save(_rgb(24, 16), "PNG"),
        "png_palette": save(_rgb(24, 16).convert("P"), "PNG", transparency=3),
        "jpeg": save(_rgb(24, 16), "JPEG", quality=80),
        "jpeg_exif": save(_rgb(24, 16), "JPEG", exif=_exif(6)),
        "gif": _animated("GIF", frames=2),
        "webp": save(_rgb(24, 16), "WEBP"),
        "bmp": save(_rgb(8, 8), "BMP"),
        "tiff": save(_rgb(24, 16), "TIFF"),
        "tiff_lzw": save(_rgb(24, 16), "TIFF", compression="tiff_lzw"),
        "ico": save(_rgb(16, 16), "ICO"),
    }
