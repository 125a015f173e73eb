"""HTTPS providers: TLS with SNI, the certificate checked against the trust store."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import FakeProvider

from .conftest import KEYS, start_gateway

pytestmark = pytest.mark.integration


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for DNS:localhost."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=plano test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def https_fake(certs: tuple[Path, Path, Path]) -> Iterator[FakeProvider]:
    _, cert, key = certs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeProvider("fake-https", tls=context).start()
    yield fake
    fake.stop()


def tls_config(fake: FakeProvider) -> str:
    return f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {{port}}
llm_providers:
  - model: secure/model-a
    access_key: $FAKE_OPENAI_KEY
    base_url: {fake.base_url(host="localhost")}
"""


def post(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "secure/model-a", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_https_provider_gets_sni_and_a_verified_connection(
    https_fake: FakeProvider, certs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, _, _ = certs
    # `up` takes the trust store from SSL_CERT_FILE, as OpenSSL-based tools do.
    gw = start_gateway(tls_config(https_fake), tmp_path, env={**KEYS, "SSL_CERT_FILE": str(ca)})
    try:
        response = post(gw.url)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "from fake-https"
        assert https_fake.server_names and set(https_fake.server_names) == {"localhost"}
        got = https_fake.received[0]
        assert got.headers["host"].startswith("localhost:")
        assert got.headers["authorization"] == "Bearer sk-fake-openai"
    finally:
        gw.stop()


def test_untrusted_certificate_is_refused(https_fake: FakeProvider, tmp_path: Path) -> None:
    # The system trust store does not know the test CA: Envoy must not send the request.
    gw = start_gateway(tls_config(https_fake), tmp_path)
    try:
        response = post(gw.url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_unavailable"
        assert not https_fake.received
    finally:
        gw.stop()
