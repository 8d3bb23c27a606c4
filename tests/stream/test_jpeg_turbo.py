"""The libjpeg-turbo path of ``contracts.photos.decode`` against Pillow, the reference: the same pixels within
a tolerance, the same EXIF orientation, the same rejections of hostile input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image

import contracts.photos as photos
from contracts.photos import decode
from contracts.records import PermanentError
from tests.e2e.bad_inputs import STORE_FOR_ORIENTATION, encode, image_files, jpeg_with_size

SIZES = [(96, 96), (224, 224), (64, 48)]


def photo(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Smooth gradients, edges and noise: something with detail at every scale, like a photo."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, ((x // 37 + y // 23) % 2) * 200], axis=-1).astype(np.int32)
    img += rng.integers(-20, 20, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def outcome(fn, *args):  # noqa: ANN001, ANN202
    try:
        return fn(*args)
    except PermanentError as exc:
        return str(exc.code)


@pytest.fixture
def pillow_only(monkeypatch):
    """``decode`` as it was: every JPEG through Pillow's draft mode."""

    def run(*args, **kw):
        with monkeypatch.context() as m:
            m.setattr(photos, "TURBO_MODES", frozenset())
            return decode(*args, **kw)

    return run


@pytest.fixture
def turbo_calls(monkeypatch):
    """Count the JPEGs libjpeg-turbo decoded (so a test cannot pass by silently falling back to Pillow)."""
    calls = []
    real = simplejpeg.decode_jpeg

    def counted(*args, **kw):
        out = real(*args, **kw)
        calls.append(out.shape)
        return out

    monkeypatch.setattr(photos.simplejpeg, "decode_jpeg", counted)
    return calls


def full_reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Pillow's full decode, then an antialiased resize: the picture as it is."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.int32)


@pytest.mark.parametrize("source", [(1024, 768), (2048, 1536), (640, 480), (333, 517)])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_turbo_pixels_are_pillows_and_close_to_a_full_decode(source, subsampling, pillow_only, turbo_calls):
    data = encode(photo(source), "JPEG", quality=85, subsampling=subsampling)
    for size in SIZES:
        got = decode(data, size, 10**8).astype(np.int32)
        assert got.shape == (size[1], size[0], 3) and got.dtype == np.int32
        full = full_reference(data, size)
        draft = pillow_only(data, size, 10**8).astype(np.int32)
        assert np.abs(got - draft).max() <= 1, (source, size)  # the same DCT scale, the same resize
        assert np.abs(got - full).mean() < 2.5, (source, size)  # the picture, not a lighter copy of it
    assert len(turbo_calls) == len(SIZES)


def test_gray_and_progressive_jpegs_go_through_turbo_and_match(pillow_only, turbo_calls):
    for data in (
        encode(photo((800, 600)).convert("L"), "JPEG", quality=90),
        encode(photo((800, 600)), "JPEG", quality=90, progressive=True),
        encode(photo((800, 600)), "JPEG", quality=90, optimize=True, restart_marker_blocks=4),
    ):
        got = decode(bytearray(data), (96, 96), 10**8).astype(np.int32)  # fetch may hand a bytearray
        assert np.abs(got - pillow_only(data, (96, 96), 10**8)).mean() < 1.5
    assert len(turbo_calls) == 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_jpeg_is_applied_as_pillow_applies_it(
    orientation, pillow_only, turbo_calls
):
    upright = photo((640, 400))
    method = STORE_FOR_ORIENTATION[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = upright if method is None else upright.transpose(method)
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    size = (64, 40)  # not square: a rotation applied wrongly changes the shape or the content
    got = decode(data, size, 10**8).astype(np.int32)
    expected = pillow_only(data, size, 10**8).astype(np.int32)
    upright_ref = pillow_only(encode(upright, "JPEG", quality=95), size, 10**8).astype(np.int32)
    assert got.shape == (40, 64, 3)
    assert np.abs(got - expected).mean() < 1.5
    assert np.abs(got - upright_ref).mean() < 3.0  # upright, not merely equal to a shared mistake
    assert turbo_calls


def test_cmyk_stays_with_pillow_exactly(pillow_only, turbo_calls):
    data = encode(photo((320, 240)).convert("CMYK"), "JPEG")
    assert np.array_equal(decode(data, (32, 32), 10**7), pillow_only(data, (32, 32), 10**7))
    assert not turbo_calls


def test_damaged_jpegs_are_judged_by_pillow(pillow_only):
    data = encode(photo((640, 480)), "JPEG", quality=85)
    scan = data.index(b"\xff\xda")
    damaged = {
        "truncated": data[: len(data) // 2],
        "header only": data[:scan],
        "zeros after the header": data[:300] + b"\x00" * 500,
        "extraneous bytes before EOI": data[:-2] + b"\x00\x01\x02" + data[-2:],
        # a libjpeg warning only: simplejpeg (strict) refuses it, Pillow decodes it, so it must decode
        "extraneous bytes before SOS": data[:scan] + b"\x00\x00" + data[scan:],
        "flipped bytes in the scan": data[: scan + 400]
        + bytes(b ^ 0x5A for b in data[scan + 400 : scan + 420])
        + data[scan + 420 :],
        "claims 65000x65000": jpeg_with_size(data, 65_000, 65_000),
        "claims 9000x9000": jpeg_with_size(data, 9_000, 9_000),
    }
    for name, bad in damaged.items():
        got, ref = outcome(decode, bad, (64, 64), 50_000_000), outcome(pillow_only, bad, (64, 64), 50_000_000)
        if isinstance(ref, str):
            assert got == ref, name
        else:
            assert not isinstance(got, str), (name, got)
            assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).mean() < 1.5, name
    assert outcome(decode, damaged["truncated"], (64, 64), 10**8) == "decode_failed"
    assert not isinstance(outcome(decode, damaged["extraneous bytes before SOS"], (64, 64), 10**8), str)
    assert outcome(decode, damaged["claims 65000x65000"], (64, 64), 50_000_000) == "too_many_pixels"


def test_the_hostile_corpus_gets_the_same_outcome_as_with_pillow(pillow_only):
    for name, (data, expect, _) in image_files(photo((640, 480))).items():
        if expect == "too_large":
            continue  # the fetch's byte cap, not the decoder's
        got, ref = (
            outcome(decode, data, (96, 96), 50_000_000),
            outcome(pillow_only, data, (96, 96), 50_000_000),
        )
        if isinstance(ref, str):
            assert got == ref == expect, name
        else:
            assert not isinstance(got, str) and np.abs(got.astype(int) - ref.astype(int)).mean() < 1.5, name
