"""What keep-alive saves: the worker's own fetch of N small photos from one local origin (plain HTTP and
HTTPS), with connections reused (``DARKROOM_FETCH_KEEPALIVE_S`` > 0) and with a new connection per photo.

``python -m tools.bench.keepalive [--photos 500] [--threads 1] [--repeats 5]`` prints one JSON object: per
scheme and mode, the median run's photos per second, median and p95 milliseconds per fetch, and the new
connections the origin accepted. The origin runs in its own process (so it does not share the fetching
threads' GIL) on 127.0.0.1: the numbers are the connection set-up cost alone (TCP, TLS); a real network adds
its round trips to every new connection, which reuse saves too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import ipaddress
import json
import multiprocessing
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console

from stream.fetch import fetch
from stream.keepalive import POOL
from stream.origins import Origins

PHOTO = b"\xff\xd8" + os.urandom(30_000) + b"\xff\xd9"  # about a thumbnail


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO)


def _serve(certs: tuple[str, str] | None, accepts: Any, ports: Any) -> None:
    """The origin's process: its own interpreter, so it does not share the fetching threads' GIL."""
    tls = None
    if certs:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*certs)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):  # type: ignore[no-untyped-def]
            conn, addr = super().get_request()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as nginx and other servers do
            with accepts.get_lock():
                accepts.value += 1
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            return conn, addr

    server = Server(("127.0.0.1", 0), _Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


class _Origin:
    """An HTTP/1.1 keep-alive origin on 127.0.0.1 serving ``PHOTO`` from another process, counting the
    connections it accepts."""

    def __init__(self, certs: tuple[str, str] | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._accepts = context.Value("i", 0)
        ports = context.Queue()
        self._process = context.Process(target=_serve, args=(certs, self._accepts, ports), daemon=True)
        self._process.start()
        self.base = f"{'https' if certs else 'http'}://127.0.0.1:{ports.get(timeout=60)}"

    @property
    def accepts(self) -> int:
        return int(self._accepts.value)

    def close(self) -> None:
        self._process.terminate()
        self._process.join(10)


def _certificate(folder: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 that the fetch is told to trust (``SSL_CERT_FILE``,
    as a site trusts its internal CA): (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(alt, critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.environ["SSL_CERT_FILE"] = str(folder / "cert.pem")
    return str(folder / "cert.pem"), str(folder / "key.pem")


def _run(origin: _Origin, photos: int, threads: int, keepalive_s: float) -> dict[str, float | int]:
    """Fetch ``photos`` photos on ``threads`` threads with the worker's fetch; the figures of that run."""
    POOL.clear()
    origins = Origins(networks=(ipaddress.ip_network("127.0.0.0/8"),), keepalive_s=keepalive_s)

    def one(i: int) -> float:
        started = time.perf_counter()
        data = fetch(f"{origin.base}/photo-{i}.jpg", [], 10**6, 10.0, origins=origins)
        assert len(data) == len(PHOTO)
        return time.perf_counter() - started

    one(-1)  # warm-up: imports, the first TLS context
    accepts_before = origin.accepts
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        seconds = sorted(pool.map(one, range(photos)))
    elapsed = time.perf_counter() - started
    return {
        "photos_per_s": round(photos / elapsed, 1),
        "median_ms": round(statistics.median(seconds) * 1000, 3),
        "p95_ms": round(seconds[int(0.95 * (len(seconds) - 1))] * 1000, 3),
        "new_connections": origin.accepts - accepts_before,  # after one warm-up fetch
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.keepalive", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--photos", type=int, default=500, help="photos fetched per run")
    parser.add_argument("--threads", type=int, default=1, help="fetches at once (the worker's fetch threads)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode; the median run is reported")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    results: dict[str, object] = {"photos": args.photos, "photo_bytes": len(PHOTO), "threads": args.threads,
                                  "repeats": args.repeats}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for scheme, certs in (("http", None), ("https", _certificate(Path(folder)))):
            origin = _Origin(certs)
            try:
                for mode, keepalive_s in (("reused", 30.0), ("new_per_fetch", 0.0)):
                    runs = []
                    for repeat in range(args.repeats):
                        with console.status(f"{scheme}, connections {mode}: run {repeat + 1}/{args.repeats}"):
                            runs.append(_run(origin, args.photos, args.threads, keepalive_s))
                    runs.sort(key=lambda run: run["photos_per_s"])
                    results[f"{scheme}_{mode}"] = runs[
                        len(runs) // 2
                    ]  # the median run: a busy machine is noisy
            finally:
                origin.close()
    POOL.clear()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
