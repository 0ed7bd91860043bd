"""``hedgerow broker``: run the MQTT broker on its own until Ctrl-C or SIGTERM.

Every setting is a flag and a config-file key alike (see ``hedgerow.broker.configfile``):
``hedgerow broker --config broker.toml --max-keepalive 60``; the command line wins.
SIGHUP reloads the ACL and password files (a bad file is logged and the old one kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from hedgerow import tlscontext
from hedgerow.broker import AllowAll, Broker, BrokerConfig, CertificateAuthenticator, collector
from hedgerow.broker.auth import Authenticator, Authorizer
from hedgerow.broker.configfile import (
    ServerOptions,
    build,
    load_config_file,
    parse_settings,
    settings,
)
from hedgerow.broker.errors import BrokerFileError
from hedgerow.cli.output import add_json_flag, print_json_line

log = logging.getLogger(__name__)

EPILOG = """\
Every option can also be given in a TOML file (--config): the key is the option's name
with underscores (max_keepalive = 60, ws_port = 8080, acl_file = "acl"); the command
line overrides the file. mosquitto.conf equivalents: max_inflight_messages ->
--max-inflight, max_queued_messages -> --max-queued-messages, max_keepalive ->
--max-keepalive, max_packet_size -> --max-packet-size, persistence_location -> --persist,
autosave_interval -> --persist-interval, listener N websockets -> --ws-port N.
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "broker",
        help="run the MQTT broker standalone",
        description="Run Hedgerow's MQTT broker (3.1, 3.1.1 and 5) until Ctrl-C or SIGTERM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    add_json_flag(parser, "report the listeners and the shutdown as JSON Lines on stdout")
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below")
    groups = {
        BrokerConfig: parser.add_argument_group("limits and behaviour"),
        ServerOptions: parser.add_argument_group("listeners, TLS, auth files, persistence"),
    }
    for spec in settings():
        group = groups[spec.owner]
        default = "" if spec.default is None else f" (default {spec.default})"
        if spec.kind is bool:
            group.add_argument(
                spec.flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=spec.help + default,
            )
        else:
            metavar = spec.metavar or (
                "|".join(spec.choices) if spec.choices else spec.kind.__name__.upper()
            )
            group.add_argument(
                spec.flag,
                default=argparse.SUPPRESS,
                metavar=metavar,
                help=spec.help + default,
            )


def resolve(args: argparse.Namespace) -> tuple[BrokerConfig, ServerOptions]:
    """Defaults, then the config file, then the command line."""
    from hedgerow.cli import CLIError

    try:
        values: dict[str, object] = {}
        source = "command line"
        if args.config:
            values.update(load_config_file(args.config))
            source = f"{args.config} and the command line"
        given = {s.name: getattr(args, s.name) for s in settings() if hasattr(args, s.name)}
        values.update(parse_settings(given, "command line"))
        return build(values, source)
    except BrokerFileError as exc:
        raise CLIError(str(exc)) from exc


def tls_context(options: ServerOptions) -> ssl.SSLContext | None:
    from hedgerow.cli import CLIError

    if not options.tls_cert and not options.tls_key:
        if options.tls_ca or options.require_client_cert:
            raise CLIError("--tls-ca and --require-client-cert need --tls-cert and --tls-key")
        if options.ws_tls:
            raise CLIError("--ws-tls needs --tls-cert and --tls-key")
        return None
    if not (options.tls_cert and options.tls_key):
        raise CLIError("TLS needs both --tls-cert and --tls-key")
    if options.require_client_cert and not options.tls_ca:
        raise CLIError("--require-client-cert needs --tls-ca (the CA client certificates chain to)")
    try:
        return tlscontext.server_context(
            options.tls_cert,
            options.tls_key,
            options.tls_ca,
            require_client_cert=options.require_client_cert,
        )
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load the TLS files: {exc}") from exc


def auth(options: ServerOptions) -> tuple[Authenticator, Authorizer | None]:
    """The authenticator and authorizer the options ask for (files loaded and checked)."""
    from hedgerow.broker.aclfile import AclFileAuthorizer, load_acl_file
    from hedgerow.broker.passwordfile import PasswordFileAuthenticator, load_password_file
    from hedgerow.cli import CLIError

    try:
        acl = AclFileAuthorizer(load_acl_file(options.acl_file)) if options.acl_file else None
        passwords = load_password_file(options.password_file) if options.password_file else None
    except BrokerFileError as exc:
        raise CLIError(str(exc)) from exc
    if options.require_client_cert and passwords is not None:
        raise CLIError(
            "--password-file and --require-client-cert exclude each other: with mutual TLS"
            " the identity (and the ACL's username) is the certificate's name"
        )
    authenticator: Authenticator
    if options.require_client_cert:
        authenticator = CertificateAuthenticator()
    elif passwords is not None or acl is not None:
        anonymous = options.allow_anonymous
        authenticator = PasswordFileAuthenticator(
            passwords, allow_anonymous=passwords is None if anonymous is None else anonymous
        )
    else:
        authenticator = AllowAll()
    return authenticator, acl


def run(args: argparse.Namespace) -> int:
    config, options = resolve(args)
    authenticator, authorizer = auth(options)
    context = tls_context(options)
    port = options.port if options.port is not None else (8883 if context else 1883)
    coro = serve(config, options, authenticator, authorizer, port, context, json_lines=args.json)
    from hedgerow.broker.errors import BrokerError

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    except BrokerError as exc:  # persistence.PersistenceError: an unusable directory
        from hedgerow.cli import CLIError

        raise CLIError(str(exc)) from exc
    return 0


async def _listen(what: Awaitable[tuple[str, int]], host: str, port: int) -> tuple[str, int]:
    from hedgerow.cli import CLIError

    try:
        return await what
    except OSError as exc:
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def reload_files(
    options: ServerOptions, authenticator: Authenticator, authorizer: Authorizer | None
) -> None:
    """SIGHUP: read the ACL and password files again; a bad file keeps the old rules."""
    from hedgerow.broker.aclfile import AclFileAuthorizer, load_acl_file
    from hedgerow.broker.passwordfile import PasswordFileAuthenticator, load_password_file

    try:
        if options.acl_file and isinstance(authorizer, AclFileAuthorizer):
            authorizer.reload(load_acl_file(options.acl_file))
        if options.password_file and isinstance(authenticator, PasswordFileAuthenticator):
            authenticator.reload(load_password_file(options.password_file))
    except BrokerFileError as exc:
        log.error("broker.reload_failed error=%r kept=%r", str(exc), "the previous rules")


async def serve(
    config: BrokerConfig,
    options: ServerOptions,
    authenticator: Authenticator,
    authorizer: Authorizer | None,
    port: int,
    context: ssl.SSLContext | None,
    *,
    json_lines: bool = False,
) -> None:
    collector.tune_for_routing()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, reload_files, options, authenticator, authorizer)
    persist = Path(options.persist) if options.persist else None
    async with Broker(
        config,
        authenticator=authenticator,
        authorizer=authorizer,
        persist=persist,
        persist_interval=options.persist_interval,
    ) as broker:
        host = options.host
        bound_host, bound_port = await _listen(broker.listen(host, port, ssl=context), host, port)
        _listening(json_lines, "mqtts" if context else "mqtt", bound_host, bound_port)
        if options.ws_port is not None:
            ws_context = context if options.ws_tls else None
            ws_host = options.ws_host or host
            ws_host, ws_port = await _listen(
                broker.listen_websocket(ws_host, options.ws_port, ssl=ws_context),
                ws_host,
                options.ws_port,
            )
            _listening(json_lines, "wss" if ws_context else "ws", ws_host, ws_port, "/mqtt")
        collector.settle()
        await stop.wait()
        if json_lines:
            print_json_line({"event": "stopping"})
        else:
            print("hedgerow broker: shutting down", flush=True)


def _listening(json_lines: bool, scheme: str, host: str, port: int, path: str = "") -> None:
    url = f"{scheme}://{host}:{port}{path}"
    if json_lines:
        print_json_line(
            {"event": "listening", "url": url, "scheme": scheme, "host": host, "port": port}
        )
    else:
        print(f"hedgerow broker listening on {url}", flush=True)
