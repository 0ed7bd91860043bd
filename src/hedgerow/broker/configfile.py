"""``hedgerow broker`` settings: from a TOML file and from command-line flags alike.

Every field of :class:`~hedgerow.broker.config.BrokerConfig` and of :class:`ServerOptions`
(listeners, TLS, auth files, persistence) is a setting: the key in a config file is the
field name (``max_keepalive = 60``), the flag is the same with dashes
(``--max-keepalive 60``). Both are derived from the dataclasses, so a field added to
``BrokerConfig`` is reachable at once; its help text comes from the field's
``metadata["help"]``, else from :data:`HELP`, else a generic line.

Precedence: defaults < config file < command line. Unknown keys, wrong types and values
``BrokerConfig`` refuses raise :class:`BrokerFileError` naming the file and key. Pure
except :func:`load_config_file`, which reads the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hedgerow.broker.config import BrokerConfig
from hedgerow.broker.errors import BrokerFileError

#: Help texts of BrokerConfig's fields (a field's own ``metadata["help"]`` wins).
HELP: Mapping[str, str] = {
    "max_packet_size": "largest packet accepted from a client, bytes (v5: sent in CONNACK)",
    "connect_timeout": "seconds a new connection has to send CONNECT",
    "max_keepalive": "cap on client keep-alive, seconds; v5 clients asking more (or 0) are "
    "told it as Server Keep Alive ('none' = as the client asks)",
    "max_inflight": "QoS 1/2 messages in flight to one client (also capped by its Receive "
    "Maximum); mosquitto's max_inflight_messages",
    "max_queued_messages": "QoS 1/2 messages queued per client beyond the in-flight window, "
    "then dropped and counted; mosquitto's max_queued_messages",
    "max_outbound_bytes": "memory budget per client: bytes held for it (QoS 1/2 in flight and "
    "queued, packets waiting for its socket), e.g. 8M; when full: QoS 0 dropped, a connected "
    "QoS 1/2 subscriber disconnected as a slow consumer (v5: 0x97), an offline session "
    "drops its oldest",
    "max_total_outbound_bytes": "memory budget for all clients together, e.g. 256M; when "
    "full, the client holding the most goes first (v5: 0x89 Server busy)",
    "write_high_water": "socket write buffer (bytes) at which a client counts as congested",
    "write_low_water": "socket write buffer (bytes) at which a congested client is resumed",
    "backpressure_timeout": "publishers are paced to a congested subscriber only while it "
    "took data (acknowledged, drained) within this many seconds: a stalled one slows no one",
    "slow_client_timeout": "seconds a client may take nothing (socket or in-flight window "
    "full) before it is disconnected as a slow consumer",
    "receive_maximum": "QoS 1/2 messages a v5 client may have in flight to us (1..65535)",
    "topic_alias_maximum": "topic aliases a v5 client may use towards us (0 = none)",
    "max_retained": "retained messages kept at most (new topics beyond are not retained)",
    "max_subscriptions": "subscriptions one session may hold",
    "max_session_expiry": "cap on a v5 Session Expiry Interval, seconds ('none' = no cap)",
    "persistent_session_expiry": "expiry of 3.1.1 persistent sessions, seconds "
    "('none' = never); mosquitto's persistent_client_expiration",
    "allow_empty_client_id": "accept an empty client id from clean-session clients",
    "deny_policy": "unauthorized PUBLISH: drop it (v5 QoS 1/2: 0x87) or disconnect",
    "sys_interval": "publish $SYS/broker/... every this many seconds (0 = off); "
    "mosquitto's sys_interval",
    "sweep_interval": "seconds between housekeeping sweeps (keep-alive, expiry, slow clients)",
    "shutdown_grace": "seconds clients get to take their DISCONNECT on shutdown",
}


def _help(text: str, metavar: str | None = None) -> dict[str, str]:
    return {"help": text, "metavar": metavar} if metavar else {"help": text}


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What ``hedgerow broker`` listens on and loads, besides :class:`BrokerConfig`."""

    host: str = field(default="127.0.0.1", metadata=_help("address to listen on", "ADDRESS"))
    port: int | None = field(
        default=None, metadata=_help("MQTT port (default 1883, or 8883 with TLS)")
    )
    tls_cert: str | None = field(
        default=None, metadata=_help("server certificate (PEM): listen with TLS", "FILE")
    )
    tls_key: str | None = field(default=None, metadata=_help("server private key (PEM)", "FILE"))
    tls_ca: str | None = field(
        default=None,
        metadata=_help("CA certificates (PEM) client certificates are verified by", "FILE"),
    )
    require_client_cert: bool = field(
        default=False,
        metadata=_help("mutual TLS: refuse clients without a valid certificate"),
    )
    ws_port: int | None = field(
        default=None,
        metadata=_help("also accept MQTT over WebSocket on this port (paths / and /mqtt)"),
    )
    ws_host: str | None = field(
        default=None,
        metadata=_help("address of the WebSocket listener (default: --host)", "ADDRESS"),
    )
    ws_tls: bool = field(
        default=False,
        metadata=_help("WebSocket listener over TLS (wss://) with the --tls-* files"),
    )
    acl_file: str | None = field(
        default=None, metadata=_help("mosquitto acl_file: topic access per user", "FILE")
    )
    password_file: str | None = field(
        default=None,
        metadata=_help("mosquitto password file (mosquitto_passwd $6$/$7$ hashes)", "FILE"),
    )
    allow_anonymous: bool | None = field(
        default=None,
        metadata=_help(
            "admit clients without a username (default: yes without --password-file, no with)"
        ),
    )
    persist: str | None = field(
        default=None,
        metadata=_help(
            "directory to keep sessions, queued QoS 1/2 and retained messages in", "DIR"
        ),
    )
    persist_interval: float = field(
        default=1.0,
        metadata=_help("seconds between persistence flushes (QoS 0 / retained at risk on a crash)"),
    )


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key, type and help, derived from a dataclass field."""

    name: str
    kind: type
    optional: bool
    choices: tuple[str, ...] | None
    default: object
    help: str
    owner: type
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value: object) -> object:
        """The value as the field's type; ValueError saying what was expected."""
        if value is None or (self.optional and isinstance(value, str) and value == "none"):
            if self.optional:
                return None
            raise ValueError("must not be empty")
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        kind = self.kind
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError(f"must be true or false, not {value!r}")
        if kind is int and self.name.endswith("_bytes") and isinstance(value, str):
            from hedgerow.broker.budget import parse_size

            return parse_size(value)  # 8M, 256K
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"must be an integer, not {value!r}")
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"must be an integer, not {value!r}") from None
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"must be a number, not {value!r}")
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r}")
        return value


def _setting(f: dataclasses.Field[Any], hint: object, owner: type) -> Setting:
    optional = False
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else str
    choices = None
    if typing.get_origin(hint) is Literal:
        choices = tuple(str(a) for a in typing.get_args(hint))
        hint = str
    kind = hint if isinstance(hint, type) else str
    text = f.metadata.get("help") or HELP.get(f.name) or f"{owner.__name__}.{f.name}"
    default = f.default if f.default is not dataclasses.MISSING else None
    metavar = f.metadata.get("metavar") or ("SIZE" if f.name.endswith("_bytes") else None)
    return Setting(f.name, kind, optional, choices, default, text, owner, metavar)


def settings() -> tuple[Setting, ...]:
    """Every setting: BrokerConfig's fields, then ServerOptions'."""
    found: list[Setting] = []
    for owner in (BrokerConfig, ServerOptions):
        hints = typing.get_type_hints(owner)
        found.extend(_setting(f, hints[f.name], owner) for f in dataclasses.fields(owner))
    return tuple(found)


def _suggest(key: str, known: list[str]) -> str:
    import difflib  # only on an error: the broker's idle memory

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_settings(values: Mapping[str, object], source: str) -> dict[str, object]:
    """Check keys and types of raw settings (a TOML table or parsed flags)."""
    by_name = {s.name: s for s in settings()}
    checked: dict[str, object] = {}
    for key, value in values.items():
        spec = by_name.get(key)
        if spec is None:
            raise BrokerFileError(
                source,
                None,
                f"unknown key {key!r}{_suggest(key, list(by_name))}; known keys: "
                + ", ".join(sorted(by_name)),
            )
        try:
            checked[key] = spec.coerce(value)
        except ValueError as exc:
            raise BrokerFileError(source, None, f"{key}: {exc}") from exc
    return checked


def build(values: Mapping[str, object], source: str) -> tuple[BrokerConfig, ServerOptions]:
    """BrokerConfig and ServerOptions from checked settings (missing ones: defaults)."""

    def pick(owner: type) -> Iterator[tuple[str, object]]:
        names = {f.name for f in dataclasses.fields(owner)}
        return ((k, v) for k, v in values.items() if k in names)

    try:
        config = BrokerConfig(**dict(pick(BrokerConfig)))  # type: ignore[arg-type]
        options = ServerOptions(**dict(pick(ServerOptions)))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise BrokerFileError(source, None, str(exc)) from exc
    return config, options


def load_config_file(path: str | Path) -> dict[str, object]:
    """The checked settings of a TOML file (top-level keys, or a ``[broker]`` table)."""
    import tomllib  # only with --config: the broker's idle memory

    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerFileError(source, None, f"cannot read the config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BrokerFileError(source, None, f"not valid TOML: {exc}") from exc
    table = data.get("broker", data) if set(data) <= {"broker"} else data
    if not isinstance(table, dict):
        raise BrokerFileError(source, None, "[broker] must be a table")
    return parse_settings(table, source)
