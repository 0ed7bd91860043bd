"""``hedgerow broker``: run the MQTT broker on its own until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from typing import Any

from hedgerow import tlscontext
from hedgerow.broker import AllowAll, Broker, BrokerConfig, CertificateAuthenticator
from hedgerow.broker.auth import Authenticator
from hedgerow.broker.config import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MAX_QUEUED_MESSAGES,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "broker",
        help="run the MQTT broker standalone",
        description="Run Hedgerow's MQTT broker (3.1.1 and 5) until Ctrl-C or SIGTERM.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default 1883, or 8883 with TLS)"
    )
    parser.add_argument("--tls-cert", help="server certificate (PEM) to listen with TLS")
    parser.add_argument("--tls-key", help="server private key (PEM)")
    parser.add_argument(
        "--tls-ca", help="CA certificates (PEM) client certificates are verified against"
    )
    parser.add_argument(
        "--require-client-cert",
        action="store_true",
        help="mutual TLS: refuse clients without a valid certificate (identity = its common name)",
    )
    parser.add_argument("--max-packet-size", type=int, default=DEFAULT_MAX_PACKET_SIZE)
    parser.add_argument("--max-inflight", type=int, default=DEFAULT_MAX_INFLIGHT)
    parser.add_argument("--max-queued-messages", type=int, default=DEFAULT_MAX_QUEUED_MESSAGES)
    parser.add_argument(
        "--sys-interval", type=float, default=0.0, help="publish $SYS/broker/... every N s"
    )


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    from hedgerow.cli import CLIError

    if not args.tls_cert and not args.tls_key:
        if args.tls_ca or args.require_client_cert:
            raise CLIError("--tls-ca and --require-client-cert need --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        raise CLIError("TLS needs both --tls-cert and --tls-key")
    if args.require_client_cert and not args.tls_ca:
        raise CLIError("--require-client-cert needs --tls-ca (the CA client certificates chain to)")
    try:
        return tlscontext.server_context(
            args.tls_cert, args.tls_key, args.tls_ca, require_client_cert=args.require_client_cert
        )
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load the TLS files: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    context = tls_context(args)
    port = args.port if args.port is not None else (8883 if context else 1883)
    config = BrokerConfig(
        max_packet_size=args.max_packet_size,
        max_inflight=args.max_inflight,
        max_queued_messages=args.max_queued_messages,
        sys_interval=args.sys_interval,
    )
    authenticator: Authenticator = (
        CertificateAuthenticator() if args.require_client_cert else AllowAll()
    )
    coro = serve(config, authenticator, args.host, port, context)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    except OSError as exc:
        from hedgerow.cli import CLIError

        raise CLIError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from exc
    return 0


async def serve(
    config: BrokerConfig,
    authenticator: Authenticator,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Broker(config, authenticator=authenticator) as broker:
        bound_host, bound_port = await broker.listen(host, port, ssl=context)
        scheme = "mqtts" if context else "mqtt"
        print(f"hedgerow broker listening on {scheme}://{bound_host}:{bound_port}", flush=True)
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full passes (shorter pauses, better latency tails).
        gc.freeze()
        await stop.wait()
        print("hedgerow broker: shutting down", flush=True)
