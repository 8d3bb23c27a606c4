"""Animations are bounded before anything past their first frame is decoded, and Pillow's own pixel cap
follows the worker's setting."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import GifImagePlugin, Image

from contracts.photos import decode
from contracts.records import PermanentError
from tests.e2e.bad_inputs import animated_gif, encode


def code_of(call) -> str:
    with pytest.raises(PermanentError) as err:
        call()
    return str(err.value.code)


def gif_frame_offsets(data: bytes) -> list[int]:
    """Where each image descriptor (0x2C) of a GIF written by Pillow starts."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while data[pos] != 0x3B:
        if data[pos] == 0x2C:
            found.append(pos)
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return found


def apng(frames: int, size: tuple[int, int] = (32, 32)) -> bytes:
    images = [Image.new("RGB", size, (i * 40 % 256, 0, 0)) for i in range(frames)]
    return encode(images[0], "PNG", save_all=True, append_images=images[1:])


def with_fctl_size(data: bytes, index: int, width: int, height: int) -> bytes:
    """The APNG with its ``index``-th frame control chunk claiming ``width`` x ``height`` (CRC fixed)."""
    pos, seen = 8, 0
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"fcTL":
            if seen == index:
                body = bytearray(data[pos + 8 : pos + 8 + length])
                struct.pack_into(">II", body, 4, width, height)
                crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
                return data[: pos + 8] + bytes(body) + crc + data[pos + 12 + length :]
            seen += 1
        pos += 12 + length


def test_a_gif_over_the_frame_cap_is_refused_without_walking_pillow_through_its_frames(monkeypatch):
    seeks = []
    real = GifImagePlugin.GifImageFile._seek
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", lambda self, frame, *a: (seeks.append(frame),
                                                                                        real(self, frame, *a))[1])  # fmt: skip
    assert code_of(lambda: decode(animated_gif(150), (16, 16), 10**7, max_frames=100)) == "too_many_frames"
    assert seeks == [0]  # Pillow opened frame 0; the frames were counted from the block structure
    seeks.clear()
    assert decode(animated_gif(3), (16, 16), 10**7, max_frames=100).shape == (16, 16, 3)
    assert seeks == [0]


def test_a_later_gif_frame_that_would_enlarge_the_canvas_is_refused():
    data = bytearray(animated_gif(3))
    second = gif_frame_offsets(bytes(data))[1]
    # a 32x32 screen, then a 5000x5000 frame: under Pillow's default bomb cap, over the worker's pixel cap
    struct.pack_into("<HH", data, second + 5, 5_000, 5_000)
    assert code_of(lambda: decode(bytes(data), (16, 16), 10**7)) == "decode_failed"
    assert decode(animated_gif(3), (16, 16), 10**7).shape == (16, 16, 3)


def test_apng_frames_are_counted_and_every_frame_must_fit_the_canvas():
    assert code_of(lambda: decode(apng(12), (16, 16), 10**7, max_frames=10)) == "too_many_frames"
    assert decode(apng(3), (16, 16), 10**7).shape == (16, 16, 3)
    assert (
        code_of(lambda: decode(with_fctl_size(apng(3), 1, 5_000, 5_000), (16, 16), 10**7)) == "decode_failed"
    )


def test_webp_animation_frames_are_counted_from_the_container():
    images = [Image.new("RGB", (16, 16), (i * 20 % 256, 0, 0)) for i in range(12)]
    webp = encode(images[0], "WEBP", save_all=True, append_images=images[1:], lossless=True)
    assert code_of(lambda: decode(webp, (8, 8), 10**7, max_frames=10)) == "too_many_frames"
    assert decode(webp, (8, 8), 10**7, max_frames=12).shape == (8, 8, 3)


def test_pillows_own_pixel_cap_follows_the_setting(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    decode(encode(Image.new("RGB", (8, 8)), "PNG"), (4, 4), max_pixels=12_345)
    assert Image.MAX_IMAGE_PIXELS == 12_345
