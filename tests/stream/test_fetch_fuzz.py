"""Whatever URL an upload names and whatever a server answers, ``fetch`` ends in bytes, a dead letter
(PermanentError) or a retry (SourceUnavailable): never another exception, which would stop the worker.

Name resolution goes through the real ``getaddrinfo`` in numeric-only mode (its own parsing and IDNA
encoding run, no DNS query is sent), then every name lands on a scripted server on 127.0.0.1, so the
generated answers (broken status lines, headers, redirects, chunk sizes) are what the fetch reads.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.records import PermanentError, SourceUnavailable, parse_upload
from contracts.tensors import ModelInput
from stream.fetch import fetch
from stream.loading import read_and_decode_upload
from stream.origins import Origins, Proxy
from stream.settings import Settings
from tests.stream.scripted_http import ScriptedHTTP

REAL_GETADDRINFO = socket.getaddrinfo

LABEL = st.text(st.sampled_from("abcxyz09-_.%:@[]é￿ßİ\u200d\x00 "), max_size=70)
HOST = st.one_of(
    LABEL,
    st.sampled_from(["a..b", "x" * 64 + ".com", "[", "[x", "[::1", "[::1]", "127.0.0.1", "[fe80::1%25eth0]",
                     "localhost", "xn--zz", "xn--", "ex%41mple.com", "é.example", "a" * 300, ""]),
    st.text(max_size=40),
)  # fmt: skip
PORT = st.one_of(
    st.just(""), st.builds(lambda p: f":{p}", st.sampled_from(["80", "0", "99999", "x", "²", "-1", ""]))
)
PATH = st.one_of(st.text(max_size=40), st.sampled_from(["/café.jpg", "/a b", "/%zz", "/\r\nX: y", "/\x00"]))
SCHEME = st.sampled_from(["http", "https", "HTTP", "file", "ftp", "", "javascript", "http:", "h ttp"])
URL = st.one_of(
    st.builds(lambda s, h, p, path: f"{s}://{h}{p}{path}", SCHEME, HOST, PORT, PATH),
    st.builds(lambda path: f"file://{path}", PATH),
    st.text(max_size=80),
)

STATUS = st.sampled_from([
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 302 Found\r\n", b"HTTP/1.1 503 x\r\n", b"HTTP/1.1 99 x\r\n",
    b"HTTP/1.1 2000 x\r\n", b"HTTP/9 200\r\n", b"ICY 200 OK\r\n", b"HTTP/1.1 \xff\xfe\r\n", b"garbage\r\n", b"",
])  # fmt: skip
HEADER = st.one_of(
    st.sampled_from([
        "Content-Length: ²", "Content-Length: -1", "Content-Length: 99999999999999999999", "Content-Length: 3",
        "Content-Length: 1, 2", "Location: http://[", "Location: http://[x/y", "Location: //a..b/",
        "Location: http://é.example/ü.jpg", "Location: file:///etc/passwd", "Location: /\x00",
        "Location: http://127.0.0.1:99999/", "Location: ", "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked", "X: " + "y" * 70000,
    ]),
    st.text(max_size=30),
).map(lambda h: h.encode("utf-8", "surrogatepass") + b"\r\n")  # fmt: skip
BODY = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"zz\r\n", b"ffffffffffffffffffff\r\n", b"3\r\nabc\r\n0\r\n\r\n", b"3;x=\xff\r\nabc", b"-5\r\n"]
    ),
)
ANSWER = st.builds(lambda s, hs, b: [s, *hs, b"\r\n", b], STATUS, st.lists(HEADER, max_size=5), BODY)


@pytest.fixture(scope="module")
def server():
    stub = ScriptedHTTP()
    yield stub
    stub.close()


@pytest.fixture
def every_name_is_the_stub(server, monkeypatch):
    """Real numeric-only resolution (its parsing and encoding errors included), then the stub's address."""

    def resolve(host, port, *args, **kwargs):
        try:
            REAL_GETADDRINFO(host, port, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
        except socket.gaierror:
            pass  # a name: a real resolver would look it up; here every name is the stub
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(url=URL, answer=ANSWER)
def test_no_url_and_no_answer_makes_fetch_raise_anything_but_a_dead_letter_or_a_retry(
    server, every_name_is_the_stub, tmp_path_factory, url, answer
):
    server.script = answer
    root = str(tmp_path_factory.getbasetemp())
    try:
        fetch(url, [root], 1000, 0.5, allow_loopback=True)
    except (PermanentError, SourceUnavailable):
        pass


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(url=URL, answer=ANSWER, keepalive_s=st.sampled_from([0.0, 30.0]))
def test_through_a_proxy_and_on_kept_alive_connections_the_same_promise_holds(
    server, every_name_is_the_stub, url, answer, keepalive_s
):
    """The stub is now also the proxy: a hostile host goes into its request line, which must stay one line."""
    server.script = answer
    proxy = Proxy("127.0.0.1", server.port)
    policy = Origins(
        networks=(ipaddress.ip_network("127.0.0.0/8"),),
        http_proxy=proxy,
        https_proxy=proxy,
        keepalive_s=keepalive_s,
    )
    seen = len(server.requests)
    try:
        fetch(url, [], 1000, 0.5, origins=policy)
    except (PermanentError, SourceUnavailable):
        pass
    for head in server.requests[seen:]:
        first, _, rest = head.partition(b"\r\n")
        assert re.fullmatch(rb"(GET|CONNECT) [\x21-\x7e]+ HTTP/1\.1", first), head
        assert b"\n" not in rest.replace(b"\r\n", b""), head


@pytest.mark.parametrize(
    ("url", "named"),
    [("http://[x/y.jpg", "http://[x/y.jpg"), ("http://a..b/x.jpg", "'a..b'"),
     ("http://" + "x" * 64 + ".com/x.jpg", "x" * 64), ("file://[/x.jpg", "file://[/x.jpg")],
)  # fmt: skip
def test_malformed_urls_are_forbidden_url_dead_letters_naming_the_culprit(url, named):
    with pytest.raises(PermanentError) as err:
        fetch(url, ["/nonexistent-root"], 1000, 0.5)
    assert str(err.value.code) == "forbidden_url" and named in err.value.detail


@pytest.mark.parametrize(
    ("answer", "code"),
    [([b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nabc"], None),
     ([b"HTTP/1.1 302 Found\r\nLocation: http://[\r\nContent-Length: 0\r\n\r\n"], "fetch_failed"),
     ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "fetch_failed")],
)  # fmt: skip
def test_hostile_answers_are_dead_letters(server, answer, code):
    server.script = answer
    url = f"{server.base}/x.jpg"
    if code is None:
        assert fetch(url, [], 1000, 2.0, allow_loopback=True) == b"abc"
        return
    with pytest.raises(PermanentError) as err:
        fetch(url, [], 1000, 2.0, allow_loopback=True)
    assert str(err.value.code) == code


def test_a_non_ascii_path_is_sent_percent_encoded_as_a_browser_would(server):
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    assert fetch(f"{server.base}/caf\u00e9 au lait.jpg?q=\u00fc", [], 1000, 2.0, allow_loopback=True) == b"ok"
    assert server.requests[-1].startswith(b"GET /caf%C3%A9%20au%20lait.jpg?q=%C3%BC HTTP/1.1\r\n")


@pytest.mark.parametrize("url", ["file://[/x.jpg", "file://[::1/x.jpg", "file:///caf\u00e9/\U0001f4f7.jpg"])
def test_a_bad_file_url_on_the_worker_path_is_a_dead_letter(tmp_path, url):
    """``file://`` uploads are read and decoded in one call on a decode thread: the same promise holds there."""
    upload = parse_upload(
        b'{"photo_id": "p", "uploaded_at": "2026-01-01T00:00:00Z", "url": %s}' % orjson.dumps(url)
    )
    settings = Settings(file_roots=str(tmp_path))
    with pytest.raises(PermanentError) as err:
        read_and_decode_upload(upload, settings, ModelInput(32, 32, 8))
    assert str(err.value.code) in ("forbidden_url", "not_found")
