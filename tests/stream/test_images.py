import io
import os

import numpy as np
import pytest
from PIL import Image

from contracts.photos import decode, to_rgb
from contracts.records import ErrorCode, PermanentError
from stream.fetch import fetch


def jpeg(size=(640, 480), color=(200, 30, 30), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def test_decode_gives_model_sized_rgb_uint8():
    out = decode(jpeg(), (96, 64), max_pixels=10_000_000)
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    assert abs(int(out[32, 48, 0]) - 200) < 6 and out[32, 48, 1] < 40


def test_decode_rejects_non_images_and_disguised_formats():
    with pytest.raises(PermanentError) as err:
        decode(b"hello, not an image", (32, 32), 10_000_000)
    assert err.value.code == ErrorCode.UNSUPPORTED_FORMAT
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "BMP")  # a real image, but not on the allow-list
    with pytest.raises(PermanentError) as err:
        decode(buf.getvalue(), (32, 32), 10_000_000)
    assert err.value.code == ErrorCode.UNSUPPORTED_FORMAT


def test_decode_truncated_jpeg_is_decode_failed():
    with pytest.raises(PermanentError) as err:
        decode(jpeg()[:400], (32, 32), 10_000_000)
    assert err.value.code == ErrorCode.DECODE_FAILED


def test_decode_refuses_too_many_pixels_before_decoding():
    with pytest.raises(PermanentError) as err:
        decode(jpeg((2000, 2000)), (32, 32), max_pixels=1_000_000)
    assert err.value.code == ErrorCode.TOO_MANY_PIXELS


def test_alpha_is_composited_on_white_and_16_bit_scaled():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    gray16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(gray16).getpixel((0, 0)) == (255, 255, 255)


def test_fetch_reads_files_only_under_allowed_roots(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"data")
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", root / "link.jpg")
    roots = [os.path.realpath(root)]
    assert fetch((root / "a.jpg").as_uri(), roots, 100, 1.0) == b"data"
    for url in [(tmp_path / "secret").as_uri(), f"file://{root}/../secret", (root / "link.jpg").as_uri()]:
        with pytest.raises(PermanentError) as err:
            fetch(url, roots, 100, 1.0)
        assert err.value.code == ErrorCode.FORBIDDEN_URL, url
    with pytest.raises(PermanentError) as err:
        fetch((root / "missing.jpg").as_uri(), roots, 100, 1.0)
    assert err.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(PermanentError) as err:
        fetch((root / "a.jpg").as_uri(), roots, 3, 1.0)
    assert err.value.code == ErrorCode.TOO_LARGE


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "gopher://x", "data:image/png;base64,AAAA"])
def test_fetch_refuses_other_schemes(url):
    with pytest.raises(PermanentError) as err:
        fetch(url, [], 100, 1.0)
    assert err.value.code == ErrorCode.FORBIDDEN_URL


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.8", "169.254.169.254", "[::1]"])
def test_fetch_refuses_non_public_http_hosts(host):
    with pytest.raises(PermanentError) as err:
        fetch(f"http://{host}/a.jpg", [], 100, 1.0)
    assert err.value.code == ErrorCode.FORBIDDEN_URL
