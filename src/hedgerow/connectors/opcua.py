"""The OPC UA client connector: subscriptions to monitored items, writes, method calls, browse.

``asyncua`` is imported when a connector starts (or ``browse`` runs), never when this module
is imported. Link supervision: connect (security None, or Basic256Sha256 Sign /
SignAndEncrypt with our own certificate, which the server must trust; user and password when
set), create one subscription with every configured node as a monitored item (its sampling
interval, an absolute deadband filter when set), then wait for asyncua to report the
connection lost. A lost link is closed and re-established after a ``hedgerow.backoff``
delay with a new session and the subscription recreated, so values flow again without the
core restarting.

Each value change is published on ``{topic_prefix}/data/{node}`` as
``{"node", "node_id", "value", "status", "source_ts", "server_ts"}`` (timestamps ISO 8601,
UTC). Requests on ``{topic_prefix}/request``::

    {"id": 1, "write": {"node": "speed" | "node_id": "ns=2;s=Speed", "value": 12.5}}
    {"id": 2, "call": {"object": "ns=2;i=1", "method": "ns=2;i=7", "args": [1, 2]}}

are answered on ``{topic_prefix}/response`` with ``{"id", "status", "result"?, "error"?}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hedgerow.backoff import Backoff, BackoffPolicy, Uniform

from .config import OpcUaConfig, OpcUaNode, SecurityMode, SecurityPolicy
from .errors import ConnectorIOError, MissingLibraryError
from .modbus_requests import answer
from .model import ConnectorBase, Publish

log = logging.getLogger(__name__)


def _asyncua() -> Any:
    try:
        import asyncua
    except ImportError as exc:
        raise MissingLibraryError("asyncua") from exc
    return asyncua


def jsonable(value: Any) -> Any:
    """An OPC UA value as JSON can carry it (datetimes as ISO text, bytes as hex)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def change_payload(node: OpcUaNode, data_value: Any) -> bytes:
    status = data_value.StatusCode
    return json.dumps(
        {
            "node": node.name,
            "node_id": node.node_id,
            "value": jsonable(data_value.Value.Value if data_value.Value is not None else None),
            "status": status.name if status is not None else "Good",
            "source_ts": _iso(data_value.SourceTimestamp),
            "server_ts": _iso(data_value.ServerTimestamp),
        }
    ).encode()


async def _secure(client: Any, config: OpcUaConfig) -> None:
    asyncua = _asyncua()
    from asyncua.crypto import security_policies, uacrypto

    if config.security_policy is SecurityPolicy.NONE:
        return
    mode = {
        SecurityMode.SIGN: asyncua.ua.MessageSecurityMode.Sign,
        SecurityMode.SIGN_AND_ENCRYPT: asyncua.ua.MessageSecurityMode.SignAndEncrypt,
    }[config.security_mode]
    certificate = await uacrypto.load_certificate(config.certificate)
    uri = _application_uri(certificate)
    if uri:
        client.application_uri = uri
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        certificate=config.certificate,
        private_key=config.private_key,
        server_certificate=config.server_certificate or None,
        mode=mode,
    )


def _application_uri(certificate: Any) -> str | None:
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uris[0]) if uris else None


async def open_client(config: OpcUaConfig) -> Any:
    """A connected asyncua client for ``config`` (security and user applied)."""
    asyncua = _asyncua()
    client = asyncua.Client(config.url, timeout=config.timeout_s)
    await _secure(client, config)
    if config.username:
        client.set_user(config.username)
        client.set_password(config.password)
    try:
        await client.connect()
    except (OSError, TimeoutError, asyncua.ua.UaError) as exc:
        raise ConnectorIOError(f"cannot connect to {config.url}: {exc!r}") from exc
    return client


class _Changes:
    """asyncua's subscription handler: hands each change to the connector."""

    def __init__(self, connector: OpcUaConnector, nodes: dict[str, OpcUaNode]) -> None:
        self._connector = connector
        self._nodes = nodes

    async def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        spec = self._nodes.get(node.nodeid.to_string())
        if spec is not None:
            await self._connector._changed(spec, data.monitored_item.Value)

    async def status_change_notification(self, status: Any) -> None:
        self._connector._lost(f"subscription status {status}")


class OpcUaConnector(ConnectorBase):
    kind = "opcua"

    def __init__(
        self,
        config: OpcUaConfig,
        publish: Publish,
        *,
        uniform: Uniform | None = None,
        opener: Callable[[OpcUaConfig], Any] = open_client,
    ) -> None:
        super().__init__(config.name, publish)
        self.config = config
        self._opener = opener
        self._client: Any = None
        self._lost_event = asyncio.Event()
        self._backoff = Backoff(
            BackoffPolicy(
                base=config.backoff_base_s,
                cap=config.backoff_cap_s,
                stable_after=max(config.backoff_cap_s, 5.0),
            ),
            uniform=uniform,
        )
        self._by_name = {n.name: n for n in config.nodes}

    @property
    def request_topics(self) -> tuple[str, ...]:
        return (self.config.request_topic,)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            client = None
            try:
                client = await self._opener(self.config)
                self._lost_event = asyncio.Event()
                client.connection_lost_callback = self._on_connection_lost
                await self._subscribe(client)
                self._client = client
                if not first:
                    self.counters.reconnects += 1
                first = False
                self._backoff.connected(loop.time())
                self._linked()
                log.info("connectors.opcua.connected name=%s url=%s", self.name, self.config.url)
                await self._lost_event.wait()
                raise ConnectorIOError(self.counters.last_error or "connection lost")
            except (ConnectorIOError, OSError, TimeoutError) as exc:
                self.counters.errors += 1
                self._unlinked(str(exc))
                log.warning(
                    "connectors.opcua.link_lost name=%s url=%s error=%s",
                    self.name,
                    self.config.url,
                    exc,
                )
            except Exception as exc:  # asyncua raises its own UaError family
                if type(exc).__module__.split(".")[0] != "asyncua":
                    raise
                self.counters.errors += 1
                self._unlinked(str(exc))
                log.warning(
                    "connectors.opcua.failed name=%s url=%s error=%r",
                    self.name,
                    self.config.url,
                    exc,
                )
            finally:
                self._client = None
                if client is not None:
                    await self._close(client)
            self._backoff.disconnected(loop.time())
            if self.stopping:  # stopped while asyncua turned the cancel into an error
                raise asyncio.CancelledError
            await asyncio.sleep(self._backoff.next_delay())

    async def _close(self, client: Any) -> None:
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await client.disconnect()
        except Exception as exc:  # the link is gone already; closing is best effort
            log.debug("connectors.opcua.close_failed name=%s error=%r", self.name, exc)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost(f"connection lost: {exc!r}")

    def _lost(self, reason: str) -> None:
        self.counters.last_error = reason
        self._lost_event.set()

    async def _subscribe(self, client: Any) -> None:
        ua = _asyncua().ua
        handler = _Changes(
            self, {client.get_node(n.node_id).nodeid.to_string(): n for n in self.config.nodes}
        )
        subscription = await client.create_subscription(self.config.publishing_interval_ms, handler)
        for spec in self.config.nodes:
            node = client.get_node(spec.node_id)
            mfilter = None
            if spec.deadband > 0:
                mfilter = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValue,
                    DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=spec.deadband,
                )
            result = await subscription._subscribe(
                node,
                ua.AttributeIds.Value,
                mfilter,
                0,
                ua.MonitoringMode.Reporting,
                spec.sampling_interval_ms,
            )
            if isinstance(result, ua.StatusCode):
                raise ConnectorIOError(f"node {spec.name} ({spec.node_id}): {result.name}")

    async def _changed(self, node: OpcUaNode, data_value: Any) -> None:
        self.counters.polls += 1
        await self._publish(self.config.data_topic(node.name), change_payload(node, data_value))
        self.counters.values += 1

    async def handle(self, topic: str, payload: bytes) -> None:
        if topic != self.config.request_topic:
            return
        self.counters.requests += 1
        await self._publish(self.config.response_topic, await self._request(payload))

    async def _request(self, payload: bytes) -> bytes:
        try:
            message = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return answer(None, f"the request is not JSON: {exc}")
        if not isinstance(message, dict):
            return answer(
                None, 'expected {"id": ..., "write": {...}} or {"id": ..., "call": {...}}'
            )
        request_id = message.get("id")
        client = self._client
        if client is None:
            return answer(request_id, f"not connected to {self.config.url}")
        try:
            if isinstance(message.get("write"), dict):
                await self._write(client, message["write"])
                return answer(request_id)
            if isinstance(message.get("call"), dict):
                result = await self._call(client, message["call"])
                return answer(request_id, result=jsonable(result))
        except ValueError as exc:
            return answer(request_id, str(exc))
        except Exception as exc:  # asyncua's UaStatusCodeError and friends: tell the caller
            self.counters.errors += 1
            return answer(request_id, f"{type(exc).__name__}: {exc}")
        return answer(request_id, 'expected a "write" or a "call" object')

    def _node_id(self, body: dict[str, Any], key: str = "node") -> str:
        if isinstance(body.get(key), str):
            spec = self._by_name.get(body[key])
            if spec is None:
                raise ValueError(f"unknown node {body[key]!r}; known: {', '.join(self._by_name)}")
            return spec.node_id
        if isinstance(body.get(f"{key}_id"), str):
            return str(body[f"{key}_id"])
        raise ValueError(f'name the node with "{key}" (a configured name) or "{key}_id"')

    async def _write(self, client: Any, body: dict[str, Any]) -> None:
        ua = _asyncua().ua
        node = client.get_node(self._node_id(body))
        if "value" not in body:
            raise ValueError('a write needs a "value"')
        variant_type = await node.read_data_type_as_variant_type()
        await node.write_value(ua.DataValue(ua.Variant(body["value"], variant_type)))

    async def _call(self, client: Any, body: dict[str, Any]) -> Any:
        obj = client.get_node(self._node_id(body, "object"))
        method = _asyncua().ua.NodeId.from_string(self._node_id(body, "method"))
        args = body.get("args", [])
        if not isinstance(args, list):
            raise ValueError('"args" must be a list')
        return await obj.call_method(method, *args)


@dataclass(frozen=True, slots=True)
class BrowseEntry:
    depth: int
    node_id: str
    browse_name: str
    node_class: str


async def browse(
    config: OpcUaConfig, *, root: str = "i=85", depth: int = 3, limit: int = 1000
) -> list[BrowseEntry]:
    """The nodes under ``root`` (Objects by default), depth first, at most ``limit``."""
    client = await open_client(config)
    entries: list[BrowseEntry] = []
    try:

        async def walk(node: Any, level: int) -> None:
            for child in await node.get_children():
                if len(entries) >= limit:
                    return
                name = await child.read_browse_name()
                node_class = await child.read_node_class()
                entries.append(
                    BrowseEntry(level, child.nodeid.to_string(), name.to_string(), node_class.name)
                )
                if level + 1 < depth:
                    await walk(child, level + 1)

        await walk(client.get_node(root), 0)
    finally:
        await client.disconnect()
    return entries
