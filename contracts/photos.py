"""Photo decoding: bytes in, the model's uint8 RGB input out, with every input-derived limit checked first.

The one decode the worker, the search page's thumbnails, the trainer's data loaders and export's calibration
all run: formats identified from the content (an allow-list), the pixel and frame caps checked from headers
before any pixel is decoded, EXIF orientation applied, alpha composited on white. Failures are PermanentError
with a dead-letter code.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps

from contracts.records import ErrorCode, PermanentError

#: Formats accepted, identified by Pillow from the content (never from the file name).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})

#: JPEG modes libjpeg-turbo (``simplejpeg``) decodes here; CMYK/YCCK (Adobe's inverted ink) stay with Pillow.
TURBO_MODES = frozenset({"RGB", "L"})
#: JPEGs are decoded with DCT scaling to at least this many times the model's size, then resized (an
#: antialiased bilinear), by the same power-of-two factor on both paths: the turbo path's pixels are
#: Pillow's. (1 would save ~25 % of the decode CPU at 224 px, at twice the error against a full decode.)
SCALE_HEADROOM = 2
#: EXIF orientation → the transpose that makes the photo upright (as ``ImageOps.exif_transpose``).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode(
    data: bytes | bytearray, size: tuple[int, int], max_pixels: int, max_frames: int = 100
) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of ``size`` = (width, height), as the model expects.

    The pixel and frame caps are checked from the header before any pixel is decoded; animations give
    their first frame. JPEG is decoded with DCT scaling straight to about the target size, which is
    several times faster than a full decode and loses nothing the model can see: RGB and gray JPEGs by
    libjpeg-turbo (``simplejpeg``: it releases the GIL for the whole decode and scales by eighths, to at
    least ``SCALE_HEADROOM`` times the size), the rest, and any JPEG libjpeg-turbo finds damaged, by
    Pillow's draft mode (powers of two, to at least twice the size), so that Pillow, the reference,
    decides what is rejected.

    Memory: the decoded frame plus at most one full-size copy (a transposed frame, or the RGB one alpha is
    composited into), which ``DECODE_BYTES_PER_PIXEL`` in stream/settings.py budgets; gray and 16-bit
    frames are resized before they are converted.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check, for whatever it decodes past ours
    try:
        img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
        if img.width * img.height > max_pixels:
            raise PermanentError(
                ErrorCode.TOO_MANY_PIXELS, f"{img.width}x{img.height} is over {max_pixels} pixels"
            )
        _check_frames(img, data, max_frames)
        if img.format == "JPEG" and img.mode in TURBO_MODES:
            turbo = _decode_turbo(img, data, size)
            if turbo is not None:
                return turbo
        if img.format == "JPEG":
            img.draft("RGB", (size[0] * 2, size[1] * 2))  # Pillow scales by powers of two only
        ImageOps.exif_transpose(img, in_place=True)  # transposed, tag removed: applied exactly once
        img = _opaque(img)
        # Pillow's reduce(), which reducing_gap uses, has no 16-bit gray: those are resized in one step
        gap = None if img.mode.startswith("I;16") else 2.0
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=gap)
        return np.asarray(to_rgb(img), dtype=np.uint8)
    except PermanentError:
        raise
    except Image.UnidentifiedImageError:
        raise PermanentError(
            ErrorCode.UNSUPPORTED_FORMAT, f"not one of {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise PermanentError(ErrorCode.TOO_MANY_PIXELS, str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


def _decode_turbo(img: Image.Image, data: bytes | bytearray, size: tuple[int, int]) -> np.ndarray | None:
    """An RGB or gray JPEG through libjpeg-turbo with DCT scaling, then EXIF orientation and the resize as
    in Pillow's path; None when libjpeg-turbo finds the data damaged (Pillow decides then)."""
    method = _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))  # as exif_transpose reads it
    # DCT scaling by the largest power of two that keeps both sides at SCALE_HEADROOM x the target or more,
    # as Pillow's draft picks it (libjpeg-turbo's other eighths alias more), asked for as the scaled size.
    fit = min(img.width // (size[0] * SCALE_HEADROOM), img.height // (size[1] * SCALE_HEADROOM))
    scale = next(s for s in (8, 4, 2, 1) if s <= max(1, fit))
    width, height = -(-img.width // scale), -(-img.height // scale)
    try:
        pixels = simplejpeg.decode_jpeg(data, "rgb", min_width=width, min_height=height)
    except ValueError:  # strict: truncated, corrupt or unsupported data, even what libjpeg would only warn of
        return None
    frame = Image.fromarray(pixels)
    if method is not None:
        frame = frame.transpose(method)
    return np.asarray(frame.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


def _check_frames(img: Image.Image, data: bytes | bytearray, max_frames: int) -> None:
    """Refuse more than ``max_frames`` frames, or a later frame outside the first one's canvas, without
    decoding any frame: GIF and APNG from their block structure, WebP from its container (libwebp's demuxer
    already refuses frames outside the canvas)."""
    if img.format == "GIF":
        _check_gif_frames(data, img.size, max_frames)
        return
    if img.format == "PNG" and getattr(img, "is_animated", False):  # is_animated: from acTL, nothing decoded
        _check_apng_frames(data, img.size, max_frames)
    frames = int(getattr(img, "n_frames", 1))
    if frames > max_frames:
        raise PermanentError(ErrorCode.TOO_MANY_FRAMES, f"animation has {frames} frames, limit {max_frames}")


def _check_frame(
    index: int, box: tuple[int, int, int, int], canvas: tuple[int, int], max_frames: int
) -> None:
    """One frame ``box`` = (x, y, width, height): within the frame cap and inside ``canvas``."""
    if index > max_frames:
        raise PermanentError(ErrorCode.TOO_MANY_FRAMES, f"animation has more than {max_frames} frames")
    x, y, width, height = box
    if x + width > canvas[0] or y + height > canvas[1]:
        raise PermanentError(
            ErrorCode.DECODE_FAILED,
            f"frame {index} ({width}x{height} at {x},{y}) lies outside the {canvas[0]}x{canvas[1]} canvas",
        )


def _check_gif_frames(data: bytes | bytearray, canvas: tuple[int, int], max_frames: int) -> None:
    """Walk the GIF's blocks (extensions and image descriptors, their data sub-blocks skipped by length).

    ``canvas`` is Pillow's size after opening frame 0, which already includes a first frame larger than
    the logical screen; a truncated or corrupt structure stops the walk and is left to the decoder."""
    end = len(data)
    pos = 13 + (3 << ((data[10] & 7) + 1) if end > 10 and data[10] & 0x80 else 0)
    frames = 0
    while pos < end:
        block = data[pos]
        if block == 0x21:  # extension: introducer, label, then data sub-blocks
            pos += 2
        elif block == 0x2C and pos + 10 <= end:  # image descriptor, local color table, LZW code size
            frames += 1
            _check_frame(frames, struct.unpack_from("<HHHH", data, pos + 1), canvas, max_frames)
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:  # trailer (0x3B) or not a block
            return
        while pos < end and data[pos]:  # data sub-blocks: a length byte, then that many bytes; 0 ends them
            pos += data[pos] + 1
        pos += 1


def _check_apng_frames(data: bytes | bytearray, canvas: tuple[int, int], max_frames: int) -> None:
    """Walk the PNG's chunks: every frame control chunk (fcTL) counts as a frame and must fit the canvas."""
    pos, frames = 8, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"fcTL" and pos + 28 <= len(data):
            frames += 1
            width, height, x, y = struct.unpack_from(">IIII", data, pos + 12)
            _check_frame(frames, (x, y, width, height), canvas, max_frames)
        elif kind == b"IEND":
            return
        pos += 12 + length


_INTEGER_GRAY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
#: modes with transparency → the mode whose alpha band is pasted through (a palette's, once expanded)
_ALPHA = {"RGBA": "RGBA", "LA": "LA", "P": "RGBA", "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB one way everywhere: alpha (also a palette's transparency) is composited on
    white, 16- and 32-bit integer gray is scaled from the 16-bit range, CMYK/L/1/YCbCr use Pillow's matrix."""
    img = _opaque(img)
    if img.mode in _INTEGER_GRAY:  # x * 255 / 65535 == x // 257: integers, no float copy of the frame
        img = Image.fromarray((np.clip(np.asarray(img), 0, 65535) // 257).astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def _opaque(img: Image.Image) -> Image.Image:
    """``img`` as RGB, L or integer gray, with at most one full-size copy made: alpha is composited on white
    by pasting through it (no full-size background layer), a palette is expanded only to what it needs."""
    if img.mode in ("RGB", "L") or img.mode in _INTEGER_GRAY:
        return img
    if img.mode not in _ALPHA or (img.mode == "P" and not img.has_transparency_data):
        return img.convert("L" if img.mode == "1" else "RGB")  # CMYK, YCbCr, 1, opaque palettes
    if img.mode != _ALPHA[img.mode]:
        img = img.convert(_ALPHA[img.mode])
    opaque = Image.new(img.mode[:-1], img.size, (255,) * (len(img.mode) - 1))
    opaque.paste(img, mask=img)  # color * alpha + white * (1 - alpha), as compositing over white
    return opaque
