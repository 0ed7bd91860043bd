"""HTTP export: what a batch of records becomes on the wire, and the POST itself.

``RAW_NOT_BATCHED`` (the SDK's default): one ``POST`` per message, the payload as the body
(``application/octet-stream``). ``JSON_BATCHED``: one ``POST`` per batch (``batchSize``
messages), a JSON array of ``{"streamName", "sequenceNumber", "ingestTime", "payload"}``
with the payload in base64. A 2xx answer acknowledges; anything else is retried with
jittered backoff (the stream keeps the data meanwhile, within its own limits).
The cloud export needs no code here: the manager hands records to the core's spool.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .model import ExportConfig, ExportFormat
from .store import Record

#: Seconds one export POST may take (connect, TLS, send, answer).
HTTP_TIMEOUT = 30.0


def http_requests(
    stream: str, config: ExportConfig, records: list[Record]
) -> Iterator[tuple[bytes, str, list[Record]]]:
    """``(body, content type, the records it carries)`` for each request, in order."""
    if config.export_format is ExportFormat.RAW_NOT_BATCHED:
        for record in records:
            yield record[2], "application/octet-stream", [record]
        return
    body = [
        {
            "streamName": stream,
            "sequenceNumber": seq,
            "ingestTime": ingest,
            "payload": base64.b64encode(payload).decode(),
        }
        for seq, ingest, payload in records
    ]
    yield json.dumps(body, separators=(",", ":")).encode(), "application/json", records


async def post_http(url: str, body: bytes, content_type: str) -> int:
    """POST ``body`` to ``url`` with the core's small HTTP client; the status code.
    Failures before an answer raise ``OSError`` (the caller retries)."""
    from hedgerow.core.https import HTTPSError, parse_base_url, request

    try:
        origin = parse_base_url(url)
        response = await request(
            f"{origin.scheme}://{origin.authority}",
            "POST",
            origin.prefix or "/",
            content=body,
            content_type=content_type,
            timeout=HTTP_TIMEOUT,
        )
    except HTTPSError as exc:
        raise OSError(f"{url}: {exc}") from exc
    return response.status


class _Writer(Protocol):
    def add(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class _Spool(Protocol):
    max_bytes: int

    def stats(self) -> Any: ...


#: Share of the spool the stream exports may fill: the rest stays for devices' messages.
SPOOL_SHARE = 0.5


class SpoolSink:
    """The cloud export's way into the core: ``SpoolWriter.add`` (intake log at once, spool
    commit in the same loop tick), and only while the spool is less than ``share`` full, so
    a stream's backlog waits in the stream (within its own limits) instead of making the
    spool drop device messages."""

    def __init__(
        self,
        writer: _Writer,
        spool: _Spool,
        share: float = SPOOL_SHARE,
        allows: Callable[[str], bool] | None = None,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.share = share
        self.allows = allows

    def accepts(self, topic: str) -> bool:
        return self.allows is None or self.allows(topic)

    def room(self) -> int:
        used: int = self.spool.stats().bytes
        return max(0, int(self.spool.max_bytes * self.share) - used)

    def add(self, topic: str, payload: bytes, qos: int) -> None:
        self.writer.add(topic, payload, qos)
