"""Greengrass V1 discovery: which groups a thing belongs to, their cores and CAs.

``parse_discovery`` turns the compat.md §1 JSON into frozen dataclasses (pure);
``discover`` fetches it with ``GET /greengrass/discover/thing/<name>`` over mutual TLS from a
Hedgerow cloud or any compatible endpoint and translates every failure into a
``DiscoveryError`` subclass that says what to do. ``DiscoveryClient`` does the same with
one TLS context kept across calls: its later discoveries resume the TLS session (a ticket
from the cloud: no certificate exchange, a fraction of the handshake's CPU on both sides).
A ``429``/``503`` with ``Retry-After`` becomes ``DiscoveryUnavailable.retry_after``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hedgerow import http11, pki

from .credentials import Credentials
from .errors import (
    DiscoveryError,
    DiscoveryRefused,
    DiscoveryTLSError,
    DiscoveryUnavailable,
    NotInGroupError,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 8443
DEFAULT_TIMEOUT = 10.0
PATH = "/greengrass/discover/thing/"
#: a discovery answer larger than this is refused (thousands of cores and CAs fit)
MAX_REPLY_BYTES = 4 * 1024 * 1024
#: characters a URL path segment carries as they are (RFC 3986 pchar), as httpx sent them
_PCHAR = "!$&'()*+,;=:@"
#: a Retry-After longer than this is taken as this (a misconfigured proxy must not park
#: a device for a day)
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way to reach a core: ``HostAddress`` and ``PortNumber``."""

    host: str
    port: int
    id: str = ""
    metadata: str = ""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Core:
    thing_arn: str
    endpoints: tuple[Endpoint, ...]

    @property
    def name(self) -> str:
        return self.thing_arn.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    cores: tuple[Core, ...]
    cas: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An endpoint to try, with the CAs its server certificate must chain to."""

    group_id: str
    core: str
    endpoint: Endpoint
    cas: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DiscoveryInfo:
    groups: tuple[Group, ...]

    def all_cas(self) -> list[tuple[str, str]]:
        """``(group_id, ca_pem)`` pairs, as the V1 SDK's ``getAllCas()``."""
        return [(g.group_id, ca) for g in self.groups for ca in g.cas]

    def all_cores(self) -> list[Core]:
        return [core for g in self.groups for core in g.cores]

    def candidates(self) -> Iterator[Candidate]:
        """Every advertised endpoint in order: groups, then cores, then connectivity entries."""
        for group in self.groups:
            for core in group.cores:
                for endpoint in core.endpoints:
                    yield Candidate(group.group_id, core.name, endpoint, group.cas)

    def to_json(self) -> dict[str, Any]:
        """The compat.md §1 response body."""
        return {
            "GGGroups": [
                {
                    "GGGroupId": g.group_id,
                    "Cores": [
                        {
                            "thingArn": c.thing_arn,
                            "Connectivity": [
                                {
                                    "Id": e.id,
                                    "HostAddress": e.host,
                                    "PortNumber": e.port,
                                    "Metadata": e.metadata,
                                }
                                for e in c.endpoints
                            ],
                        }
                        for c in g.cores
                    ],
                    "CAs": list(g.cas),
                }
                for g in self.groups
            ]
        }


class MalformedDiscovery(ValueError):
    """The discovery body is not in the expected shape (message says where)."""


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedDiscovery(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedDiscovery(f"{where} is not a list")
    return value


def _endpoint(raw: Any, where: str) -> Endpoint:
    item = _obj(raw, where)
    host = item.get("HostAddress")
    port = item.get("PortNumber")
    if not isinstance(host, str) or not host:
        raise MalformedDiscovery(f"{where}.HostAddress is missing")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise MalformedDiscovery(f"{where}.PortNumber is not a port number")
    return Endpoint(
        host, port, str(item.get("Id") or f"{host}_{port}"), str(item.get("Metadata") or "")
    )


def _core(raw: Any, where: str) -> Core:
    item = _obj(raw, where)
    arn = item.get("thingArn")
    if not isinstance(arn, str) or not arn:
        raise MalformedDiscovery(f"{where}.thingArn is missing")
    endpoints: dict[tuple[str, int], Endpoint] = {}
    for i, e in enumerate(_list(item.get("Connectivity"), f"{where}.Connectivity")):
        endpoint = _endpoint(e, f"{where}.Connectivity[{i}]")
        endpoints.setdefault((endpoint.host, endpoint.port), endpoint)
    return Core(arn, tuple(endpoints.values()))


def _group(raw: Any, where: str) -> Group:
    item = _obj(raw, where)
    group_id = item.get("GGGroupId")
    if not isinstance(group_id, str) or not group_id:
        raise MalformedDiscovery(f"{where}.GGGroupId is missing")
    cores: dict[str, Core] = {}
    for i, c in enumerate(_list(item.get("Cores"), f"{where}.Cores")):
        core = _core(c, f"{where}.Cores[{i}]")
        cores.setdefault(core.thing_arn, core)
    cas = []
    for i, ca in enumerate(_list(item.get("CAs"), f"{where}.CAs")):
        if not isinstance(ca, str):
            raise MalformedDiscovery(f"{where}.CAs[{i}] is not a string")
        try:
            pki.certs_from_pem(ca.encode())
        except pki.PKIError as exc:
            raise MalformedDiscovery(f"{where}.CAs[{i}] is not a PEM certificate") from exc
        cas.append(ca)
    return Group(group_id, tuple(cores.values()), tuple(cas))


def parse_discovery(body: bytes | str | Mapping[str, Any]) -> DiscoveryInfo:
    """Parse a discovery response body; raises ``MalformedDiscovery``."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedDiscovery(f"not JSON: {exc}") from exc
    data = _obj(body, "the response")
    groups: dict[str, Group] = {}
    for i, g in enumerate(_list(data.get("GGGroups"), "GGGroups")):
        group = _group(g, f"GGGroups[{i}]")
        groups.setdefault(group.group_id, group)
    return DiscoveryInfo(tuple(groups.values()))


def usable(info: DiscoveryInfo, thing: str) -> DiscoveryInfo:
    """``info`` if it names at least one endpoint and a CA; else ``NotInGroupError``."""
    if not info.groups:
        raise NotInGroupError(
            f"thing {thing!r} is in no group",
            thing=thing,
            status=200,
            hint=f"add it to a group (hedgerow cloud thing create --group GROUP {thing}) and deploy",
        )
    if not any(g.cas and any(c.endpoints for c in g.cores) for g in info.groups):
        raise NotInGroupError(
            f"the groups of thing {thing!r} have no core with a known address yet",
            thing=thing,
            status=200,
            hint="start the group's core (hedgerow core run) so it reports its addresses, then retry",
        )
    return info


# ---- the endpoint flag ------------------------------------------------------------------


def parse_endpoint(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``https://host:port/`` → ``(host, port)``."""
    text = value.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() != "https":
            raise ValueError(f"discovery endpoint {value!r} must use https")
    text = text.split("/", 1)[0]
    if not text:
        raise ValueError("discovery endpoint is empty")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"discovery endpoint {value!r} has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"discovery endpoint {value!r} has a bad port")
    return host, int(port_text)


# ---- fetching ---------------------------------------------------------------------------


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in its chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, Mapping):
        for key in ("errorMessage", "message", "error", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return ""


def retry_after_seconds(value: bytes | str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (delay-seconds or an HTTP date) as seconds from ``now``, capped at
    ``MAX_RETRY_AFTER_S``; None when absent or unreadable."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def _status_error(
    status: int,
    body: bytes,
    thing: str,
    where: str,
    cert_name: str,
    retry_after: float | None = None,
) -> DiscoveryError:
    said = _server_message(body)
    detail = f" ({said})" if said else ""
    if status == 404:
        return NotInGroupError(
            f"discovery at {where} knows no group for thing {thing!r}{detail}",
            thing=thing,
            status=status,
            hint="check -id is the thing's registered name and that the thing is in a group",
        )
    if status in (401, 403):
        owner = (
            f" (the certificate is for {cert_name!r})" if cert_name and cert_name != thing else ""
        )
        return DiscoveryRefused(
            f"discovery at {where} refused thing {thing!r}: HTTP {status}{detail}{owner}",
            thing=thing,
            status=status,
            hint="use the certificate issued for this thing and -id set to its name",
        )
    if status == 400:
        return DiscoveryRefused(
            f"discovery at {where} rejected the request for {thing!r}: HTTP 400{detail}",
            thing=thing,
            status=status,
            hint="check -id is a valid thing name",
        )
    if status == 429 or status >= 500:
        later = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
        return DiscoveryUnavailable(
            f"discovery at {where} is unavailable: HTTP {status}{detail}{later}",
            thing=thing,
            status=status,
            hint="the cloud is overloaded or failing: see its log",
            retry_after=retry_after,
        )
    return DiscoveryError(
        f"discovery at {where} answered HTTP {status}{detail}",
        thing=thing,
        status=status,
        hint="check -e points at a Hedgerow cloud's device port (8443)",
    )


#: what OpenSSL says when the far side is not a TLS server (plain HTTP, MQTT without TLS)
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "wrong version number",
    "RECORD_LAYER_FAILURE",
    "record layer failure",
    "UNKNOWN_PROTOCOL",
    "http request",
)


def _transport_error(exc: http11.HTTPError, thing: str, where: str, root_ca: str) -> DiscoveryError:
    verify = find_cause(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        reason = getattr(verify, "verify_message", "") or str(verify)
        return DiscoveryTLSError(
            f"the discovery server at {where} is not trusted: {reason}",
            thing=thing,
            hint=f"check -r ({root_ca}) is the root CA of this cloud and -e is a name in its certificate",
        )
    tls = find_cause(exc, ssl.SSLError)
    if tls is not None and "alert" in str(tls).lower():
        return DiscoveryRefused(
            f"the discovery server at {where} rejected this thing's certificate ({tls})",
            thing=thing,
            hint="use a certificate issued by this cloud (-c, -k)",
        )
    if tls is not None and any(m in str(tls) for m in _NOT_TLS):
        return DiscoveryRefused(
            f"the server at {where} does not speak TLS ({tls.__class__.__name__}: {tls})",
            thing=thing,
            hint="-e must name the cloud's device port (8443 by default: discovery over mutual"
            " TLS), not its REST API and console port (8080)",
        )
    if exc.timed_out:
        return DiscoveryUnavailable(
            f"discovery at {where} timed out",
            thing=thing,
            hint="check -e and the network",
        )
    return DiscoveryUnavailable(
        f"cannot reach discovery at {where}: {exc or type(exc).__name__}",
        thing=thing,
        hint="check -e and that the cloud is running",
    )


async def discover(
    endpoint: str | tuple[str, int],
    thing: str,
    credentials: Credentials,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> DiscoveryInfo:
    """Fetch the thing's groups, cores and CAs from a discovery endpoint (mutual TLS)."""
    info, _ = await _discover(endpoint, thing, credentials, request_timeout, context)
    return info


class DiscoveryClient:
    """Discovery for one set of credentials with one TLS context kept across calls, so
    that each discovery after the first resumes the TLS session the cloud gave.

    ``last_resumed``: whether the last discovery's handshake was a resumption;
    ``discoveries`` and ``resumed`` count them."""

    def __init__(self, credentials: Credentials, *, request_timeout: float = DEFAULT_TIMEOUT):
        self.credentials = credentials
        self.request_timeout = request_timeout
        self._context: ssl.SSLContext | None = None
        self.last_resumed = False
        self.discoveries = 0
        self.resumed = 0

    @property
    def context(self) -> ssl.SSLContext:
        if self._context is None:  # loading the key pair is not free on a small device
            self._context = self.credentials.discovery_context(resume=True)
        return self._context

    async def discover(self, endpoint: str | tuple[str, int], thing: str) -> DiscoveryInfo:
        self.discoveries += 1
        info, self.last_resumed = await _discover(
            endpoint, thing, self.credentials, self.request_timeout, self.context
        )
        self.resumed += self.last_resumed
        return info


async def _discover(
    endpoint: str | tuple[str, int],
    thing: str,
    credentials: Credentials,
    request_timeout: float,
    context: ssl.SSLContext | None,
) -> tuple[DiscoveryInfo, bool]:
    """The discovery and whether its TLS session was resumed."""
    host, port = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ctx = context or credentials.discovery_context()
    log.info("thing.discovery.request thing=%s endpoint=%s", thing, netloc)
    try:
        # our own one-request client: a discovery cancelled in its TLS handshake (a thing
        # stopping, a give-up deadline) closes its socket; httpx's left it open
        reply = await http11.fetch(
            host,
            port,
            "GET",
            f"{PATH}{quote(thing, safe=_PCHAR)}",
            headers=[("host", netloc), ("accept", "application/json")],
            ssl_context=ctx,
            timeout=request_timeout,
            max_body=MAX_REPLY_BYTES,
        )
    except http11.HTTPError as exc:
        raise _transport_error(exc, thing, netloc, str(credentials.root_ca)) from exc
    if isinstance(ctx, pki.ResumingContext):
        ctx.keep(host, reply.tls_session)
    body = reply.content
    if reply.status != 200:
        raise _status_error(
            reply.status,
            body,
            thing,
            netloc,
            credentials.thing_name,
            retry_after_seconds(reply.header(b"retry-after")),
        )
    try:
        info = parse_discovery(body)
    except MalformedDiscovery as exc:
        raise DiscoveryError(
            f"discovery at {netloc} answered something unusable: {exc}",
            thing=thing,
            status=200,
            hint="check -e points at a Hedgerow or Greengrass-compatible discovery endpoint",
        ) from exc
    log.info(
        "thing.discovery.ok thing=%s groups=%s endpoints=%s resumed=%s",
        thing,
        len(info.groups),
        sum(1 for _ in info.candidates()),
        reply.tls_resumed,
    )
    return usable(info, thing), reply.tls_resumed
