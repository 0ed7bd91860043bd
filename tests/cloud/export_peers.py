"""Real peers for the telemetry export tests: a webhook receiver (http.server in a thread
on a loopback port) that checks signatures and records what it took."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hedgerow.cloud.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from hedgerow.cloud.telemetry_export import decode_payload


class Receiver:
    """What the webhook server saw. ``fail_next`` answers 500 that many times first;
    ``delay_s`` holds each request (to catch two exporters at once)."""

    def __init__(self, secret: str = "", *, fail_next: int = 0, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.fail_next = fail_next
        self.delay_s = delay_s
        self.lock = threading.Lock()
        #: ids in the order they were accepted (a 200 was answered)
        self.ids: list[int] = []
        self.payloads: dict[int, bytes] = {}
        self.batches = 0
        self.refused = 0
        self.bad_signatures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: list[dict[str, str]] = []

    def take(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            with self.lock:
                if self.secret and not verify(
                    self.secret,
                    headers.get(TIMESTAMP_HEADER.lower(), ""),
                    body,
                    headers.get(SIGNATURE_HEADER.lower(), ""),
                ):
                    self.bad_signatures += 1
                    return 401
                if self.fail_next > 0:
                    self.fail_next -= 1
                    self.refused += 1
                    return 500
                document: dict[str, Any] = json.loads(body)
                for item in document["messages"]:
                    self.ids.append(item["id"])
                    self.payloads[item["id"]] = decode_payload(item)
                self.batches += 1
                self.headers.append(headers)
                return 200
        finally:
            with self.lock:
                self.in_flight -= 1

    def distinct(self) -> set[int]:
        with self.lock:
            return set(self.ids)


@contextmanager
def webhook_server(
    receiver: Receiver, port: int, tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Serve ``receiver`` on 127.0.0.1:``port`` (HTTPS with ``tls``); yields the URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.take(headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://localhost:{port}/telemetry"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
