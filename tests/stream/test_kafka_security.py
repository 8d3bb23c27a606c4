"""Kafka TLS and SASL reach every client: the worker (Faust/aiokafka), the indexer and the CLI clients
(confluent-kafka).

The embedded broker (Tansu 0.6) cannot serve TLS or SASL to these clients: its ``--cert`` listener does not
answer a TLS handshake, and it rejects librdkafka's SCRAM-SHA-512 handshake while advertising that very
mechanism. So TLS is tested end to end through a mutual-TLS proxy in front of a plaintext Tansu (what a
TLS-only listener looks like to a client), and SASL on the client objects each library builds.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from search.consumer import consume
from search.store import SearchIndex, TopicNames
from stream.app import create_app
from stream.clients import UploadPublisher, follow
from stream.kafka_security import faust_credentials, librdkafka_config
from stream.settings import Settings, SettingsError
from tools.embedded import Ports, tansu_binary


# -- certificates and a TLS-only listener ------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (CN darkroom-client)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=darkroom-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "darkroom-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d


class MutualTlsProxy:
    """Terminates TLS (client certificate required, signed by the test CA) in front of a plaintext broker;
    records the client certificates' common names."""

    def __init__(self, port: int, upstream_port: int, pki: Path) -> None:
        self.port, self.upstream_port = port, upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
        self.context.load_cert_chain(pki / "server.pem", pki / "server.key")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.clients: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the TLS proxy did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        async with await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context):
            self._ready.set()
            await self._stopped.wait()
        connections = asyncio.all_tasks() - {asyncio.current_task()}
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(x[0] for x in writer.get_extra_info("peercert")["subject"])
        self.clients.add(subject["commonName"])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass  # the other side went away: close ours too
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def tls_broker(
    pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, MutualTlsProxy]]:
    """Settings for a broker reachable only through mutual TLS (the three topics created over TLS), and the
    proxy that records who connected."""
    ports = Ports.free()
    plain, tls = ports.kafka, ports.web
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with log.open("wb") as fh:
        broker = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{tls}", "--storage-engine", "memory://tansu/"],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    proxy = MutualTlsProxy(tls, plain, pki)
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{tls}",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki / "ca.pem"),
        kafka_ssl_certfile=str(pki / "client.pem"),
        kafka_ssl_keyfile=str(pki / "client.key"),
    )
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", plain)) != 0:
            assert broker.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, **librdkafka_config(settings)})
        created = admin.create_topics([NewTopic(t, 1, 1) for t in TopicNames.from_settings(settings).all()])
        for future in created.values():
            future.result(timeout=30)
        yield settings, proxy
    finally:
        proxy.stop()
        broker.terminate()
        broker.wait(timeout=10)


# -- the clients over TLS ----------------------------------------------------------------------------------
def test_cli_clients_and_indexer_publish_and_read_through_a_mutual_tls_listener(tls_broker, tmp_path):
    settings, proxy = tls_broker
    publisher = UploadPublisher(settings.kafka_bootstrap, settings.uploads_topic, settings)
    value = b'{"photo_id": "p1", "url": "file:///photos/p1.jpg", "uploaded_at": "2026-01-01T00:00:00Z"}'
    publisher.send("p1", value)
    publisher.flush(timeout_s=30)
    seen = list(
        follow(settings.kafka_bootstrap, [settings.uploads_topic], idle_timeout_s=3, settings=settings)
    )
    assert (settings.uploads_topic, b"p1", value) in seen
    index = SearchIndex(tmp_path / "index.sqlite")
    applied = list(
        consume(
            index, settings.kafka_bootstrap, TopicNames.from_settings(settings), once=True, settings=settings
        )
    )
    assert sum(a.uploads for a in applied) >= 1 and index.url_of("p1") == "file:///photos/p1.jpg"
    assert proxy.clients == {"darkroom-client"}  # every connection presented the client cert


def test_a_client_without_the_tls_settings_cannot_reach_the_listener(tls_broker):
    tls_settings, _ = tls_broker
    publisher = UploadPublisher(tls_settings.kafka_bootstrap, tls_settings.uploads_topic)
    publisher.send("p2", b"{}")
    with pytest.raises(KafkaException, match="not delivered"):
        publisher.flush(timeout_s=3)


def test_the_workers_faust_producer_sends_through_the_mutual_tls_listener(tls_broker):
    tls_settings, _ = tls_broker

    async def send() -> None:
        app, _ = create_app(tls_settings)
        producer = app.producer._new_producer()  # the aiokafka producer Faust builds from broker_credentials
        await producer.start()
        try:
            await producer.send_and_wait(tls_settings.tags_topic, b"{}", key=b"p3")
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(send(), 30))
    seen = list(follow(tls_settings.kafka_bootstrap, [tls_settings.tags_topic], idle_timeout_s=3,
                       settings=tls_settings))  # fmt: skip
    assert (tls_settings.tags_topic, b"p3", b"{}") in seen


# -- SASL on the client objects ----------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_credentials_reach_the_workers_aiokafka_producer_and_consumer(mechanism, pki):
    settings = Settings(
        kafka_bootstrap="kafka:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="darkroom",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=str(pki / "ca.pem"),
    )

    async def clients() -> list:  # Faust and aiokafka build their objects inside a running loop
        app, _ = create_app(settings)
        producer = app.producer._new_producer()
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return [producer.client, consumer._client]

    for client in asyncio.run(clients()):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == mechanism
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("darkroom", "s3cret")
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_plaintext_reaches_aiokafka_without_tls():
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="u", kafka_sasl_password="p")  # fmt: skip

    async def client():  # Faust and aiokafka build their objects inside a running loop
        app, _ = create_app(settings)
        return app.producer._new_producer().client

    client = asyncio.run(client())
    assert (client._security_protocol, client._ssl_context) == ("SASL_PLAINTEXT", None)


def test_librdkafka_clients_get_sasl_and_tls_properties(pki):
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="u", kafka_sasl_password="p",
                        kafka_ssl_cafile=str(pki / "ca.pem"))  # fmt: skip
    assert librdkafka_config(settings) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": str(pki / "ca.pem"),
    }
    # librdkafka itself accepts them (it rejects unknown or inconsistent properties at construction)
    UploadPublisher("127.0.0.1:1", "t", settings)


# -- settings --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DARKROOM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "DARKROOM_KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
        ({"DARKROOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DARKROOM_KAFKA_SASL_USERNAME": "u",
          "DARKROOM_KAFKA_SASL_PASSWORD": "p"}, "DARKROOM_KAFKA_SASL_MECHANISM='' is not one of"),
        ({"DARKROOM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DARKROOM_KAFKA_SASL_MECHANISM": "PLAIN",
          "DARKROOM_KAFKA_SASL_USERNAME": "u"}, "DARKROOM_KAFKA_SASL_PASSWORD is required"),
        ({"DARKROOM_KAFKA_SASL_USERNAME": "u"}, "DARKROOM_KAFKA_SASL_USERNAME is set but"),
        ({"DARKROOM_KAFKA_SSL_CAFILE": "/etc/ca.pem"}, "DARKROOM_KAFKA_SSL_CAFILE is set but"),
        ({"DARKROOM_KAFKA_SECURITY_PROTOCOL": "SSL", "DARKROOM_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
         "DARKROOM_KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such file"),
    ],
)  # fmt: skip
def test_inconsistent_security_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_a_certificate_without_its_key_is_refused(pki):
    with pytest.raises(SettingsError, match="go together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=str(pki / "client.pem")).validate()


def test_a_file_that_is_not_pem_is_a_settings_error_naming_it(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="DARKROOM_KAFKA_SSL_CAFILE=.*not a PEM CA bundle"):
        faust_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(bogus)))


def test_the_password_is_never_in_the_settings_repr():
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                        kafka_sasl_username="u", kafka_sasl_password="hunter2")  # fmt: skip
    assert "hunter2" not in repr(settings)
