"""Real local servers for the internal-origin, proxy and keep-alive tests: an HTTP/1.1 photo origin that
counts the connections it accepts (plain or TLS, with a test CA), and a small forward proxy (absolute-form
``GET`` and ``CONNECT`` tunnels) that resolves names itself. All on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PHOTO = b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"  # 2 KiB standing in for a small photo


def make_ca(folder: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``names`` (DNS names, and 127.0.0.1): (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "darkroom test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class PhotoOrigin:
    """An HTTP/1.1 keep-alive origin: ``/photo*.jpg`` is ``PHOTO`` (or ``photos[path]``) with a Content-Length, ``/chunked-big``
    a chunked body of 1 MiB, ``/huge`` declares 1 TB, ``/missing.jpg`` is 404, ``/redirect?to=URL`` a 302.
    ``accepts`` counts the TCP connections it accepted."""

    def __init__(self, tls: tuple[Path, Path] | None = None, photos: dict[str, bytes] | None = None) -> None:
        outer = self
        self.photos = photos or {}  # other paths and their bytes (real photos for end-to-end tests)
        self.accepts = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive unless the client says otherwise
            timeout = 30  # an idle keep-alive connection is closed after this long

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with outer._lock:
                    outer.requests.append(self.path)
                try:
                    outer.route(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the fetcher hung up, as it may

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                conn, addr = super().get_request()
                with outer._lock:
                    outer.accepts += 1
                if tls is not None:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(str(tls[0]), str(tls[1]))
                    conn = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                return conn, addr

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        if path.startswith("http"):  # an absolute-form request line: only a proxy should get one
            h.send_error(400)
        elif path.startswith("/photo") or path in self.photos:
            body = self.photos.get(path, PHOTO)
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        elif path == "/chunked-big":
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for _ in range(16):
                h.wfile.write(b"10000\r\n" + b"\xff" * 0x10000 + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
        elif path == "/huge":
            h.send_response(200)
            h.send_header("Content-Length", str(10**12))
            h.end_headers()
            h.wfile.write(b"\xff\xd8")
            h.close_connection = True
        elif path == "/redirect":
            h.send_response(302)
            h.send_header("Location", urllib.parse.unquote(query.removeprefix("to=")))
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForwardProxy:
    """A forward proxy on 127.0.0.1: ``CONNECT host:port`` tunnels, absolute-form ``GET`` forwarded (one
    request per connection). It resolves names from ``names`` (anything else is used as given), so the
    names it is asked for need not exist. ``answer`` (e.g. ``b"HTTP/1.1 403 Forbidden"``) refuses every
    request; ``stall`` reads the request and never answers; ``credentials`` ("user:pass") requires them."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = names or {}
        self.answer: bytes | None = None
        self.stall = False
        self.authorization: str | None = None
        self.accepts = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, target, headers
        self._closed = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepts += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    part = client.recv(4096)
                    if not part:
                        return
                    head += part
                lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                self.requests.append((method, target, headers))
                if self.stall:
                    self._closed.wait(30)
                    return
                if self.answer is not None:
                    client.sendall(self.answer + b"\r\nContent-Length: 0\r\n\r\n")
                    return
                if self.authorization and headers.get("Proxy-Authorization") != self.authorization:
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                    return
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((self.names.get(host, host), int(port)), 5)
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self._relay(client, upstream)
                else:
                    self._forward(client, target, headers)
            except OSError:
                pass

    def _forward(self, client: socket.socket, target: str, headers: dict[str, str]) -> None:
        url = urllib.parse.urlsplit(target)
        host = url.hostname or ""
        with socket.create_connection((self.names.get(host, host), url.port or 80), 5) as upstream:
            path = url.path + (f"?{url.query}" if url.query else "")
            kept = {
                k: v for k, v in headers.items() if k.lower() not in ("proxy-authorization", "connection")
            }
            head = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in kept.items()), "Connection: close"]
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            while data := upstream.recv(65536):
                client.sendall(data)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        other = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        other.start()
        upstream.settimeout(None)
        client.settimeout(None)
        pump(client, upstream)
        other.join(10)
        upstream.close()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
