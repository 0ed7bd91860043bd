"""Exporting telemetry to the operator's own systems: targets, batches, the cursor rule (pure).

A target (``[[telemetry.export]]`` in ``config.toml``) is a webhook (``https://…``: one
signed POST per batch), an MQTT broker (``mqtt(s)://host:port``: one QoS 1 PUBLISH per
message) or an AMQP 0-9-1 broker (``amqp(s)://user:pass@host:port/vhost``: one persistent
publish per message to ``exchange`` with publisher confirms; the routing key is the
rendered topic written as RabbitMQ's MQTT plugin writes it, ``routing_keys``). Each
target has a cursor in the database, the id of the last message it acknowledged; the
exporter (``exporters.py``, a job that runs once across replicas) reads the stored
messages after the cursor in id order, sends a batch, and moves the cursor only once the
target acknowledged all of it. A replica killed between the two sends the batch
again when the job is taken over: duplicates are possible, a gap is not.

``plan_batch`` is the rule that decides what the next batch is and how far the cursor
moves. Ids are handed out when a write starts, rows become visible when it commits: on
PostgreSQL a row may be visible while a lower id is still being written by another
transaction. So a hole in the ids is never skipped until the writes that could fill it
are over (the shell asks the database: ``hole_settled``); a settled hole is skipped and
counted as ``lost`` (deleted by retention before this target got it, or never committed).

The webhook body (``webhook_body``), JSON, is documented in docs/operations.md:
``{"target": NAME, "messages": [{"id", "topic", "core", "ts", "payload", "encoding"}]}``,
``encoding`` ``"utf-8"`` (the payload as text) or ``"base64"`` (any other bytes).
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from hedgerow.backoff import BackoffPolicy
from hedgerow.cloud.domain import Message
from hedgerow.cloud.routing_keys import routing_key_from_topic
from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.topics import matches as topic_matches
from hedgerow.mqtt.topics import validate_topic_filter

Kind = Literal["webhook", "mqtt", "amqp"]
Start = Literal["oldest", "newest"]
KINDS: Final = ("webhook", "mqtt", "amqp")
#: MQTT versions a target may speak ("3.1.1": brokers without 5, e.g. RabbitMQ 3.10).
PROTOCOLS: Final = ("5", "3.1.1")
#: MQTT 5 user properties on each exported message (a receiver dedupes on the id).
ID_PROPERTY: Final = "hedgerow-id"
CORE_PROPERTY: Final = "hedgerow-core"
TS_PROPERTY: Final = "hedgerow-ts"
#: AMQP: the MQTT topic as stored (the routing key is its RabbitMQ form)
TOPIC_HEADER: Final = "hedgerow-topic"
#: what installs the AMQP client (aiormq), imported only when an AMQP target is used
AMQP_EXTRA: Final = "hedgerow[amqp]"
#: AMQP: the exchange an export publishes to (RabbitMQ's MQTT plugin publishes there too)
DEFAULT_EXCHANGE: Final = "amq.topic"
#: AMQP: the content type of an exported message (the payload's bytes as the core sent them)
AMQP_CONTENT_TYPE: Final = "application/octet-stream"
DEFAULT_BATCH: Final = 500
MAX_BATCH: Final = 10_000
#: Seconds a target waits for an answer (HTTP response, every PUBACK or AMQP confirm of a batch).
DEFAULT_TIMEOUT_S: Final = 10.0
#: The schedule of retries of a target that failed: capped, fully jittered.
RETRY: Final = BackoffPolicy(base=1.0, cap=60.0)
#: Placeholders a topic template may use.
TEMPLATE_FIELDS: Final = frozenset({"topic", "core"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEFAULT_PORTS: Final = {
    "http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883, "amqp": 5672, "amqps": 5671,
}  # fmt: skip
_SCHEMES: Final = {
    "webhook": ("https", "http"),
    "mqtt": ("mqtts", "mqtt"),
    "amqp": ("amqps", "amqp"),
}
_EXAMPLES: Final = {
    "webhook": "https://hooks.example.org/telemetry",
    "mqtt": "mqtts://host:8883",
    "amqp": "amqps://user:pass@host:5671/vhost",
}
#: AMQP 0-9-1 short strings (exchange names, routing keys) are at most 255 bytes
_SHORTSTR: Final = 255
_EXCHANGE = re.compile(r"^[A-Za-z0-9_.:-]*$")


class ExportConfigError(ValueError):
    """A target's settings cannot be used; ``field`` names the key (``url``, ``topic``…)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ExportTarget:
    """One place telemetry is exported to (validated: build with ``export_target``)."""

    name: str
    kind: Kind
    url: str = field(repr=False)  # may hold a password: shown_url() for logs
    topic_filter: str = "#"
    batch_size: int = DEFAULT_BATCH
    #: where a new target's cursor starts: every stored message, or only new ones
    start: Start = "oldest"
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: webhook: the HMAC-SHA256 key of ``X-Hedgerow-Signature`` (empty: unsigned)
    secret: str = field(default="", repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: mqtt, amqp: ``{topic}`` and ``{core}`` are replaced (amqp: then ``/`` → ``.``)
    topic: str = "{topic}"
    #: mqtt: "5" (with the id, core and time as user properties) or "3.1.1"
    protocol: str = "5"
    client_id: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    #: amqp: the exchange published to ("": the default exchange, the key names a queue)
    exchange: str = DEFAULT_EXCHANGE
    #: amqp: a message no queue takes is returned, and the batch fails (not lost silently)
    mandatory: bool = True

    @property
    def job(self) -> str:
        """The name of this target's job (its lock across replicas)."""
        return f"telemetry-export/{self.name}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("https", "mqtts", "amqps")

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or f"hedgerow-export-{self.name}"

    def matches(self, topic: str) -> bool:
        return topic_matches(self.topic_filter, topic)

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "url": self.url}
        defaults = ExportTarget(self.name, self.kind, self.url)
        for key in ("topic_filter", "batch_size", "start", "timeout_s", "secret", "topic",
                    "protocol", "client_id", "ca_file", "cert_file", "key_file", "username", "password",
                    "exchange", "mandatory"):  # fmt: skip
            if getattr(self, key) != getattr(defaults, key):
                out[key] = getattr(self, key)
        if self.headers:
            out["headers"] = dict(self.headers)
        return out


def export_target(
    *,
    name: str,
    kind: str,
    url: str,
    topic_filter: str = "#",
    batch_size: int = DEFAULT_BATCH,
    start: str = "oldest",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    secret: str = "",
    headers: Mapping[str, str] | None = None,
    topic: str = "{topic}",
    protocol: str = "5",
    client_id: str = "",
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    username: str = "",
    password: str = "",
    exchange: str = DEFAULT_EXCHANGE,
    mandatory: bool = True,
) -> ExportTarget:
    """A checked ``ExportTarget``; ``ExportConfigError`` says which key is wrong and what to write."""
    if not _NAME.match(name):
        raise ExportConfigError(
            f"name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (it names the cursor)",
            "name",
        )
    if kind not in KINDS:
        raise ExportConfigError(f'kind {kind!r}: write kind = "webhook", "mqtt" or "amqp"', "kind")
    _check_url(kind, url)
    try:
        validate_topic_filter(topic_filter)
    except MQTTError as exc:
        raise ExportConfigError(
            f'topic_filter {topic_filter!r} is not an MQTT topic filter ({exc}): e.g. "sensors/#"',
            "topic_filter",
        ) from exc
    if not 1 <= batch_size <= MAX_BATCH:
        raise ExportConfigError(f"batch_size {batch_size}: use 1..{MAX_BATCH}", "batch_size")
    if start not in ("oldest", "newest"):
        raise ExportConfigError(f'start {start!r}: write "oldest" or "newest"', "start")
    if timeout_s <= 0:
        raise ExportConfigError(f"timeout_s {timeout_s}: must be positive", "timeout_s")
    header_items = tuple(sorted((headers or {}).items()))
    if kind != "amqp" and (exchange != DEFAULT_EXCHANGE or not mandatory):
        key = "exchange" if exchange != DEFAULT_EXCHANGE else "mandatory"
        raise ExportConfigError(f'{key} is for AMQP targets (kind = "amqp")', key)
    if kind != "mqtt" and protocol != "5":
        raise ExportConfigError("protocol is for MQTT targets", "protocol")
    if kind == "webhook":
        _check_webhook(header_items, topic, client_id, ca_file, cert_file, key_file, username)
    elif kind == "amqp":
        _check_amqp(secret, header_items, client_id, cert_file, key_file, username, password, url)
        _check_exchange(exchange)
        check_topic_template(topic)
    else:
        if protocol not in PROTOCOLS:
            raise ExportConfigError(f'protocol {protocol!r}: write "5" or "3.1.1"', "protocol")
        _check_mqtt(topic, secret, header_items, cert_file, key_file, username, password, url)
    return ExportTarget(
        name=name,
        kind=kind,  # type: ignore[arg-type]  # checked above
        url=url,
        topic_filter=topic_filter,
        batch_size=batch_size,
        start=start,  # type: ignore[arg-type]  # checked above
        timeout_s=timeout_s,
        secret=secret,
        headers=header_items,
        topic=topic,
        protocol=protocol,
        client_id=client_id,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        username=username,
        password=password,
        exchange=exchange,
        mandatory=mandatory,
    )


def check_unique(targets: Sequence[ExportTarget]) -> None:
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ExportConfigError(
                f"two targets are named {target.name!r}: give each its own name", "name"
            )
        seen.add(target.name)


def _check_url(kind: str, url: str) -> None:
    schemes = _SCHEMES[kind]
    example = _EXAMPLES[kind]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ExportConfigError(f"url {url!r}: {exc}; e.g. {example!r}", "url") from exc
    if parts.scheme not in schemes or not parts.hostname:
        raise ExportConfigError(
            f"url {url!r}: a {kind} target needs {' or '.join(s + '://' for s in schemes)}"
            f"host[:port], e.g. {example!r}",
            "url",
        )
    if kind == "mqtt" and parts.path not in ("", "/"):
        raise ExportConfigError(
            f"url {url!r}: an MQTT URL has no path; the topic comes from `topic`", "url"
        )
    if kind == "amqp" and (parts.query or parts.fragment or "/" in parts.path[1:]):
        raise ExportConfigError(
            f"url {url!r}: an AMQP URL is amqp(s)://[user:pass@]host[:port][/vhost] "
            "(a vhost with '/' in its name is written %2F), no query: TLS files are "
            "ca_file, cert_file, key_file",
            "url",
        )


def _check_webhook(
    headers: tuple[tuple[str, str], ...],
    topic: str,
    client_id: str,
    ca_file: str,
    cert_file: str,
    key_file: str,
    username: str,
) -> None:
    for key, value in (("topic", topic != "{topic}"), ("client_id", client_id),
                       ("cert_file", cert_file), ("key_file", key_file), ("username", username)):  # fmt: skip
        if value:
            raise ExportConfigError(
                f"{key} is for MQTT targets: a webhook takes url, secret, headers, ca_file", key
            )
    for name, value in headers:
        if not re.match(r"^[A-Za-z0-9-]+$", name) or "\n" in value or "\r" in value:
            raise ExportConfigError(
                f"header {name!r}: a header name is letters, digits and '-', a value one line",
                "headers",
            )
        if name.lower().startswith("x-hedgerow-") or name.lower() in ("content-type", "host"):
            raise ExportConfigError(
                f"header {name!r} is set by the exporter: choose another name", "headers"
            )


def _check_mqtt(
    topic: str,
    secret: str,
    headers: tuple[tuple[str, str], ...],
    cert_file: str,
    key_file: str,
    username: str,
    password: str,
    url: str,
) -> None:
    if secret or headers:
        key = "secret" if secret else "headers"
        raise ExportConfigError(
            f"{key} is for webhooks: an MQTT target authenticates with username/password "
            "or cert_file/key_file",
            key,
        )
    _check_login(cert_file, key_file, username, password, url, "mqtts")
    check_topic_template(topic)


def shown_url(url: str) -> str:
    """The URL without a password or query (both may carry secrets): for logs and views."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _check_login(
    cert_file: str, key_file: str, username: str, password: str, url: str, tls_scheme: str
) -> None:
    """A broker target's credentials: a whole key pair over TLS, a password with a user."""
    if bool(cert_file) != bool(key_file):
        raise ExportConfigError(
            "cert_file and key_file go together: set both or neither", "key_file"
        )
    if password and not username:
        raise ExportConfigError("password without username: set username too", "username")
    if cert_file and not url.startswith(f"{tls_scheme}://"):
        raise ExportConfigError(
            f"a client certificate needs TLS: use an {tls_scheme}:// url", "url"
        )


def _check_amqp(
    secret: str,
    headers: tuple[tuple[str, str], ...],
    client_id: str,
    cert_file: str,
    key_file: str,
    username: str,
    password: str,
    url: str,
) -> None:
    if secret or headers or client_id:
        key = "secret" if secret else "headers" if headers else "client_id"
        raise ExportConfigError(
            f"{key} is not for AMQP targets: an AMQP target takes url, exchange, topic, "
            "mandatory, username/password and ca_file/cert_file/key_file",
            key,
        )
    _check_login(cert_file, key_file, username, password, url, "amqps")
    parts = urlsplit(url)
    if username and (parts.username or parts.password):
        raise ExportConfigError(
            "the login is given twice: in the url and as username; keep one", "username"
        )


def _check_exchange(exchange: str) -> None:
    if len(exchange.encode()) > _SHORTSTR or not _EXCHANGE.match(exchange):
        raise ExportConfigError(
            f"exchange {exchange!r}: an AMQP exchange name is letters, digits, '-', '_', "
            "'.' and ':' (at most 255 bytes), e.g. \"amq.topic\"",
            "exchange",
        )


def check_topic_template(template: str) -> None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ExportConfigError(f"topic {template!r}: {exc}", "topic") from exc
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ExportConfigError(
            f"topic {template!r}: unknown placeholder {{{sorted(unknown)[0]}}}; "
            'use {topic} and {core}, e.g. "export/{core}/{topic}"',
            "topic",
        )
    sample = render_topic(template, "a/b", "core-1")
    if not sample or any(c in sample for c in "+#") or sample.startswith("$"):
        raise ExportConfigError(
            f"topic {template!r}: must give a topic name (no wildcards, no leading '$')", "topic"
        )


def render_topic(template: str, topic: str, core: str) -> str:
    return template.format(topic=topic, core=core)


@dataclass(frozen=True)
class AmqpPublish:
    """One ``basic.publish`` of an AMQP export: persistent (delivery mode 2), the message's
    id as ``message_id``, its time as ``timestamp`` (whole seconds) and, exact, in the
    headers, with its core and stored topic."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    timestamp: float
    headers: Mapping[str, str]
    content_type: str = AMQP_CONTENT_TYPE

    @property
    def key_fits(self) -> bool:
        """Whether AMQP can carry the routing key (a short string: 255 bytes)."""
        return len(self.routing_key.encode()) <= _SHORTSTR


def routing_key(target: ExportTarget, message: Message) -> str:
    """An AMQP target's routing key of ``message``: its rendered topic, ``/`` as ``.``."""
    return routing_key_from_topic(render_topic(target.topic, message.topic, message.core))


def amqp_publish(target: ExportTarget, message: Message) -> AmqpPublish:
    return AmqpPublish(
        exchange=target.exchange,
        routing_key=routing_key(target, message),
        body=message.payload,
        message_id=str(message.id),
        timestamp=message.ts,
        headers={**dict(user_properties(message)), TOPIC_HEADER: message.topic},
    )


def amqp_login_url(target: ExportTarget) -> str:
    """The URL an AMQP target connects to: ``username``/``password`` put in it when set
    (else the URL's own login; none at all means the client's default, guest)."""
    if not target.username:
        return target.url
    parts = urlsplit(target.url)
    login = quote(target.username, safe="")
    if target.password:
        login += ":" + quote(target.password, safe="")
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    netloc = f"{login}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def user_properties(message: Message) -> tuple[tuple[str, str], ...]:
    """What an MQTT 5 export adds to each message: its id, core and time."""
    return (
        (ID_PROPERTY, str(message.id)),
        (CORE_PROPERTY, message.core),
        (TS_PROPERTY, repr(message.ts)),
    )


# ---- the batch rule --------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """What to do next for one target.

    Send ``messages`` (possibly none: what was read did not match the filter); once the
    target acknowledged them, move the cursor to ``cursor`` and count ``lost`` skipped ids.
    ``hole`` is the first id of a hole that stopped the batch, not yet known to be settled.
    """

    messages: tuple[Message, ...]
    cursor: int | None
    lost: int = 0
    hole: int | None = None

    @property
    def moves(self) -> bool:
        return bool(self.messages) or self.lost > 0


def plan_batch(
    cursor: int | None,
    rows: Sequence[Message],
    target: ExportTarget,
    *,
    settled_hole: int | None = None,
) -> Batch:
    """The next batch from ``rows`` (stored messages after ``cursor``, ascending ids).

    A hole (an id missing after the cursor) ends the batch unless its first id is
    ``settled_hole``. ``cursor`` None: the target has seen nothing yet (an empty table
    when it was added), so ids before the first row are not counted as lost.
    """
    sent: list[Message] = []
    lost = 0
    position = cursor
    for row in rows:
        expected = (position + 1) if position is not None else None
        if expected is not None and row.id != expected:
            if row.id < expected:
                raise ValueError(f"rows out of order: {row.id} after {position}")
            if expected != settled_hole:
                return Batch(tuple(sent), position, lost, hole=expected)
            lost += row.id - expected
            settled_hole = None  # one hole per batch: the next one is looked at again
        elif expected is None and row.id != 1 and settled_hole != 1:
            # nothing seen yet: ids before the first row may still be being written
            return Batch(tuple(sent), position, lost, hole=1)
        position = row.id
        if target.matches(row.topic):
            sent.append(row)
            if len(sent) >= target.batch_size:
                break
    return Batch(tuple(sent), position, lost)


# ---- the wire ----------------------------------------------------------------------------


def payload_fields(payload: bytes) -> dict[str, str]:
    try:
        return {"payload": payload.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(payload).decode(), "encoding": "base64"}


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "topic": message.topic,
        "core": message.core,
        "ts": message.ts,
        **payload_fields(message.payload),
    }


def webhook_body(target: str, messages: Sequence[Message]) -> bytes:
    """The POST body of one batch (compact JSON, messages in id order)."""
    body = {"target": target, "messages": [message_json(m) for m in messages]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_payload(item: Mapping[str, Any]) -> bytes:
    """What a receiver does with one message of the body: its payload bytes."""
    if item["encoding"] == "base64":
        return base64.b64decode(item["payload"])
    return str(item["payload"]).encode("utf-8")
