"""Stream and export definitions: parsed and checked from the SDKs' wire maps (pure).

A definition arrives as the CBOR map of ``MessageStreamDefinition.as_dict()``. Parsing keeps
the original map (``wire``) so that ``DescribeMessageStream`` answers with exactly what the
client sent, and builds a typed ``StreamDefinition`` the log and the exporters run on.

Exports. The SDKs' ``ExportDefinition`` knows ``http``, ``kinesis``, ``iotAnalytics``,
``IotSitewise`` and ``s3TaskExecutor``. Hedgerow exports to two places, both written as an
``HTTPConfig``:

* ``uri="hedgerow://cloud"`` (or ``hedgerow://cloud/<topic>``): into the core's durable cloud
  spool, stored by the Hedgerow cloud as telemetry on ``streams/<core>/<stream>`` (or the
  given topic, which a subscription to ``cloud`` in the group must cover);
  ``batchSize`` messages per spool commit, ``priority`` 1 (first) to 10;
* ``uri="http://…"`` or ``https://…``: POSTed to that endpoint, one message per request
  (``exportFormat`` RAW_NOT_BATCHED) or ``batchSize`` messages as one JSON array
  (JSON_BATCHED), retried with backoff until the endpoint answers 2xx.

The AWS-only destinations are refused with ``ExportNotAvailable`` naming these instead.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from .errors import ExportNotAvailable, InvalidRequest

NAME_PATTERN: Final = re.compile(r"[\w ,.\-_]*")
MAX_NAME: Final = 255
MIN_SIZE: Final = 1024
DEFAULT_MAX_SIZE: Final = 256 * 1024 * 1024
DEFAULT_SEGMENT_SIZE: Final = 16 * 1024 * 1024
MIN_TTL_MS: Final = 60_000
DEFAULT_CLOUD_BATCH: Final = 100
DEFAULT_HTTP_BATCH: Final = 1
MAX_BATCH: Final = 500
CLOUD_SCHEME: Final = "hedgerow"

#: What each AWS-only export type is called on the wire, and what to say about it.
UNAVAILABLE_EXPORTS: Final = {
    "kinesis": "Kinesis Data Streams",
    "iotAnalytics": "IoT Analytics",
    "IotSitewise": "IoT SiteWise",
    "s3TaskExecutor": "S3",
}


E = TypeVar("E", bound=enum.IntEnum)


class Strategy(enum.IntEnum):
    RejectNewData = 0
    OverwriteOldestData = 1


class Persistence(enum.IntEnum):
    File = 0
    Memory = 1


class ExportFormat(enum.IntEnum):
    RAW_NOT_BATCHED = 0
    JSON_BATCHED = 1


class ExportKind(enum.Enum):
    CLOUD = "cloud"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class ExportConfig:
    kind: ExportKind
    identifier: str
    uri: str
    batch_size: int
    batch_interval_ms: int | None
    priority: int
    start_sequence_number: int
    disabled: bool
    export_format: ExportFormat
    #: the cloud topic (``CLOUD`` only; empty = ``streams/<core>/<stream>``)
    topic: str = ""


@dataclass(frozen=True, slots=True)
class StreamDefinition:
    name: str
    max_size: int
    segment_size: int
    ttl_ms: int | None
    strategy: Strategy
    persistence: Persistence
    flush_on_write: bool
    exports: tuple[ExportConfig, ...]


def check_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{field} is required: a stream name of 1 to {MAX_NAME} characters")
    if len(value) > MAX_NAME or NAME_PATTERN.fullmatch(value) is None:
        raise InvalidRequest(
            f"{field} {value!r} is not a stream name: use 1 to {MAX_NAME} letters, digits, "
            "spaces, commas, periods, hyphens and underscores"
        )
    return value


def _int(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _enum(body: Mapping[str, Any], key: str, kind: type[E], default: E | None) -> E:
    value = body.get(key)
    if value is None:
        if default is None:
            raise InvalidRequest(f"{key} is required: one of {', '.join(m.name for m in kind)}")
        return default
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(
            f"{key} {value!r} is not one of {', '.join(f'{m.name}={m.value}' for m in kind)}"
        ) from None


def parse_definition(body: Any) -> StreamDefinition:
    """A ``MessageStreamDefinition`` map as a ``StreamDefinition``; ``InvalidRequest`` (or
    ``ExportNotAvailable``) naming the field otherwise."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("definition is required: a MessageStreamDefinition")
    name = check_name(body.get("name"))
    max_size = _int(body, "maxSize", DEFAULT_MAX_SIZE, MIN_SIZE, 2**63 - 1)
    segment = _int(body, "streamSegmentSize", DEFAULT_SEGMENT_SIZE, MIN_SIZE, 2**31 - 1)
    ttl = _int(body, "timeToLiveMillis", None, MIN_TTL_MS, 9223372036854)
    flush = body.get("flushOnWrite")
    if flush is not None and not isinstance(flush, bool):
        raise InvalidRequest(f"flushOnWrite must be true or false, got {flush!r}")
    assert max_size is not None and segment is not None
    return StreamDefinition(
        name=name,
        max_size=max_size,
        segment_size=min(segment, max_size),
        ttl_ms=ttl,
        strategy=_enum(body, "strategyOnFull", Strategy, None),
        persistence=_enum(body, "persistence", Persistence, Persistence.File),
        flush_on_write=bool(flush),
        exports=parse_exports(body.get("exportDefinition")),
    )


def parse_exports(body: Any) -> tuple[ExportConfig, ...]:
    if body is None:
        return ()
    if not isinstance(body, Mapping):
        raise InvalidRequest("exportDefinition must be an ExportDefinition")
    for key, what in UNAVAILABLE_EXPORTS.items():
        if body.get(key):
            raise ExportNotAvailable(
                key,
                f"{what} export is not available in Hedgerow: export to the Hedgerow cloud "
                "with HTTPConfig(uri='hedgerow://cloud') or to your own endpoint with "
                "HTTPConfig(uri='https://...')",
            )
    http = body.get("http") or []
    if not isinstance(http, list):
        raise InvalidRequest("exportDefinition.http must be a list of HTTPConfig")
    exports = tuple(_http_export(item) for item in http)
    seen: set[str] = set()
    for export in exports:
        if export.identifier in seen:
            raise InvalidRequest(f"export identifier {export.identifier!r} is used twice")
        seen.add(export.identifier)
    return exports


def _http_export(body: Any) -> ExportConfig:
    if not isinstance(body, Mapping):
        raise InvalidRequest("exportDefinition.http items must be HTTPConfig")
    identifier = check_name(body.get("identifier"), "identifier")
    uri = body.get("uri")
    if not isinstance(uri, str) or not uri:
        raise InvalidRequest(f"export {identifier!r}: uri is required")
    parts = urlsplit(uri)
    if parts.scheme == CLOUD_SCHEME:
        if parts.netloc != "cloud":
            raise InvalidRequest(
                f"export {identifier!r}: {uri!r} is not a Hedgerow destination: "
                "use hedgerow://cloud or hedgerow://cloud/<topic>"
            )
        kind, topic, default_batch = ExportKind.CLOUD, parts.path.strip("/"), DEFAULT_CLOUD_BATCH
        if "+" in topic or "#" in topic:
            raise InvalidRequest(f"export {identifier!r}: topic {topic!r} has a wildcard")
    elif parts.scheme in ("http", "https") and parts.hostname:
        kind, topic, default_batch = ExportKind.HTTP, "", DEFAULT_HTTP_BATCH
    else:
        raise InvalidRequest(
            f"export {identifier!r}: uri {uri!r} must be hedgerow://cloud or http(s)://host/path"
        )
    disabled = body.get("disabled")
    batch = _int(body, "batchSize", default_batch, 1, MAX_BATCH)
    priority = _int(body, "priority", 10, 1, 10)
    start = _int(body, "startSequenceNumber", 0, 0, 2**63 - 1)
    assert batch is not None and priority is not None and start is not None
    return ExportConfig(
        kind=kind,
        identifier=identifier,
        uri=uri,
        batch_size=batch,
        batch_interval_ms=_int(body, "batchIntervalMillis", None, 0, 9223372036854),
        priority=priority,
        start_sequence_number=start,
        disabled=bool(disabled),
        export_format=_enum(body, "exportFormat", ExportFormat, ExportFormat.RAW_NOT_BATCHED),
        topic=topic,
    )


@dataclass(frozen=True, slots=True)
class ReadOptions:
    start: int
    min_count: int
    max_count: int
    timeout_ms: int


def parse_read_options(body: Any) -> ReadOptions:
    """``ReadMessagesOptions`` with the SDKs' defaults: start 0, min 1, max = min, no wait."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise InvalidRequest("readMessagesOptions must be a ReadMessagesOptions")
    start = _int(body, "desiredStartSequenceNumber", 0, 0, 2**63 - 1)
    low = _int(body, "minMessageCount", 1, 1, 2**31 - 1)
    assert start is not None and low is not None
    high = _int(body, "maxMessageCount", low, 1, 2**31 - 1)
    timeout = _int(body, "readTimeoutMillis", 0, 0, 9223372036854)
    assert high is not None and timeout is not None
    if low > high:
        raise InvalidRequest("minMessageCount must be less than or equal to maxMessageCount")
    return ReadOptions(start, low, high, timeout)
