"""A real asyncua server for the tests: a machine with Speed, Count and an Add method.

``secure=True`` offers only Basic256Sha256 SignAndEncrypt, trusts exactly the client
certificate the test made (in a trust store directory) and requires a user name and password.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:hedgerow:test:machine"
USER, PASSWORD = "operator", "s3cret-pass"


@dataclass(frozen=True)
class Certs:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    trusted: Path  # the server's trust store: the client certificate only


async def make_certs(directory: Path) -> Certs:
    trusted = directory / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    certs = Certs(
        directory / "server.der",
        directory / "server.pem",
        trusted / "client.der",
        directory / "client.pem",
        trusted,
    )
    await setup_self_signed_certificate(
        certs.server_key,
        certs.server_cert,
        "urn:hedgerow:test:server",
        "127.0.0.1",
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": "test server"},
    )
    await setup_self_signed_certificate(
        certs.client_key,
        certs.client_cert,
        "urn:hedgerow:test:core",
        "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": "hedgerow core"},
    )
    return certs


class Passwords(UserManager):
    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == USER and password == PASSWORD:
            return User(role=UserRole.User)
        return None


@dataclass
class Machine:
    server: Server
    url: str
    speed: Any
    count: Any
    namespace: int
    machine: Any
    add: Any


@contextlib.asynccontextmanager
async def machine_server(
    port: int, certs: Certs | None = None, *, sign_only: bool = False
) -> AsyncIterator[Machine]:
    server = Server(user_manager=Passwords()) if certs else Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/hedgerow/"
    server.set_endpoint(url)
    if certs:
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_Sign if sign_only
            else ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])  # fmt: skip
        server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(certs.server_cert))
        await server.load_private_key(str(certs.server_key))
        store = TrustStore([certs.trusted], [])
        await store.load()
        server.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
        )
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE)
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine", ns), f"{ns}:Machine")
    speed = await machine.add_variable(ua.NodeId("Speed", ns), f"{ns}:Speed", 0.0)
    count = await machine.add_variable(
        ua.NodeId("Count", ns), f"{ns}:Count", 0, ua.VariantType.Int64
    )
    await speed.set_writable()
    await count.set_writable()

    async def add_fn(parent: Any, a: Any, b: Any) -> list[ua.Variant]:
        values = [v.Value if isinstance(v, ua.Variant) else v for v in (a, b)]
        return [ua.Variant(values[0] + values[1], ua.VariantType.Int64)]

    add = await machine.add_method(
        ua.NodeId("Add", ns),
        f"{ns}:Add",
        add_fn,
        [ua.VariantType.Int64, ua.VariantType.Int64],
        [ua.VariantType.Int64],
    )
    async with server:
        yield Machine(server, url, speed, count, ns, machine, add)
