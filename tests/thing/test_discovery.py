from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.thing import Credentials, CredentialsError
from hedgerow.thing.discovery import (
    MalformedDiscovery,
    discover,
    parse_discovery,
    parse_endpoint,
)
from hedgerow.thing.errors import (
    DiscoveryError,
    DiscoveryRefused,
    DiscoveryTLSError,
    DiscoveryUnavailable,
    NotInGroupError,
)
from tests.conftest import free_port

from .conftest import DiscoveryStandIn, Env, discovery_body

COMPAT_EXAMPLE = """{"GGGroups": [{"GGGroupId": "grp-1234",
  "Cores": [{"thingArn": "arn:aws:iot:us-east-1:123456789012:thing/MyCore",
    "Connectivity": [{"Id": "localhost_8883", "HostAddress": "localhost",
                      "PortNumber": 8883, "Metadata": ""}]}],
  "CAs": [%s]}]}"""


def test_parses_the_compat_example(env: Env) -> None:
    ca = env.groups[0].pem
    info = parse_discovery(COMPAT_EXAMPLE % json.dumps(ca))
    (group,) = info.groups
    assert group.group_id == "grp-1234"
    assert info.all_cas() == [("grp-1234", ca)]
    (core,) = info.all_cores()
    assert core.name == "MyCore"
    (candidate,) = info.candidates()
    assert (candidate.endpoint.host, candidate.endpoint.port, candidate.core) == (
        "localhost",
        8883,
        "MyCore",
    )
    assert parse_discovery(info.to_json()) == info


def test_duplicates_collapse_and_order_is_kept(env: Env) -> None:
    body = discovery_body([env.groups[0].pem], 8883)
    core = body["GGGroups"][0]["Cores"][0]
    core["Connectivity"] = [
        {"Id": "a", "HostAddress": "10.0.0.5", "PortNumber": 8883},
        {"Id": "b", "HostAddress": "core.local", "PortNumber": "8883"},
        {"Id": "a-again", "HostAddress": "10.0.0.5", "PortNumber": 8883},
    ]
    body["GGGroups"].append(body["GGGroups"][0])
    info = parse_discovery(json.dumps(body).encode())
    assert [str(c.endpoint) for c in info.candidates()] == ["10.0.0.5:8883", "core.local:8883"]


@pytest.mark.parametrize(
    "body, where",
    [
        ("not json", "not JSON"),
        ("[]", "not an object"),
        ('{"GGGroups": {}}', "GGGroups is not a list"),
        ('{"GGGroups": [{"Cores": []}]}', "GGGroupId"),
        (
            '{"GGGroups": [{"GGGroupId": "g", "Cores": [{"thingArn": "x", "Connectivity": [{"HostAddress": "h", "PortNumber": 70000}]}]}]}',
            "PortNumber",
        ),
        ('{"GGGroups": [{"GGGroupId": "g", "CAs": ["nope"]}]}', "PEM"),
    ],
)
def test_malformed_bodies_say_where(body: str, where: str) -> None:
    with pytest.raises(MalformedDiscovery, match=where):
        parse_discovery(body)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cloud.example", ("cloud.example", 8443)),
        ("cloud.example:9443", ("cloud.example", 9443)),
        ("https://127.0.0.1:8443/", ("127.0.0.1", 8443)),
        ("[::1]:8444", ("::1", 8444)),
        ("::1", ("::1", 8443)),
    ],
)
def test_endpoint_flag(value: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(value) == expected


@pytest.mark.parametrize("value", ["", "http://x", "host:99999", "host:abc"])
def test_bad_endpoint_flag(value: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(value)


async def test_discovers_over_mutual_tls(env: Env, discovery: DiscoveryStandIn) -> None:
    discovery.response = (200, discovery_body([env.groups[0].pem], 8883))
    info = await discover(discovery.endpoint, "bme680-1", env.credentials)
    assert discovery.requests == ["/greengrass/discover/thing/bme680-1"]
    assert info.all_cas()[0][1] == env.groups[0].pem


@pytest.mark.parametrize(
    "status, error, text",
    [
        (404, NotInGroupError, "knows no group"),
        (400, DiscoveryRefused, "HTTP 400"),
        (429, DiscoveryUnavailable, "HTTP 429"),
        (500, DiscoveryUnavailable, "HTTP 500"),
        (503, DiscoveryUnavailable, "HTTP 503"),
        (418, DiscoveryError, "HTTP 418"),
    ],
)
async def test_status_codes_become_typed_errors(
    env: Env, discovery: DiscoveryStandIn, status: int, error: type[Exception], text: str
) -> None:
    discovery.response = (status, {"errorMessage": "said the server"})
    with pytest.raises(error, match=text) as info:
        await discover(discovery.endpoint, "bme680-1", env.credentials)
    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    assert "said the server" in str(info.value)
    assert info.value.retryable == (status in (429, 500, 503))  # type: ignore[attr-defined]


async def test_a_certificate_for_another_thing_is_refused_with_a_hint(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    discovery.response = (200, discovery_body([env.groups[0].pem], 8883))
    with pytest.raises(DiscoveryRefused) as info:
        await discover(discovery.endpoint, "someone-else", env.credentials)
    assert info.value.status == 401
    assert "'bme680-1'" in str(info.value)  # the certificate's own name
    assert "-id" in info.value.hint


async def test_a_thing_in_no_group(env: Env, discovery: DiscoveryStandIn) -> None:
    discovery.response = (200, {"GGGroups": []})
    with pytest.raises(NotInGroupError, match="in no group") as info:
        await discover(discovery.endpoint, "bme680-1", env.credentials)
    assert "--group" in info.value.hint


async def test_group_without_core_address(env: Env, discovery: DiscoveryStandIn) -> None:
    body = discovery_body([env.groups[0].pem], 8883)
    body["GGGroups"][0]["Cores"][0]["Connectivity"] = []
    discovery.response = (200, body)
    with pytest.raises(NotInGroupError, match="no core with a known address"):
        await discover(discovery.endpoint, "bme680-1", env.credentials)


async def test_garbage_body_is_reported(env: Env, discovery: DiscoveryStandIn) -> None:
    discovery.response = (200, {"GGGroups": "nope"})
    with pytest.raises(DiscoveryError, match="unusable"):
        await discover(discovery.endpoint, "bme680-1", env.credentials)


async def test_timeout_is_retryable(env: Env, discovery: DiscoveryStandIn) -> None:
    discovery.hang = True
    with pytest.raises(DiscoveryUnavailable, match="timed out") as info:
        await discover(discovery.endpoint, "bme680-1", env.credentials, request_timeout=0.3)
    assert info.value.retryable


async def test_a_discovery_cancelled_in_its_tls_handshake_closes_its_socket(env: Env) -> None:
    """A thing that stops (or gives up) while discovery is in its TLS handshake must close
    its socket: httpx left it open, and a CLI test failed on the warning now and then."""
    peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peers.put((reader, writer))  # TCP accepted; no TLS answer, ever

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        task = asyncio.create_task(discover(f"127.0.0.1:{port}", "bme680-1", env.credentials))
        async with asyncio.timeout(10):
            reader, writer = await peers.get()
            await reader.read(1)  # the ClientHello has arrived: the handshake is under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass  # EOF: the client closed its end
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    gc.collect()  # a socket left open would warn here, and warnings are errors


async def test_unreachable_is_retryable(env: Env) -> None:
    with pytest.raises(DiscoveryUnavailable, match="cannot reach") as info:
        await discover(f"127.0.0.1:{free_port()}", "bme680-1", env.credentials)
    assert "check -e" in info.value.hint


async def test_wrong_root_ca_is_a_tls_error(
    env: Env, discovery: DiscoveryStandIn, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.make_ca("someone else's root").cert_pem)
    creds = Credentials.load(other, env.thing.cert, env.thing.key)
    with pytest.raises(DiscoveryTLSError, match="not trusted") as info:
        await discover(discovery.endpoint, "bme680-1", creds)
    assert "-r" in info.value.hint
    assert not info.value.retryable


async def test_a_certificate_from_another_ca_is_rejected_by_the_server(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    stranger = env.pki.client("bme680-1-stranger", ca=pki.make_ca("rogue"))
    creds = Credentials.load(env.pki.ca_file, stranger.cert, stranger.key)
    with pytest.raises((DiscoveryRefused, DiscoveryUnavailable)) as info:
        await discover(discovery.endpoint, "bme680-1", creds)
    assert discovery.requests == []
    assert "certificate" in str(info.value) or "cannot reach" in str(info.value)


# ---- credentials ----------------------------------------------------------------------


def test_missing_files_name_the_flag(env: Env, tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="does not exist") as info:
        Credentials.load(env.pki.ca_file, tmp_path / "nope.pem", env.thing.key)
    assert info.value.hint == "check the -c path"
    with pytest.raises(CredentialsError, match="is a directory"):
        Credentials.load(tmp_path, env.thing.cert, env.thing.key)


def test_swapped_and_mismatched_files(env: Env) -> None:
    with pytest.raises(CredentialsError, match="no PEM certificate") as info:
        Credentials.load(env.pki.ca_file, env.thing.key, env.thing.cert)
    assert "swap" in info.value.hint
    other = env.pki.client("other")
    with pytest.raises(CredentialsError, match="cannot use certificate") as info:
        Credentials.load(env.pki.ca_file, env.thing.cert, other.key)
    assert "issued for" in info.value.hint


def test_unreadable_file(env: Env) -> None:
    # /proc/self/mem exists but reading it from offset 0 fails (EIO), even for root
    with pytest.raises(CredentialsError, match="cannot read") as info:
        Credentials.load(env.pki.ca_file, env.thing.cert, "/proc/self/mem")
    assert "permissions" in info.value.hint


def test_certificate_name(env: Env) -> None:
    assert env.credentials.thing_name == "bme680-1"


async def test_concurrent_discoveries_share_nothing(env: Env, discovery: DiscoveryStandIn) -> None:
    discovery.response = (200, discovery_body([env.groups[0].pem], 8883))
    infos = await asyncio.gather(
        *(discover(discovery.endpoint, "bme680-1", env.credentials) for _ in range(5))
    )
    assert len({i for i in infos}) == 1
    assert len(discovery.requests) == 5
