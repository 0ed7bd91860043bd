"""A small stand-in for the Hedgerow cloud: the core's device-HTTPS API and the cloud MQTT
endpoint (a real hedgerow Broker), both over mutual TLS on loopback, run in the test process.

It speaks the contracts of ``docs/architecture.md`` so the core is tested as it will meet
the real cloud; it keeps what it receives for the tests to inspect.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11

from hedgerow import pki
from hedgerow.broker import Broker, BrokerConfig, CertificateAuthenticator, Identity
from hedgerow.contract.deployment import StatusReport
from hedgerow.mqtt.packets import Publish

from ..conftest import free_port
from .helpers import sign

CORE = "pi-1"
GROUP = "factory-1"


class FakeCloud:
    def __init__(self, directory: Path, root: pki.Issued) -> None:
        #: the group's things as GET /core/v1/things answers (None: not offered)
        self.members: list[str] | None = None
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.group_ca = pki.make_ca(f"{GROUP} Group CA")
        #: The group's CAs, newest first (``group_ca`` is the first).
        self.group_cas: list[pki.Issued] = [self.group_ca]
        self.group_cas_requests = 0
        self.signing_key = pki.new_signing_key()
        self.core_identity = pki.issue(root, CORE, unit="core")
        server = pki.issue(root, "cloud", unit="server", server_hosts=["127.0.0.1", "localhost"])
        (directory / "root-ca.pem").write_bytes(root.cert_pem)
        (directory / "server.cert.pem").write_bytes(server.cert_pem)
        (directory / "server.key").write_bytes(server.key_pem)
        self.https_port = free_port()
        self.mqtt_port = free_port()
        self.documents: dict[str, dict[str, str]] = {}
        self.artifacts: dict[str, bytes] = {}
        self.latest: str | None = None
        self.revoked: list[str] = []
        self.connectivity: list[Any] = []
        self.certificate_requests: list[list[str]] = []
        self.received: list[Publish] = []
        self.received_event = asyncio.Event()
        self.broker: Broker | None = None
        self._https: asyncio.Server | None = None

    # ---- provisioning ------------------------------------------------------------------

    def provision(
        self, data_dir: Path, local_port: int, extra: str = "", local_extra: str = ""
    ) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "core.cert.pem").write_bytes(self.core_identity.cert_pem)
        (data_dir / "core.key").write_bytes(self.core_identity.key_pem)
        (data_dir / "root-ca.pem").write_bytes(self.root.cert_pem)
        (data_dir / "deploy-verify.pem").write_bytes(
            pki.verify_key_to_pem(self.signing_key.public_key())
        )
        config = data_dir / "config.toml"
        config.write_text(
            f'[core]\nname = "{CORE}"\ngroup = "{GROUP}"\n'
            f'[cloud]\nhttps = "https://127.0.0.1:{self.https_port}"\n'
            f'mqtt = "mqtts://127.0.0.1:{self.mqtt_port}"\n'
            f'[local]\nhost = "127.0.0.1"\nport = {local_port}\nhosts = ["127.0.0.1", "localhost"]\n{local_extra}'
            "[connector]\nbackoff_base = 0.05\nbackoff_cap = 0.5\n"
            + (extra if "[status]" in extra else "[status]\nmetrics_port = 0\n" + extra)
        )
        return config

    def thing(self, name: str) -> pki.Issued:
        return pki.issue(self.root, name, unit="thing")

    def thing_context(self, thing: pki.Issued) -> ssl.SSLContext:
        """A device's TLS context: trusts only the group CA, presents its certificate."""
        base = self.directory / thing.cert.serial_number.__str__()
        base.mkdir(exist_ok=True)
        (base / "cert.pem").write_bytes(thing.cert_pem)
        (base / "key.pem").write_bytes(thing.key_pem)
        return pki.client_context(
            ca_data=self.group_ca.cert_pem.decode(),
            cert_file=str(base / "cert.pem"),
            key_file=str(base / "key.pem"),
        )

    # ---- deployments ---------------------------------------------------------------------

    async def deploy(
        self, text: str, *, signature: str | None = None, artifacts: tuple[bytes, ...] = ()
    ) -> str:
        deployment_id = str(json.loads(text)["deployment_id"])
        self.documents[deployment_id] = {
            "document": text,
            "signature": signature or sign(self.signing_key, text),
        }
        for data in artifacts:
            self.artifacts[hashlib.sha256(data).hexdigest()] = data
        self.latest = deployment_id
        await self._notify()
        return deployment_id

    async def _notify(self) -> None:
        if self.broker is not None and self.latest:
            payload = json.dumps({"deployment_id": self.latest}).encode()
            await self.broker.publish(
                f"$hedgerow/cores/{CORE}/deployments", payload, qos=1, retain=True
            )

    async def revoke(self, cert: pki.Issued) -> None:
        self.revoked.append(pki.fingerprint(cert.cert))
        if self.broker is not None:
            payload = json.dumps({"fingerprints": self.revoked}).encode()
            await self.broker.publish(
                f"$hedgerow/cores/{CORE}/revocations", payload, qos=1, retain=True
            )

    async def rotate_group_ca(self, *, announce: bool = True) -> pki.Issued:
        """A new group CA signs from now on; the previous one stays listed (the overlap)."""
        self.group_ca = pki.make_ca(f"{GROUP} Group CA {len(self.group_cas) + 1}")
        self.group_cas = [self.group_ca, self.group_cas[0]]
        if announce and self.broker is not None:
            await self.broker.publish(
                f"$hedgerow/cores/{CORE}/group-cas", self._group_cas_body(), qos=1, retain=True
            )
        return self.group_ca

    def _group_cas_body(self) -> bytes:
        return json.dumps({"group_cas": [ca.cert_pem.decode() for ca in self.group_cas]}).encode()

    def statuses(self) -> list[dict[str, Any]]:
        """The status reports received, read by the contract as the real cloud reads them."""
        reports = [
            StatusReport.from_json(p.payload)
            for p in self.received
            if p.topic.endswith("/deployment-status")
        ]
        return [
            {"deployment_id": r.deployment_id, "status": r.status.value, "detail": r.detail}
            for r in reports
        ]

    def telemetry(self, prefix: str) -> list[Publish]:
        return [p for p in self.received if p.topic.startswith(prefix)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.received_event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.received_event.wait(), 0.05)

    # ---- MQTT endpoint -------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        d = self.directory
        return pki.server_context(
            str(d / "server.cert.pem"),
            str(d / "server.key"),
            str(d / "root-ca.pem"),
            require_client_cert=True,
        )

    async def start_mqtt(self) -> None:
        broker = Broker(BrokerConfig(), authenticator=CertificateAuthenticator("core"))
        await broker.start()
        broker.add_interceptor(self._intercept)
        await broker.listen("127.0.0.1", self.mqtt_port, ssl=self._server_context())
        self.broker = broker
        await self._notify()

    async def stop_mqtt(self) -> None:
        if self.broker is not None:
            broker, self.broker = self.broker, None
            await broker.close()

    def _intercept(self, identity: Identity, publish: Publish) -> None:
        self.received.append(publish)
        self.received_event.set()

    # ---- device HTTPS ------------------------------------------------------------------

    async def start_https(self) -> None:
        self._https = await asyncio.start_server(
            self._serve, "127.0.0.1", self.https_port, ssl=self._server_context()
        )

    async def stop_https(self) -> None:
        if self._https is not None:
            self._https.close()
            await self._https.wait_closed()
            self._https = None

    async def __aenter__(self) -> FakeCloud:
        await self.start_https()
        await self.start_mqtt()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_mqtt()
        await self.stop_https()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                status, reply = self._answer(request.method.decode(), request.target.decode(), body)
                headers = [
                    ("content-length", str(len(reply))),
                    ("content-type", "application/json"),
                    ("date", email.utils.formatdate(usegmt=True)),
                ]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=reply)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        def js(value: Any, status: int = 200) -> tuple[int, bytes]:
            return status, json.dumps(value).encode()

        if method == "POST" and path == "/core/v1/certificate":
            request = json.loads(body)
            self.certificate_requests.append(request["hosts"])
            cert = pki.sign_csr(self.group_ca, request["csr"].encode(), common_name=CORE, unit="server",
                                server_hosts=request["hosts"])  # fmt: skip
            return js(
                {
                    "certificate": pki.cert_to_pem(cert).decode(),
                    "group_cas": [ca.cert_pem.decode() for ca in self.group_cas],
                }
            )
        if method == "PUT" and path == "/core/v1/connectivity":
            self.connectivity.append(json.loads(body)["endpoints"])
            return js({})
        if path == "/core/v1/deployments/latest":
            return js({"deployment_id": self.latest}) if self.latest else js({"error": "none"}, 404)
        if path.startswith("/core/v1/deployments/"):
            doc = self.documents.get(path.rsplit("/", 1)[1])
            return js(doc) if doc else js({"error": "not found"}, 404)
        if path.startswith("/core/v1/artifacts/"):
            data = self.artifacts.get(path.rsplit("/", 1)[1])
            return (200, data) if data is not None else js({"error": "not found"}, 404)
        if path == "/core/v1/revocations":
            return js({"fingerprints": self.revoked})
        if path == "/core/v1/things":
            if self.members is None:  # a cloud that predates membership announcements
                return js({"error": "no such path"}, 404)
            return js({"things": self.members})
        if method == "GET" and path == "/core/v1/group-cas":
            self.group_cas_requests += 1
            return 200, self._group_cas_body()
        return js({"error": "no such path"}, 404)
