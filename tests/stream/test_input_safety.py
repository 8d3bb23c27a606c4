"""Input safety of fetch and decode, against a real local web server (127.0.0.1 only) and real image files."""

from __future__ import annotations

import ipaddress
import socket
import time

import numpy as np
import orjson
import pytest
from PIL import Image

from contracts.photos import decode, to_rgb
from contracts.records import (
    MAX_DLQ_ORIGINAL_BYTES,
    ErrorCode,
    PermanentError,
    SourceUnavailable,
    dead_letter,
    photo_id_hint,
)
from stream.fetch import fetch, refused_address
from stream.settings import Settings, SettingsError
from tests.e2e.bad_inputs import HostileHTTP, animated_gif, encode, oriented_png
from tests.stream.scripted_http import ScriptedHTTP, trickle


@pytest.fixture(scope="module")
def web():
    server = HostileHTTP(encode(Image.new("RGB", (64, 48), (10, 200, 10)), "JPEG"))
    yield server
    server.close()


def code_of(call) -> str:
    with pytest.raises(PermanentError) as err:
        call()
    return str(err.value.code)


@pytest.mark.parametrize(
    ("address", "refused"),
    [("8.8.8.8", False), ("2001:4860::8888", False), ("127.0.0.1", True), ("::1", True), ("10.1.2.3", True),
     ("172.16.0.1", True), ("192.168.0.1", True), ("169.254.169.254", True), ("100.64.0.1", True),
     ("0.0.0.0", True), ("fd00:ec2::254", True), ("fe80::1", True), ("::ffff:10.0.0.1", True),
     ("2002:a00:1::", True), ("64:ff9b::a9fe:a9fe", True), ("224.0.0.1", True)],
)  # fmt: skip
def test_only_public_unicast_addresses_are_fetched(address, refused):
    assert refused_address(ipaddress.ip_address(address), allow_loopback=False) is refused


def test_loopback_needs_the_dev_setting_and_private_never_passes(web):
    assert code_of(lambda: fetch(f"{web.base}/good.jpg", [], 10**6, 2.0)) == "forbidden_url"
    assert fetch(f"{web.base}/good.jpg", [], 10**6, 2.0, allow_loopback=True) == web.good_jpeg
    assert refused_address(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)


def test_connection_goes_to_the_vetted_address_not_a_second_lookup(web, monkeypatch):
    """DNS rebinding: the name is resolved once; a later answer pointing elsewhere is never used."""
    answers = iter([("127.0.0.1", True), ("10.9.9.9", False)])
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kw):
        if host != "photos.example":
            return real(host, port, *args, **kw)
        calls.append(host)
        addr, _ = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = web.base.rsplit(":", 1)[1]
    assert (
        fetch(f"http://photos.example:{port}/good.jpg", [], 10**6, 2.0, allow_loopback=True) == web.good_jpeg
    )
    assert calls == ["photos.example"]


def test_a_name_with_any_private_address_is_refused(monkeypatch):
    monkeypatch.setattr(
        socket, "getaddrinfo",
        lambda host, port, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                                     for ip in ("93.184.216.34", "169.254.169.254")],
    )  # fmt: skip
    assert code_of(lambda: fetch("http://mixed.example/a.jpg", [], 100, 1.0)) == "forbidden_url"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/redirect?to=http://169.254.169.254/", "forbidden_url"), ("/redirect?to=file:///etc/passwd", "forbidden_url"),
     ("/loop", "fetch_failed"), ("/missing.jpg", "not_found"), ("/forbidden.jpg", "fetch_failed"),
     ("/endless", "too_large"), ("/declared-huge", "too_large")],
)  # fmt: skip
def test_http_failures_are_permanent_with_a_precise_code(web, path, code):
    assert code_of(lambda: fetch(f"{web.base}{path}", [], 10**6, 3.0, allow_loopback=True)) == code


def test_slow_and_failing_sources_are_transient_and_bounded_by_one_deadline(web):
    for path in ("/unavailable.jpg", "/trickle"):
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            fetch(f"{web.base}{path}", [], 10**6, 1.0, allow_loopback=True)
        assert time.monotonic() - started < 1.0 + 2.0, (
            path
        )  # the deadline, plus a margin for a loaded machine
    with pytest.raises(SourceUnavailable):
        fetch("http://127.0.0.1:9/a.jpg", [], 100, 1.0, allow_loopback=True)  # connection refused


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"


@pytest.mark.parametrize(
    "script",
    [trickle(HEAD + b"X-Padding: " + b"p" * 40 + b"\r\n\r\n"),  # the status line, then headers, a byte at a time
     [HEAD + b"Transfer-Encoding: chunked\r\n\r\n", *trickle(b"0" * 40 + b"1\r\nx\r\n0\r\n\r\n")]],  # a chunk size
    ids=["status-line-and-headers", "chunk-size-line"],
)  # fmt: skip
def test_one_deadline_covers_the_status_line_headers_and_chunk_sizes(script):
    """A byte every 0.25 s satisfies any per-read timeout; only one deadline for the whole fetch ends it."""
    server = ScriptedHTTP(script, delay_s=0.25)  # about 12 s to play the whole script
    try:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            fetch(f"{server.base}/slow.jpg", [], 10**6, 1.0, allow_loopback=True)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 1.0 + 2.0, elapsed  # the deadline, plus a wide margin for a loaded 2-core machine


def test_a_tls_handshake_that_never_completes_ends_at_the_deadline():
    server = ScriptedHTTP()  # reads the ClientHello as if it were a request head, and never answers
    try:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            fetch(f"https://127.0.0.1:{server.port}/a.jpg", [], 10**6, 1.0, allow_loopback=True)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 1.0 + 2.0, elapsed


def test_fifo_and_directory_under_a_root_are_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block forever
    roots = [str(tmp_path.resolve())]
    assert code_of(lambda: fetch((tmp_path / "pipe.jpg").as_uri(), roots, 100, 1.0)) == "fetch_failed"
    assert code_of(lambda: fetch(tmp_path.as_uri(), roots, 100, 1.0)) == "fetch_failed"


def test_every_exif_orientation_decodes_to_the_same_upright_pixels():
    rng = np.random.default_rng(3)
    upright = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    expected = decode(encode(upright, "PNG"), (32, 24), 10**7)
    for orientation in range(1, 9):
        assert np.array_equal(decode(oriented_png(upright, orientation), (32, 24), 10**7), expected), (
            orientation
        )


def test_animation_frames_are_capped_and_the_first_frame_is_used():
    assert code_of(lambda: decode(animated_gif(500), (16, 16), 10**7, max_frames=100)) == "too_many_frames"
    assert decode(animated_gif(3), (16, 16), 10**7, max_frames=100).shape == (16, 16, 3)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "RGBA", "L", "1", "I;16", "I"])
def test_every_mode_converts_to_rgb_the_same_way(mode):
    base = Image.new("RGB", (8, 8), (255, 255, 255))
    img = base.convert(mode) if mode not in ("I;16", "I") else Image.new(mode, (8, 8), 65535)
    assert to_rgb(img).mode == "RGB" and to_rgb(img).getpixel((0, 0)) == (255, 255, 255), mode


def test_dead_letter_keeps_a_capped_original_and_a_bounded_id():
    raw = b"x" * (MAX_DLQ_ORIGINAL_BYTES + 10)
    letter = orjson.loads(dead_letter(raw, None, PermanentError(ErrorCode.EVENT_TOO_LARGE, "big"), "t", 0, 1))
    assert letter["original_truncated"] and letter["original_size"] == len(raw)
    assert len(letter["original"]) == MAX_DLQ_ORIGINAL_BYTES
    assert len(photo_id_hint(None, b"k" * 100_000)) == 256


def test_boolean_settings_parse_and_reject_nonsense():
    assert Settings.from_env({"DARKROOM_ALLOW_LOOPBACK_HTTP": "true"}).allow_loopback_http is True
    assert Settings.from_env(Settings(allow_loopback_http=True).to_env()).allow_loopback_http is True
    with pytest.raises(SettingsError, match="DARKROOM_ALLOW_LOOPBACK_HTTP"):
        Settings.from_env({"DARKROOM_ALLOW_LOOPBACK_HTTP": "maybe"})
