"""Kafka TLS and SASL: the ``DARKROOM_KAFKA_*`` security settings as each client library wants them.

Two libraries talk to a deployed Kafka: Faust (aiokafka) in the worker, and confluent-kafka (librdkafka) in
the indexer, ``publish``, ``tail`` and ``backfill``. Both get their security from here, so a cluster that
requires TLS or SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) is configured once, in ``Settings``. (kafka-python
only talks to the embedded broker of ``darkroom up`` and the benchmark, which is always plaintext.)
"""

from __future__ import annotations

import ssl

import faust

from stream.settings import Settings, SettingsError


def uses_tls(settings: Settings) -> bool:
    """Whether the connection to the brokers is encrypted (SSL or SASL_SSL)."""
    return settings.kafka_security_protocol.endswith("SSL")


def uses_sasl(settings: Settings) -> bool:
    """Whether the client authenticates with a user name and password (SASL_PLAINTEXT or SASL_SSL)."""
    return settings.kafka_security_protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context that verifies the brokers (the CA file, else the system's CAs) and presents the client
    certificate if one is set; None without TLS."""
    if not uses_tls(settings):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"DARKROOM_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile!r} is not a PEM CA bundle: {exc}"
        ) from None
    if settings.kafka_ssl_certfile:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"DARKROOM_KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile!r} and DARKROOM_KAFKA_SSL_KEYFILE="
                f"{settings.kafka_ssl_keyfile!r} are not a matching PEM certificate and key: {exc}"
            ) from None
    return context


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's ``broker_credentials`` (it hands them to aiokafka); None for plaintext."""
    context = ssl_context(settings)
    if uses_sasl(settings):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # with a context Faust uses SASL_SSL, without one SASL_PLAINTEXT
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def librdkafka_config(settings: Settings) -> dict[str, str]:
    """The confluent-kafka (librdkafka) properties for the security settings; merged into every client's."""
    config = {"security.protocol": settings.kafka_security_protocol.lower()}
    if uses_sasl(settings):
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password,
        }
    if uses_tls(settings):
        # librdkafka's bundled OpenSSL does not know this system's CA paths: "probe" finds them
        config["ssl.ca.location"] = settings.kafka_ssl_cafile or "probe"
        if settings.kafka_ssl_certfile:
            config["ssl.certificate.location"] = settings.kafka_ssl_certfile
            config["ssl.key.location"] = settings.kafka_ssl_keyfile
    return config
