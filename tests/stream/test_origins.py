"""Internal origins, proxies and keep-alive of the ``http(s)`` fetch, against real local servers and a real
forward proxy on 127.0.0.1. The loopback setting stays off: 127.0.0.0/8 is reached only because a test
puts it (or a name resolving to it) on the allow-list, the way a site lists its own origins."""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import os
import socket
import subprocess
import sys
import time

import pytest

from contracts.records import ErrorCode, PermanentError, SourceUnavailable
from stream import keepalive
from stream.fetch import fetch
from stream.origins import Origins, bypasses_proxy, parse_allowed_origins, proxy_environment
from stream.settings import Settings, SettingsError
from tests.stream.origin_servers import PHOTO, ForwardProxy, PhotoOrigin, make_ca
from tests.stream.scripted_http import ScriptedHTTP

MB = 1024 * 1024
LOOPBACK = Origins(networks=(ipaddress.ip_network("127.0.0.0/8"),))


def code_of(call) -> str:
    with pytest.raises(PermanentError) as err:
        call()
    return str(err.value.code)


def origins(allowed: str = "", keepalive_s: float = 0.0, **proxies) -> Origins:
    """The policy the worker builds from ``DARKROOM_ALLOWED_ORIGINS`` and the proxy variables."""
    settings = Settings.from_env({}, allowed_origins=allowed, fetch_keepalive_s=keepalive_s)
    return Origins.from_settings(settings, {k.upper(): v for k, v in proxies.items()})


@pytest.fixture
def origin():
    server = PhotoOrigin()
    yield server
    server.close()


@pytest.fixture
def resolve(monkeypatch):
    """``resolve(name, address)``: the system resolver answers ``address`` for ``name`` (a site's DNS)."""
    table: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kw):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table.__setitem__


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """A TLS photo origin whose certificate names ``photos.test``, signed by a CA the fetch trusts through
    ``SSL_CERT_FILE`` (how a site trusts its internal CA)."""
    ca, cert, key = make_ca(tmp_path, ["photos.test"])
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    server = PhotoOrigin(tls=(cert, key))
    yield server
    server.close()


@pytest.fixture
def proxy():
    server = ForwardProxy(names={"photos.test": "127.0.0.1", "other.test": "127.0.0.1"})
    yield server
    server.close()


# --- the allow-list setting -------------------------------------------------------------------------------


def test_the_allow_list_parses_hosts_wildcards_addresses_and_cidrs():
    hosts, suffixes, networks = parse_allowed_origins(
        " images.internal.example, *.cdn.internal ,10.20.0.0/16,fd00::/8, 192.168.1.7,Photos.Example. "
    )
    assert hosts == {"images.internal.example", "photos.example"}
    assert suffixes == ["cdn.internal"]
    assert [str(n) for n in networks] == ["10.20.0.0/16", "fd00::/8", "192.168.1.7/32"]


@pytest.mark.parametrize(
    "entry",
    ["http://images.internal", "images.internal:8080", "images.internal/photos", "10.0.0.0/33", "10.0.0.1/8",
     "10.0.0.300", "*", "*.com", "bad_-.host..x", "fd00::/129", "[fd00::1]"],
)  # fmt: skip
def test_a_bad_allow_list_entry_is_a_settings_error_naming_it(entry):
    settings = Settings.from_env({"DARKROOM_ALLOWED_ORIGINS": f"images.ok.example,{entry}"})
    with pytest.raises(SettingsError) as err:
        Origins.from_settings(settings, {})  # as the worker does when it starts
    assert "DARKROOM_ALLOWED_ORIGINS" in str(err.value) and repr(entry) in str(err.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DARKROOM_ALLOWED_ORIGINS", "10.0.0.0/8,images.example:8080"), ("HTTPS_PROXY", "socks5://p:1080")],
)
def test_a_bad_origin_or_proxy_setting_stops_the_worker_with_one_line_naming_it(variable, value):
    env = {**os.environ, variable: value, "DARKROOM_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "worker"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert variable in output and "Traceback" not in output, output


def test_keep_alive_seconds_must_not_be_negative():
    with pytest.raises(SettingsError, match="DARKROOM_FETCH_KEEPALIVE_S"):
        Settings.from_env({"DARKROOM_FETCH_KEEPALIVE_S": "-1"})


# --- the guard with an allow-list ---------------------------------------------------------------------------


def test_a_cidr_on_the_list_reaches_a_private_origin_for_any_host(origin, resolve):
    url = f"{origin.base}/photo.jpg"
    assert code_of(lambda: fetch(url, [], MB, 5.0)) == ErrorCode.FORBIDDEN_URL  # default-deny, loopback off
    assert fetch(url, [], MB, 5.0, origins=origins("127.0.0.0/8")) == PHOTO
    resolve("anything.example", "127.0.0.1")  # any name resolving into the listed range
    assert (
        fetch(f"http://anything.example:{origin.port}/photo.jpg", [], MB, 5.0, origins=origins("127.0.0.0/8"))
        == PHOTO
    )


def test_a_host_on_the_list_may_resolve_to_a_private_address_others_may_not(origin, resolve):
    resolve("images.internal.example", "127.0.0.1")
    resolve("cdn-7.photos.internal.example", "127.0.0.1")
    resolve("unlisted.example", "127.0.0.1")
    policy = origins("images.internal.example,*.photos.internal.example")
    for host in ("images.internal.example", "cdn-7.photos.internal.example"):
        assert fetch(f"http://{host}:{origin.port}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    for host in ("unlisted.example", "photos.internal.example"):  # a wildcard is for subdomains only
        resolve(host, "127.0.0.1")
        assert code_of(
            lambda h=host: fetch(f"http://{h}:{origin.port}/a.jpg", [], MB, 5.0, origins=policy)
        ) == (ErrorCode.FORBIDDEN_URL)
    assert code_of(lambda: fetch(f"http://10.1.2.3:{origin.port}/a.jpg", [], MB, 5.0, origins=policy)) == (
        ErrorCode.FORBIDDEN_URL
    )  # an unlisted private address


@pytest.mark.parametrize(
    ("allowed", "address"),
    [("", "169.254.169.254"), ("169.254.0.0/16", "169.254.169.254"), ("0.0.0.0/0", "169.254.169.254"),
     ("fd00::/8", "fd00:ec2::254"), ("::/0", "::ffff:169.254.169.254"), ("100.64.0.0/10", "100.100.100.200"),
     ("169.254.0.0/16", "169.254.170.2")],
)  # fmt: skip
def test_metadata_addresses_stay_forbidden_under_any_range(allowed, address):
    policy = origins(allowed)
    host = f"[{address}]" if ":" in address else address
    assert code_of(lambda: fetch(f"http://{host}/latest/meta-data/", [], MB, 2.0, origins=policy)) == (
        ErrorCode.FORBIDDEN_URL
    )
    assert policy.address_refusal(ipaddress.ip_address(address), True, False) is not None  # named host too


def test_a_metadata_address_passes_only_when_listed_by_itself():
    policy = origins("169.254.169.254/32")
    assert policy.address_refusal(ipaddress.ip_address("169.254.169.254"), False, False) is None
    assert policy.address_refusal(ipaddress.ip_address("169.254.170.2"), False, False) is not None


def test_a_listed_host_resolving_to_metadata_or_link_local_is_refused(resolve):
    resolve("images.internal.example", "169.254.169.254")
    policy = origins("images.internal.example")
    assert code_of(lambda: fetch("http://images.internal.example/a.jpg", [], MB, 2.0, origins=policy)) == (
        ErrorCode.FORBIDDEN_URL
    )
    assert policy.address_refusal(ipaddress.ip_address("fe80::1"), True, False) is not None
    assert policy.address_refusal(ipaddress.ip_address("10.9.8.7"), True, False) is None


@pytest.mark.parametrize(
    "target", ["http://10.0.0.5/a.jpg", "http://192.168.1.1/a.jpg", "http://169.254.169.254/latest/",
               "http://unlisted.example:{port}/photo.jpg", "http://127.0.0.1:{port}/photo.jpg"],
)  # fmt: skip
def test_a_redirect_from_an_allowed_origin_to_an_unlisted_private_one_is_refused(origin, resolve, target):
    resolve("images.internal.example", "127.0.0.1")
    resolve("unlisted.example", "127.0.0.1")
    policy = origins("images.internal.example")  # the host, not the range: 127.0.0.1 itself is not listed
    to = target.format(port=origin.port)
    url = f"http://images.internal.example:{origin.port}/redirect?to={to}"
    assert code_of(lambda: fetch(url, [], MB, 5.0, origins=policy)) == ErrorCode.FORBIDDEN_URL
    allowed = f"http://images.internal.example:{origin.port}/redirect?to=/photo.jpg"
    assert fetch(allowed, [], MB, 5.0, origins=policy) == PHOTO  # within the allowed origin: followed


# --- proxies ----------------------------------------------------------------------------------------------


def test_proxy_variables_are_read_as_curl_and_requests_read_them():
    proxies, no_proxy = proxy_environment(
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "lower:3128", "ALL_PROXY": "http://u%40x:p%3A@all:8080",
         "NO_PROXY": " .internal.example, 10.0.0.0/8,photos.test:8443 ", "HTTP_PROXY": ""}
    )  # fmt: skip
    assert (proxies["https"].host, proxies["https"].port) == (
        "lower",
        3128,
    )  # lower case wins; http:// implied
    assert (proxies["http"].host, proxies["http"].port) == ("all", 8080)  # empty HTTP_PROXY: ALL_PROXY
    assert proxies["http"].authorization == "Basic dUB4OnA6"  # "u@x:p:" percent-decoded
    assert "p%3A" not in repr(proxies["http"])
    assert bypasses_proxy(no_proxy, "a.b.internal.example", 443)
    assert bypasses_proxy(no_proxy, "internal.example", 80)
    assert not bypasses_proxy(no_proxy, "xinternal.example", 80)
    assert bypasses_proxy(no_proxy, "10.2.3.4", 80) and not bypasses_proxy(no_proxy, "11.2.3.4", 80)
    assert bypasses_proxy(no_proxy, "photos.test", 8443) and not bypasses_proxy(no_proxy, "photos.test", 443)
    assert bypasses_proxy(("*",), "anything.example", 80)


@pytest.mark.parametrize(
    "url", ["socks5://proxy:1080", "https://proxy:3128", "http://proxy:99999", "http://proxy/path"]
)
def test_a_proxy_url_the_fetch_cannot_use_is_a_settings_error(url):
    with pytest.raises(SettingsError, match="HTTPS_PROXY"):
        proxy_environment({"HTTPS_PROXY": url})


def test_http_goes_through_the_proxy_in_absolute_form_and_the_proxy_resolves(origin, proxy):
    policy = origins(http_proxy=f"http://127.0.0.1:{proxy.port}")
    url = f"http://photos.test:{origin.port}/photo.jpg?size=s"  # a name only the proxy can resolve
    assert fetch(url, [], MB, 5.0, origins=policy) == PHOTO
    assert [(m, t) for m, t, _ in proxy.requests] == [("GET", url)]


def test_https_goes_through_a_connect_tunnel_with_tls_checked_against_the_origin(tls, proxy):
    policy = origins(https_proxy=f"http://user:secret@127.0.0.1:{proxy.port}")
    proxy.authorization = "Basic dXNlcjpzZWNyZXQ="
    assert fetch(f"https://photos.test:{tls.port}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert [(m, t) for m, t, _ in proxy.requests] == [("CONNECT", f"photos.test:{tls.port}")]
    # the same server reached under a name its certificate does not carry: the check is against the origin
    assert code_of(
        lambda: fetch(f"https://other.test:{tls.port}/photo.jpg", [], MB, 5.0, origins=policy)
    ) == (ErrorCode.FETCH_FAILED)


def test_no_proxy_sends_listed_origins_direct_and_still_vetted(origin, proxy):
    for no_proxy in ("127.0.0.1", "127.0.0.0/8", "*"):
        policy = origins("127.0.0.0/8", http_proxy=f"127.0.0.1:{proxy.port}", no_proxy=no_proxy)
        assert fetch(f"{origin.base}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert proxy.requests == []
    policy = origins(http_proxy=f"127.0.0.1:{proxy.port}", no_proxy="127.0.0.1")  # direct, not allowed
    assert code_of(lambda: fetch(f"{origin.base}/photo.jpg", [], MB, 5.0, origins=policy)) == "forbidden_url"


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/a.jpg", "http://[fd00::1]/a.jpg", "http://2130706433/a.jpg", "http://0x7f.1/a.jpg",
            "http://169.254.169.254/latest/", "http://metadata/computeMetadata/v1/",
            "http://metadata.google.internal/computeMetadata/v1/", "http://printer.local/a.jpg",
            "http://localhost/a.jpg", "http://a.localhost/a.jpg", "https://10.1.1.1/a.jpg",
            # empty labels: TLS cannot even encode them (found by the fuzz test: a UnicodeError escaped)
            "https://.0/", "https://a..b/x.jpg", "http://.example/a.jpg"],
)  # fmt: skip
def test_through_a_proxy_private_addresses_and_internal_names_are_refused_unsent(proxy, url):
    policy = origins(http_proxy=f"127.0.0.1:{proxy.port}", https_proxy=f"127.0.0.1:{proxy.port}")
    assert code_of(lambda: fetch(url, [], MB, 2.0, origins=policy)) == ErrorCode.FORBIDDEN_URL
    assert proxy.requests == []


def test_through_a_proxy_listed_internal_names_and_ranges_pass_and_loopback_goes_direct(origin, proxy):
    proxy.names.update({"images": "127.0.0.1", "10.20.0.5": "127.0.0.1"})  # the proxy's view of the network
    policy = origins("images,10.20.0.0/16,127.0.0.0/8", http_proxy=f"127.0.0.1:{proxy.port}")
    assert fetch(f"http://images:{origin.port}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert fetch(f"http://10.20.0.5:{origin.port}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert len(proxy.requests) == 2
    assert fetch(f"{origin.base}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO  # the worker's own machine
    assert len(proxy.requests) == 2


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_one_deadline_covers_a_proxy_that_stalls(origin, proxy, scheme):
    proxy.stall = True
    policy = origins(http_proxy=f"127.0.0.1:{proxy.port}", https_proxy=f"127.0.0.1:{proxy.port}")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        fetch(f"{scheme}://photos.test:{origin.port}/photo.jpg", [], MB, 1.0, origins=policy)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 2.0, elapsed  # the deadline, plus a wide margin for a loaded machine
    assert len(proxy.requests) == 1  # it did reach the proxy, which held it


def test_an_unreachable_proxy_is_transient():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed when the block ends: nothing listens there after
    policy = origins(https_proxy=f"127.0.0.1:{port}")
    with pytest.raises(SourceUnavailable, match="unreachable"):
        fetch("https://photos.test/a.jpg", [], MB, 2.0, origins=policy)


def test_a_proxy_refusing_connect_is_forbidden_and_wanting_credentials_is_retried(proxy):
    policy = origins(https_proxy=f"127.0.0.1:{proxy.port}")
    proxy.answer = b"HTTP/1.1 403 Forbidden"
    assert code_of(lambda: fetch("https://photos.test/a.jpg", [], MB, 2.0, origins=policy)) == "forbidden_url"
    proxy.answer = None
    proxy.authorization = "Basic dXNlcjpzZWNyZXQ="
    with pytest.raises(SourceUnavailable, match="407"):
        fetch("https://photos.test/a.jpg", [], MB, 2.0, origins=policy)  # no credentials configured
    with pytest.raises(SourceUnavailable, match="407"):  # plain http: the proxy's 407 as the response
        fetch("http://photos.test/a.jpg", [], MB, 2.0, origins=origins(http_proxy=f"127.0.0.1:{proxy.port}"))


# --- keep-alive ---------------------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_for_many_fetches(origin):
    policy = origins("127.0.0.0/8", keepalive_s=30.0)
    for i in range(20):
        assert fetch(f"{origin.base}/photo-{i}.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert origin.accepts == 1
    for i in range(5):
        assert fetch(f"{origin.base}/photo-{i}.jpg", [], MB, 5.0, origins=origins("127.0.0.0/8")) == PHOTO
    assert origin.accepts == 1 + 5  # keep-alive 0: a connection per fetch


def test_keep_alive_is_safe_across_the_fetch_threads(origin):
    policy = origins("127.0.0.0/8", keepalive_s=30.0)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bodies = list(
            pool.map(lambda i: fetch(f"{origin.base}/photo-{i}.jpg", [], MB, 10.0, origins=policy), range(80))
        )
    assert bodies == [PHOTO] * 80
    assert 1 <= origin.accepts <= 8  # never more connections than fetches at once
    assert sorted(origin.requests) == sorted(f"/photo-{i}.jpg" for i in range(80))


@pytest.mark.parametrize("bad", ["/chunked-big", "/huge", "/missing.jpg", "/redirect?to=/photo.jpg"])
def test_a_response_not_read_to_its_end_is_never_reused(origin, bad):
    policy = origins("127.0.0.0/8", keepalive_s=30.0)
    assert fetch(f"{origin.base}/photo.jpg", [], MB // 2, 5.0, origins=policy) == PHOTO  # kept: 1 connection
    if bad.startswith("/redirect"):  # the redirect's connection is closed; its target's is new, and kept
        assert fetch(f"{origin.base}{bad}", [], MB // 2, 5.0, origins=policy) == PHOTO
    else:
        with pytest.raises(PermanentError):
            fetch(f"{origin.base}{bad}", [], MB // 2, 5.0, origins=policy)  # on the kept connection
    assert fetch(f"{origin.base}/photo.jpg", [], MB // 2, 5.0, origins=policy) == PHOTO
    assert origin.accepts == 2


def test_a_kept_connection_the_server_closed_is_retried_once_on_a_new_one(monkeypatch):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PHOTO) + PHOTO
    server = ScriptedHTTP([ok])  # answers once per connection, then hangs up without saying so
    try:
        policy = origins("127.0.0.0/8", keepalive_s=30.0)
        assert fetch(f"{server.base}/a.jpg", [], MB, 5.0, origins=policy) == PHOTO
        time.sleep(0.2)  # the server has closed its side
        assert fetch(f"{server.base}/b.jpg", [], MB, 5.0, origins=policy) == PHOTO  # seen closed: new one
        monkeypatch.setattr(keepalive, "_dropped", lambda conn: False)  # the close is not seen in time
        time.sleep(0.2)
        assert fetch(f"{server.base}/c.jpg", [], MB, 5.0, origins=policy) == PHOTO  # sent, reset, retried
        assert len(server.requests) == 3
    finally:
        server.close()


def test_idle_connections_are_closed_after_their_keep_alive_time(origin):
    policy = origins("127.0.0.0/8", keepalive_s=0.3)
    assert fetch(f"{origin.base}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    time.sleep(0.6)
    assert fetch(f"{origin.base}/photo.jpg", [], MB, 5.0, origins=policy) == PHOTO
    assert origin.accepts == 2


def test_https_and_connect_tunnels_are_kept_alive_too(tls, proxy, resolve):
    resolve("photos.test", "127.0.0.1")
    direct = Origins(hosts=frozenset({"photos.test"}), keepalive_s=30.0)
    for _ in range(5):
        assert fetch(f"https://photos.test:{tls.port}/photo.jpg", [], MB, 5.0, origins=direct) == PHOTO
    assert tls.accepts == 1
    tunnelled = origins(https_proxy=f"127.0.0.1:{proxy.port}", keepalive_s=30.0)
    for _ in range(5):
        assert fetch(f"https://photos.test:{tls.port}/photo.jpg", [], MB, 5.0, origins=tunnelled) == PHOTO
    assert proxy.accepts == 1 and tls.accepts == 2


def test_the_pool_is_bounded_and_closes_the_oldest_first():
    pool = keepalive.ConnectionPool(max_idle=2)
    conns = []
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1")
        conn.sock, peer = socket.socketpair()
        conns.append((conn, peer))
        pool.give("origin", conn, 30.0)
    assert pool.idle() == 2
    assert conns[0][0].sock is None  # the oldest was closed
    assert pool.take("origin") is conns[2][0]  # the most recently used comes first
    assert pool.take("elsewhere") is None
    conns[1][1].close()  # the peer hangs up: the idle connection is seen closed and not handed out
    assert pool.take("origin") is None
    for _, peer in conns:
        peer.close()
