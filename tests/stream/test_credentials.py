"""kafka_client_options (librdkafka names) -> the Faust worker's broker credentials (pure)."""

from __future__ import annotations

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from recsys.errors import ConfigError
from recsys.settings import load_settings
from stream.app import broker_credentials, create_app


@pytest.mark.parametrize("options", [{}, {"security.protocol": "plaintext"},
                                     {"client.id": "shop-1", "socket.timeout.ms": "5000"}])
def test_plaintext_needs_no_credentials(options):
    assert broker_credentials(options) is None


def test_sasl_ssl_scram_becomes_aiokafka_settings():
    creds = broker_credentials({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                "sasl.username": "recsys", "sasl.password": "s3cret"})
    assert isinstance(creds, SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("recsys", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_sasl_plaintext_has_no_tls():
    auth = credentials_to_aiokafka_auth(broker_credentials(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
         "sasl.username": "u", "sasl.password": "p"}))
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["ssl_context"] is None


def test_ssl_without_verification_is_honoured():
    creds = broker_credentials({"security.protocol": "SSL",
                                "enable.ssl.certificate.verification": "false"})
    assert isinstance(creds, SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_NONE
    assert creds.context.check_hostname is False


@pytest.mark.parametrize(("options", "names"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI",
      "sasl.username": "u", "sasl.password": "p"}, "GSSAPI"),
    ({"security.protocol": "SASL_SSL", "sasl.username": "u"}, "sasl.password"),
    ({"security.protocol": "SSL", "ssl.crl.location": "/etc/crl.pem"}, "ssl.crl.location"),
    ({"security.protocol": "KERBEROS"}, "KERBEROS"),
])
def test_what_aiokafka_cannot_honour_is_refused_at_start_up(options, names):
    with pytest.raises(ConfigError, match=names):
        broker_credentials(options)


def test_the_app_carries_the_credentials():
    settings = load_settings(kafka_client_options={
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "recsys", "sasl.password": "s3cret"})
    app = create_app(settings)
    assert isinstance(app.conf.broker_credentials, SASLCredentials)
    assert app.conf.broker_credentials.username == "recsys"
