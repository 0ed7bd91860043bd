"""``hedgerow cloud ...``: run the cloud (``init``, ``serve``) and drive it through its API.

Every command except ``init`` and ``serve`` talks to the REST API, so it works from
another machine: ``--url`` (or ``HEDGEROW_CLOUD_URL``), ``--token`` (or
``HEDGEROW_CLOUD_TOKEN``) and ``--ca`` (or ``HEDGEROW_CLOUD_CA``); without them the
values come from the data directory (``--data``, ``HEDGEROW_CLOUD_DATA``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import signal
import ssl
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from hedgerow.cli import CLIError
from hedgerow.cli.output import add_json_flag, done, print_json, show

DEFAULT_DATA = "hedgerow-cloud"
SERVE_STATE = "serve.json"
#: Files never packed into a function's artifact.
SKIPPED_PARTS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".venv"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FINAL_STATUSES = {"Success", "Failure", "RolledBack", "Superseded"}


# ---- helpers ----------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("HEDGEROW_CLOUD_DATA") or DEFAULT_DATA)


def zip_directory(directory: Path) -> bytes:
    """A deterministic zip of a function's code directory (same code, same sha256)."""
    if not directory.is_dir():
        raise CLIError(f"{directory} is not a directory: give --code the function's code directory")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            rel = path.relative_to(directory)
            if not path.is_file() or SKIPPED_PARTS & set(rel.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(rel.as_posix(), ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


class Api:
    """The REST API as the CLI uses it: errors become one-line ``CLIError`` messages."""

    def __init__(self, args: argparse.Namespace) -> None:
        data = _data_dir(args)
        self.url = (
            args.url or os.environ.get("HEDGEROW_CLOUD_URL") or _url_from_data(data)
        ).rstrip("/")
        token = args.token or os.environ.get("HEDGEROW_CLOUD_TOKEN")
        if not token:
            try:
                token = (data / "admin-token").read_text().strip()
            except FileNotFoundError:
                raise CLIError(
                    f"no API token: pass --token, set HEDGEROW_CLOUD_TOKEN or use --data with the cloud's data directory (no {data / 'admin-token'})"
                ) from None
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            ca = args.ca or os.environ.get("HEDGEROW_CLOUD_CA") or str(data / "pki" / "root-ca.pem")
            if not Path(ca).exists():
                raise CLIError(f"no CA file {ca} to verify {self.url}: pass --ca root-ca.pem")
            verify = ssl.create_default_context(cafile=ca)
        self.client = httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {token}"},
            verify=verify,
            timeout=60.0,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CLIError(
                f"cannot reach the cloud API at {self.url}: {exc} (is `hedgerow cloud serve` running? check --url)"
            ) from exc
        return _decode(response)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, **kwargs)

    def download(self, path: str) -> bytes:
        """A binary body (JSON errors become ``CLIError`` as everywhere)."""
        try:
            response = self.client.get(path)
        except httpx.HTTPError as exc:
            raise CLIError(f"cannot reach the cloud API at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            _decode(response)
        return response.content

    def stream_lines(self, path: str, params: dict[str, str]) -> Iterator[str]:
        try:
            with self.client.stream(
                "GET", path, params=params, timeout=httpx.Timeout(60.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _decode(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise CLIError(f"lost the cloud API at {self.url}: {exc}") from exc


def _decode(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise CLIError(
            f"{message or response.text or response.reason_phrase} (HTTP {response.status_code})"
        )
    return body


def _url_from_data(data: Path) -> str:
    state = data / SERVE_STATE
    if state.exists():
        try:
            return str(json.loads(state.read_text())["api"])
        except (ValueError, KeyError):
            pass
    config_file = data / "config.toml"
    if config_file.exists():
        import tomllib

        api = tomllib.loads(config_file.read_text()).get("api", {})
        host = api.get("host", "127.0.0.1")
        port = api.get("port", 8080)
        loopback = host in ("127.0.0.1", "localhost", "::1")
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"{'http' if loopback else 'https'}://{connect}:{port}"
    return "http://127.0.0.1:8080"


def _table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


# ---- init / serve -------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from hedgerow.cloud.config import Listen
    from hedgerow.cloud.datadir import init_data_dir
    from hedgerow.cloud.errors import CloudError

    data = _data_dir(args)
    try:
        cfg, _ = init_data_dir(
            data,
            hosts=args.host or [],
            database=args.database or "",
            api=Listen(args.api_host, args.api_port),
            device=Listen(args.device_host, args.device_port),
            mqtt=Listen(args.mqtt_host, args.mqtt_port),
            broker=args.broker or "",
            advertise=args.advertise,
            rotation_days=args.ca_rotation_days,
            retention_days=args.retention_days,
            kek_file=_kek_file(args),
        )
    except CloudError as exc:
        raise CLIError(f"{exc.message}") from exc
    print(f"initialised {cfg.data_dir}")
    print(f"  root CA      {cfg.paths.root_ca_cert}")
    print(f"  database     {cfg.database_url.split('@')[-1]}")
    print(f"  admin token  {cfg.paths.admin_token}")
    print(f"  keyring      {cfg.kek_path}  (back it up: the group CA keys open only with it)")
    print(f"next: hedgerow cloud serve --data {data}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hedgerow.cloud import config as config_module
    from hedgerow.cloud.config import Listen
    from hedgerow.cloud.errors import CloudError

    data = _data_dir(args).resolve()
    hedgerow_log = logging.getLogger("hedgerow")
    if not hedgerow_log.isEnabledFor(logging.INFO):
        hedgerow_log.setLevel(logging.INFO)  # a server says what it refuses and why
    try:
        cfg = config_module.load(data)
        changes: dict[str, Any] = {}
        if args.database:
            changes["database"] = args.database
        if args.broker:
            changes["broker"] = args.broker
        if args.replica_id:
            changes["replica_id"] = args.replica_id
        if args.broker_protocol:
            changes["broker_protocol"] = args.broker_protocol
        if args.broker_login:
            changes["broker_login"] = args.broker_login
        if args.broker_ingest is not None:
            changes["broker_ingest"] = args.broker_ingest
        if _kek_file(args):
            changes["kek_file"] = _kek_file(args)
        for name in ("api", "device", "mqtt"):
            host = getattr(args, f"{name}_host")
            port = getattr(args, f"{name}_port")
            current: Listen = getattr(cfg, name)
            if host is not None or port is not None:
                changes[name] = Listen(
                    host if host is not None else current.host,
                    port if port is not None else current.port,
                )
        if changes:
            cfg = cfg.replace(**changes)
        return asyncio.run(_serve(cfg, args.no_mqtt))
    except CloudError as exc:
        raise CLIError(exc.message) from exc
    except OSError as exc:
        raise CLIError(
            f"cannot listen: {exc} (choose other ports with --api-port/--device-port/--mqtt-port)"
        ) from exc


async def _serve(cfg: Any, no_mqtt: bool) -> int:
    from hedgerow.cloud.server import CloudServer
    from hedgerow.cloud.telemetry_export import shown_url

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with CloudServer(cfg, enable_mqtt=not no_mqtt) as cloud:
        state = {
            "api": cloud.api_url,
            "device": cloud.device_url,
            "mqtt": cloud.mqtt_url,
            "pid": os.getpid(),
        }
        (cfg.data_dir / SERVE_STATE).write_text(json.dumps(state))
        print(f"hedgerow cloud serving {cfg.data_dir}", flush=True)
        print(
            f"  REST API + console  {cloud.api_url}  (OpenAPI: {cloud.api_url}/api/openapi.json)",
            flush=True,
        )
        print(
            f"  device HTTPS        {cloud.device_url}  (discovery, cores; mutual TLS)", flush=True
        )
        if cfg.broker:
            print(f"  MQTT (external)     {cfg.broker}", flush=True)
        if cloud.dynsec is not None:
            print("  broker logins       Mosquitto dynamic security, kept by the cloud", flush=True)
        elif cloud.broker_auth_url:
            print(
                f"  broker auth (HTTP)  {cloud.broker_auth_url}{{user,vhost,resource,topic}}",
                flush=True,
            )
        elif cloud.mqtt_url:
            print(f"  cloud MQTT          {cloud.mqtt_url}  (mutual TLS)", flush=True)
        print(f"  database            {cloud.services.repository.dialect}", flush=True)
        for target in cfg.exports:
            shown = shown_url(target.url)
            print(f"  telemetry export    {target.name}: {target.kind} {shown}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        await stop.wait()
        print("stopping", flush=True)
    state_file = cfg.data_dir / SERVE_STATE
    try:
        if json.loads(state_file.read_text()).get("pid") == os.getpid():
            state_file.unlink()
    except (OSError, ValueError):
        pass
    return 0


def _kek_file(args: argparse.Namespace) -> str:
    from hedgerow.cloud.config import KEK_FILE_ENV

    return str(getattr(args, "kek_file", None) or os.environ.get(KEK_FILE_ENV) or "")


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    from hedgerow.cloud import config as config_module
    from hedgerow.cloud.config import check_modes
    from hedgerow.cloud.errors import CloudError
    from hedgerow.cloud.group_ca_keys import (
        GroupCAKeys,
        prepare_keyring,
        rotate_kek,
        seal_clear_keys,
    )
    from hedgerow.cloud.storage.database import create_engine, migrate
    from hedgerow.cloud.storage.sealed_keys import SealedKeyStore

    data = _data_dir(args).resolve()
    try:
        cfg = config_module.load(data)
        if args.database:
            cfg = cfg.replace(database=args.database)
        if _kek_file(args):
            cfg = cfg.replace(kek_file=_kek_file(args))
        check_modes(cfg)
        engine = create_engine(cfg.database_url)
        try:
            migrate(engine)
            store = SealedKeyStore(engine)
            seal_clear_keys(store, GroupCAKeys(prepare_keyring(cfg.kek_path, store)))
            rotation = rotate_kek(cfg.kek_path, store)
        finally:
            engine.dispose()
    except CloudError as exc:
        raise CLIError(exc.message) from exc
    print(f"new key-encryption key {rotation.kek_id} in {cfg.kek_path}")
    print(f"  re-wrapped    {rotation.rewrapped} group CA key(s)")
    if rotation.sealed_from_clear:
        print(f"  sealed        {rotation.sealed_from_clear} key(s) that were still in clear")
    print(f"  retired keys  {', '.join(rotation.retired) or '-'}")
    print("back up the keyring file now: the old one no longer opens these keys")
    return 0


def cmd_dynsec_init(args: argparse.Namespace) -> int:
    """Mosquitto's first dynamic security file, the cloud's user its administrator."""
    import secrets

    from hedgerow.cloud import config as config_module
    from hedgerow.cloud.broker_credentials import CLOUD_USER, load_or_create
    from hedgerow.cloud.dynsec_plan import initial_config
    from hedgerow.cloud.errors import CloudError

    data = _data_dir(args).resolve()
    target = Path(args.file)
    try:
        cfg = config_module.load(data)
        secret = load_or_create(cfg.paths.broker_auth_secret)
    except CloudError as exc:
        raise CLIError(exc.message) from exc
    document = initial_config(CLOUD_USER, secret.cloud_password(), secrets.token_bytes(12))
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CLIError(f"{target} exists: the broker's dynsec file is kept by the cloud") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
    print(f"wrote {target}: {CLOUD_USER} administers Mosquitto's dynamic security")
    print("point plugin_opt_config_file at it; the cloud adds every core at its first start")
    return 0


# ---- registry commands ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    with Api(args) as api:
        show(args, api.get("/api/v1/status"))
    return 0


def cmd_group_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "description": args.description}
    if args.ca_rotation_days is not None:
        body["ca_rotation_days"] = args.ca_rotation_days
    settings: dict[str, Any] = {}
    if args.open_broker:
        settings["open_broker"] = True
    if args.sync_shadows is not None:
        settings["sync_shadows"] = _names(args.sync_shadows)
    if settings:
        body["settings"] = settings
    if args.label:
        body["labels"] = _labels(args.label)
    with Api(args) as api:
        group = api.post("/api/v1/groups", body)
    return done(args, group, f"group {group['name']} created")


def _labels(pairs: list[str]) -> dict[str, str]:
    """``["site=berlin", "tier=2"]`` → labels (``key=`` removes one on update)."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"invalid label {pair!r}: write --label key=value")
        labels[key] = value
    return labels


def cmd_group_list(args: argparse.Namespace) -> int:
    params = {"label": ",".join(args.label)} if args.label else {}
    with Api(args) as api:
        result = api.get("/api/v1/groups", params=params)
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [
                [
                    g["name"],
                    g["core"] or "-",
                    ",".join(f"{k}={v}" for k, v in sorted(g.get("labels", {}).items())) or "-",
                    g["description"],
                ]
                for g in result["items"]
            ],
            ["GROUP", "CORE", "LABELS", "DESCRIPTION"],
        )
    return 0


def cmd_group_show(args: argparse.Namespace) -> int:
    with Api(args) as api:
        show(args, api.get(f"/api/v1/groups/{args.name}"))
    return 0


def cmd_group_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/groups/{args.name}")
    return done(args, {"deleted": args.name}, f"group {args.name} deleted")


def cmd_group_update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.description is not None:
        body["description"] = args.description
    if args.ca_rotation_days is not None:
        body["ca_rotation_days"] = args.ca_rotation_days
    settings: dict[str, Any] = {}
    if args.open_broker is not None:
        settings["open_broker"] = args.open_broker
    if args.sync_shadows is not None:
        settings["sync_shadows"] = _names(args.sync_shadows)
    if settings:
        body["settings"] = settings
    if args.label:
        body["labels"] = _labels(args.label)
    if not body:
        raise CLIError(
            "nothing to change: give --description, --ca-rotation-days, --label k=v, "
            "--open-broker/--no-open-broker or --sync-shadows"
        )
    with Api(args) as api:
        group = api.request("PATCH", f"/api/v1/groups/{args.name}", json=body)
    return done(args, group, f"group {group['name']} updated")


def cmd_group_rotate_ca(args: argparse.Namespace) -> int:
    with Api(args) as api:
        cas = api.post(f"/api/v1/groups/{args.name}/cas/rotate")["items"]
    return done(
        args,
        cas,
        f"group {args.name}: CA generation {cas[0]['generation']} is current ({len(cas)} listed)",
    )


def cmd_core_create(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Api(args) as api:
        result = api.post("/api/v1/cores", {"name": args.name, "group": args.group})
    path = out / result["bundle_name"]
    _write_private(path, base64.b64decode(result["bundle"]))
    if args.json:
        print_json({**result["core"], "bundle": str(path)})
        return 0
    print(f"core {args.name} created in group {args.group}")
    print(f"provisioning bundle: {path}")
    print(f"on the gateway: hedgerow core run --bundle {path.name}")
    return 0


def cmd_core_bundle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Api(args) as api:
        result = api.post(f"/api/v1/cores/{args.name}/bundle")
    path = out / result["bundle_name"]
    _write_private(path, base64.b64decode(result["bundle"]))
    print(f"new identity for core {args.name} (the old one is revoked); bundle: {path}")
    return 0


def cmd_core_list(args: argparse.Namespace) -> int:
    from hedgerow.cli.cloud_ops import CORE_HEADER, core_row, problems

    with Api(args) as api:
        result = api.get("/api/v1/cores")
    if args.json:
        print_json(result["items"])
        return 0
    # the cores that need a look first
    cores = sorted(result["items"], key=lambda c: (-problems(c), c["name"]))
    _table([core_row(c) for c in cores], CORE_HEADER)
    return 0


def cmd_core_show(args: argparse.Namespace) -> int:
    with Api(args) as api:
        core = api.get(f"/api/v1/cores/{args.name}")
    if args.json:
        print_json(core)
        return 0
    for line in core_summary(core):
        print(line)
    return 0


def cmd_core_support_bundle(args: argparse.Namespace) -> int:
    """Ask the core (over its MQTT link) for a support bundle, wait for its upload, save it.
    A core that is offline is asked when it connects: the request waits for it (``--expires``),
    and ``--request ID`` fetches it later."""
    out = Path(args.out or f"{args.name}-support.tar.gz")
    started = time.monotonic()
    with Api(args) as api:
        if args.request:
            asked = api.get(f"/api/v1/cores/{args.name}/support-bundles/{args.request}")
        else:
            asked = api.post(f"/api/v1/cores/{args.name}/support-bundles", {"wait_s": args.expires})
        request_id = asked["request_id"]
        path = f"/api/v1/cores/{args.name}/support-bundles/{request_id}"
        later = f"hedgerow cloud core support-bundle {args.name} --request {request_id}"
        if not args.json and not args.request:
            print(f"asked {args.name} for a support bundle ({request_id})", flush=True)
        shown = -1
        while (bundle := api.get(path))["status"] != "received":
            waited = time.monotonic() - started
            if bundle["status"] == "expired":
                raise CLIError(
                    f"{args.name} did not upload {request_id} before it expired "
                    f"({bundle['expires_at']}): ask again"
                )
            if waited > args.timeout:
                raise CLIError(
                    f"{args.name} did not upload its support bundle within {args.timeout:.0f} s "
                    f"({bundle['status']}: is it connected? hedgerow cloud core show "
                    f"{args.name}); the request waits for it until {bundle['expires_at']}: "
                    f"fetch it then with {later}"
                )
            if not args.json and int(waited) // 2 > shown:
                shown = int(waited) // 2
                doing = (
                    f"waiting for {args.name} to connect (asked when it does)"
                    if bundle["status"] == "waiting"
                    else f"waiting for {args.name} to upload it"
                )
                print(f"  {waited:5.1f}s  {doing}", flush=True)
            time.sleep(0.2)
        data = api.download(path + "/download")
    out.write_bytes(data)
    out.chmod(0o600)
    return done(
        args,
        {**bundle, "file": str(out)},
        f"support bundle of {args.name}: {out} ({len(data)} bytes, "
        f"{time.monotonic() - started:.1f} s); look inside: tar tzf {out}",
    )


def core_summary(core: dict[str, Any]) -> list[str]:
    """A core for people: connection, what it runs, each function's state and last error."""
    connected = {True: "connected", False: "not connected", None: "unknown"}[core.get("connected")]
    beat = core.get("heartbeat") or {}
    lines = [
        f"core {core['name']} (group {core['group']}): {connected}, "
        f"last seen {core.get('last_seen') or 'never'}",
        f"deployment: {beat.get('deployment') or 'none'}   health: {beat.get('health') or 'unknown'}"
        f"   devices: {beat.get('devices', 0)}",
    ]
    endpoints = ", ".join(f"{e['host']}:{e['port']}" for e in core.get("endpoints", []))
    lines.append(f"endpoints: {endpoints or 'none reported'}")
    host = beat.get("host") or {}
    if host or beat.get("spool_max_bytes"):
        use = "  ".join(f"{k} {host[k]:.0f}%" for k in ("cpu", "memory", "disk") if k in host)
        age = f", oldest {beat['spool_age']} s" if beat.get("spool_age") else ""
        lines.append(f"host: {use or 'unknown'}   spool: {beat.get('spool', 0)} records{age}")
    functions: dict[str, str] = beat.get("functions") or {}
    errors: dict[str, dict[str, Any]] = beat.get("function_errors") or {}
    if not functions:
        lines.append("functions: none reported")
    else:
        lines.append("functions:")
        for name, state in sorted(functions.items()):
            error = errors.get(name) or {}
            counts = ", ".join(
                f"{error[k]} {k}" for k in ("failed", "crashes", "timeouts") if error.get(k)
            )
            lines.append(f"  {name}: {state}" + (f" ({counts})" if counts else ""))
            if error.get("last_error"):
                lines.append(f"    last error: {error['last_error']}")
            if error.get("traceback"):
                lines.extend("      " + line for line in error["traceback"].rstrip().splitlines())
    for refusal in beat.get("refused") or []:
        lines.append(
            f"refused on the core's disk: {refusal.get('deployment_id')}: {refusal.get('reason')}"
        )
    return lines


def cmd_core_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/cores/{args.name}")
    return done(
        args, {"deleted": args.name}, f"core {args.name} deleted (its certificates are revoked)"
    )


def cmd_thing_create(args: argparse.Namespace) -> int:
    if args.cert:
        from hedgerow.cli.cloud_claims import register_certificate

        if args.csr:
            raise CLIError("give --cert or --csr, not both")
        certificate = Path(args.cert).read_text() if Path(args.cert).is_file() else ""
        if not certificate:
            raise CLIError(f"cannot read the certificate {args.cert}")
        with Api(args) as api:
            result = register_certificate(api, args.name, args.group or [], certificate, {})
        return done(
            args,
            result["thing"],
            f"thing {args.name} registered with its own certificate (its key stays on the "
            "device); give it the cloud's root CA for discovery: root-ca.pem",
        )
    if not args.out:
        raise CLIError("--out DIR is required (where the certificate and key are written)")
    body: dict[str, Any] = {"name": args.name, "groups": args.group or []}
    if args.csr:
        try:
            body["csr"] = Path(args.csr).read_text()
        except OSError as exc:
            raise CLIError(f"cannot read the CSR {args.csr}: {exc.strerror}") from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Api(args) as api:
        result = api.post("/api/v1/things", body)
    cert = out / f"{args.name}.cert.pem"
    cert.write_text(result["certificate"])
    (out / "root-ca.pem").write_text(result["root_ca"])
    written = [cert.name, "root-ca.pem"]
    if result.get("private_key"):
        _write_private(out / f"{args.name}.key", result["private_key"].encode())
        written.append(f"{args.name}.key")
    return done(
        args,
        {"name": args.name, "groups": args.group or [], "files": [str(out / w) for w in written]},
        f"thing {args.name} created; wrote {', '.join(written)} to {out}",
    )


def cmd_thing_list(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.group:
        params["group"] = args.group
    with Api(args) as api:
        result = api.get("/api/v1/things", params=params)
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [[t["name"], ",".join(t["groups"]) or "-"] for t in result["items"]],
            ["THING", "GROUPS"],
        )
    return 0


def cmd_thing_show(args: argparse.Namespace) -> int:
    with Api(args) as api:
        thing = api.get(f"/api/v1/things/{args.name}")
        thing["certificates"] = api.get("/api/v1/certificates", params={"owner": args.name})[
            "items"
        ]
    show(args, thing)
    return 0


def cmd_thing_revoke(args: argparse.Namespace) -> int:
    with Api(args) as api:
        if args.group:  # as in `thing create --group`: say which group's thing this is
            groups = api.get(f"/api/v1/things/{args.name}")["groups"]
            if args.group not in groups:
                raise CLIError(
                    f"thing {args.name} is not in group {args.group} (its groups:"
                    f" {', '.join(groups) or 'none'}); nothing revoked"
                )
        revoked = api.post(f"/api/v1/things/{args.name}/revoke")["revoked"]
    return done(args, {"revoked": revoked}, f"revoked {len(revoked)} certificate(s) of {args.name}")


def cmd_thing_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/things/{args.name}")
    return done(args, {"deleted": args.name}, f"thing {args.name} deleted")


def cmd_thing_detach(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/groups/{args.group}/things/{args.name}")
    return done(
        args,
        {"thing": args.name, "group": args.group},
        f"thing {args.name} removed from group {args.group} (its core cuts it off within seconds)",
    )


def cmd_thing_attach(args: argparse.Namespace) -> int:
    with Api(args) as api:
        thing = api.post(f"/api/v1/groups/{args.group}/things", {"thing": args.name})
    return done(
        args,
        thing,
        f"thing {args.name} attached to group {args.group} (its core admits it within seconds)",
    )


def _function_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("handler", "runtime", "encoding"):
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    if args.pinned is not None:
        body["pinned"] = args.pinned
    if args.memory is not None:
        body["memory_mb"] = args.memory
    if args.timeout is not None:
        body["timeout_s"] = args.timeout
    if args.max_concurrency is not None:
        body["max_concurrency"] = args.max_concurrency
    if args.env:
        environment: dict[str, str] = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CLIError(f"--env {item!r}: use KEY=VALUE")
            environment[key] = value
        body["environment"] = environment
    resources = _local_resources(args)  # first: a V1 definition adds groups and secrets
    if resources is not None:
        body["resources"] = resources
    if args.os_group:
        body["groups"] = list(args.os_group)
    if args.secret:
        body["secrets"] = list(args.secret)
    return body


def _local_resources(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """--device, --volume and --v1-resources as the function's local resources (None: not
    given); a V1 definition's named group owners and secrets join --os-group / --secret."""
    from hedgerow.functions.errors import InvalidFunctionSpec
    from hedgerow.functions.resources import from_v1_definition, parse_device, parse_volume

    if not args.device and not args.volume and not args.v1_resources:
        return None
    try:
        resources = [parse_device(d) for d in args.device or []]
        resources += [parse_volume(v) for v in args.volume or []]
        if args.v1_resources:
            definition = _read_v1_definition(args.v1_resources)
            migrated = from_v1_definition(*definition)
            resources += migrated.resources
            args.os_group = [*(args.os_group or []), *migrated.groups]
            args.secret = [*(args.secret or []), *migrated.secrets]
    except InvalidFunctionSpec as exc:
        raise CLIError(f"--{exc.field.rstrip('s')}: {exc.reason}") from exc
    if args.no_group_owner:
        resources = [dataclasses.replace(r, auto_add_group_owner=False) for r in resources]
    return [r.to_document() for r in resources]


def _read_v1_definition(path: str) -> tuple[list[Any], list[Any]]:
    """``Resources`` (of a ResourceDefinitionVersion) and ``ResourceAccessPolicies`` (of the
    function's Environment) from a JSON file, at the top level or nested as V1 exports them."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CLIError(f"--v1-resources {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CLIError(f"--v1-resources {path}: a JSON object is expected")
    definition = data.get("ResourceDefinitionVersion") or data.get("Definition") or data
    environment = (data.get("FunctionConfiguration") or {}).get("Environment") or data.get(
        "Environment"
    ) or data  # fmt: skip
    resources = definition.get("Resources") if isinstance(definition, dict) else None
    policies = environment.get("ResourceAccessPolicies") if isinstance(environment, dict) else None
    if not isinstance(resources, list) or not isinstance(policies, list):
        raise CLIError(
            f"--v1-resources {path}: needs Resources (a ResourceDefinitionVersion) and the "
            "function's ResourceAccessPolicies"
        )
    return resources, policies


def _upload(api: Api, code: str) -> str:
    data = zip_directory(Path(code))
    result = api.request(
        "POST", "/api/v1/artifacts", content=data, headers={"content-type": "application/zip"}
    )
    return str(result["sha256"])


def cmd_function_create(args: argparse.Namespace) -> int:
    body = _function_body(args)
    body["name"] = args.name
    with Api(args) as api:
        body["artifact"] = _upload(api, args.code)
        fn = api.post(f"/api/v1/groups/{args.group}/functions", body)
    return done(
        args,
        fn,
        f"function {fn['name']} version {fn['version']} created in group {args.group}"
        f" (code {fn['artifact']['sha256'][:12]})",
    )


def cmd_function_update(args: argparse.Namespace) -> int:
    body = _function_body(args)
    with Api(args) as api:
        if args.code:
            body["artifact"] = _upload(api, args.code)
        fn = api.request("PATCH", f"/api/v1/groups/{args.group}/functions/{args.name}", json=body)
    return done(args, fn, f"function {fn['name']} is now version {fn['version']}")


def cmd_function_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get(f"/api/v1/groups/{args.group}/functions")
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [
                [
                    f["name"],
                    str(f["version"]),
                    f["handler"],
                    f["runtime"],
                    "yes" if f["pinned"] else "no",
                ]
                for f in result["items"]
            ],
            ["FUNCTION", "VERSION", "HANDLER", "RUNTIME", "PINNED"],
        )
    return 0


def _secret_value(args: argparse.Namespace, *, required: bool) -> dict[str, Any]:
    """The request body's value: ``--value`` or ``--from-file`` (``-``: stdin); base64 for
    ``--binary``. Never printed."""
    if args.value is not None and args.from_file is not None:
        raise CLIError("give --value or --from-file, not both")
    if args.value is not None:
        data = args.value.encode()
    elif args.from_file is not None:
        try:
            data = (
                sys.stdin.buffer.read()
                if args.from_file == "-"
                else Path(args.from_file).read_bytes()
            )
        except OSError as exc:
            raise CLIError(f"--from-file {args.from_file}: {exc.strerror}") from exc
    elif required:
        raise CLIError("give the value: --value V or --from-file FILE (- for stdin)")
    else:
        return {}
    if args.binary:
        return {"value": base64.b64encode(data).decode(), "binary": True}
    try:
        return {"value": data.decode()}
    except UnicodeDecodeError as exc:
        raise CLIError("the value is not UTF-8 text: add --binary") from exc


def _secret_path(args: argparse.Namespace, name: str = "") -> str:
    base = f"/api/v1/groups/{args.group}/secrets"
    return f"{base}/{quote(name, safe='')}" if name else base


def cmd_secret_create(args: argparse.Namespace) -> int:
    body = {"name": args.name, **_secret_value(args, required=True)}
    with Api(args) as api:
        result = api.post(_secret_path(args), body)
    print(f"secret {args.name} created in group {args.group} (version {result['version_id']})")
    return 0


def cmd_secret_update(args: argparse.Namespace, *, rotate: bool = False) -> int:
    body = _secret_value(args, required=not rotate)
    with Api(args) as api:
        path = _secret_path(args, args.name) + ("/rotate" if rotate else "")
        result = api.post(path, body) if rotate else api.request("PUT", path, json=body)
    print(
        f"secret {args.name}: version {result['version_id']} is AWSCURRENT"
        + (f", {result['previous']} is AWSPREVIOUS" if result.get("previous") else "")
        + "; deploy the group to deliver it"
    )
    return 0


def cmd_secret_rotate(args: argparse.Namespace) -> int:
    return cmd_secret_update(args, rotate=True)


def cmd_secret_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        names = [item["name"] for item in api.get(_secret_path(args))["items"]]
    if args.json:
        print_json(names)
    else:
        for name in names:
            print(name)
    return 0


def cmd_secret_versions(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get(_secret_path(args, args.name))
    _table(
        [[v["version_id"], ",".join(v["stages"]), v["created_at"], "binary" if v["binary"]
          else "string"] for v in result["versions"]],
        ["VERSION", "STAGES", "CREATED", "TYPE"],
    )  # fmt: skip
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", _secret_path(args, args.name))
    print(f"secret {args.name} deleted from group {args.group}")
    return 0


def cmd_function_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/groups/{args.group}/functions/{args.name}")
    return done(args, {"deleted": args.name}, f"function {args.name} deleted")


def _connector_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"{path} is not TOML: {exc}") from exc


def cmd_connector_add(args: argparse.Namespace) -> int:
    body = {"kind": args.kind, "name": args.name, "config": _connector_config(args.config)}
    with Api(args) as api:
        c = api.post(f"/api/v1/groups/{args.group}/connectors", body)
    print(f"connector {c['name']}: {c['kind']} version {c['version']} (deploy to apply)")
    return 0


def cmd_connector_update(args: argparse.Namespace) -> int:
    body = {"config": _connector_config(args.config)}
    with Api(args) as api:
        c = api.request("PUT", f"/api/v1/groups/{args.group}/connectors/{args.name}", json=body)
    print(f"connector {c['name']}: {c['kind']} updated (deploy to apply)")
    return 0


def cmd_connector_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get(f"/api/v1/groups/{args.group}/connectors")
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [
                [c["name"], c["kind"], str(c["version"]), _connector_where(c)]
                for c in result["items"]
            ],
            ["CONNECTOR", "KIND", "VERSION", "DEVICE"],
        )
    return 0


def _connector_where(c: dict[str, Any]) -> str:
    config = c.get("config", {})
    if c["kind"] == "modbus-tcp":
        return f"{config.get('host')}:{config.get('port', 502)}"
    return str(config.get("serial_port") or config.get("url") or "")


def cmd_connector_remove(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/groups/{args.group}/connectors/{args.name}")
    print(f"connector {args.name} removed (deploy to apply)")
    return 0


def cmd_subscription_add(args: argparse.Namespace) -> int:
    with Api(args) as api:
        sub = api.post(
            f"/api/v1/groups/{args.group}/subscriptions",
            {"source": args.source, "topic": args.topic, "target": args.target},
        )
    return done(
        args, sub, f"subscription {sub['id']}: {sub['source']} {sub['topic']} -> {sub['target']}"
    )


def cmd_subscription_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get(f"/api/v1/groups/{args.group}/subscriptions")
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [[str(s["id"]), s["source"], s["topic"], s["target"]] for s in result["items"]],
            ["ID", "SOURCE", "TOPIC", "TARGET"],
        )
    return 0


def cmd_subscription_remove(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/groups/{args.group}/subscriptions/{args.id}")
    return done(args, {"removed": args.id}, f"subscription {args.id} removed")


# ---- deployments -----------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"kind": "new"}
    if args.reset:
        body = {"kind": "reset"}
    elif args.redeploy is not None:
        body = {"kind": "redeploy"}
        if args.redeploy:
            body["deployment_id"] = args.redeploy
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    if args.core_version:
        body["core_version"] = args.core_version
    with Api(args) as api:
        plan = api.post(f"/api/v1/groups/{args.group}/deployments/plan", body)
        if args.dry_run:
            if args.json:
                print_json(plan)
            else:
                _print_plan(args.group, plan)
            return 0
        if not args.json:
            _print_plan(args.group, plan)
            if args.core_version:
                print(f"  core: update to Hedgerow {args.core_version} (rolled back on failure)")
        if not plan["empty"] and not args.yes and sys.stdin.isatty():
            answer = input("deploy these changes? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("nothing deployed (--yes skips this question)")
                return 1
        deployment = api.post(f"/api/v1/groups/{args.group}/deployments", body)
        deployment_id = deployment["deployment_id"]
        restores = f" (restores {deployment['restores']})" if deployment.get("restores") else ""
        line = (
            f"deployment {deployment_id}{restores} of group {args.group} to core"
            f" {deployment['core']}: {deployment['status']}"
        )
        if not args.wait:
            return done(args, deployment, line)
        print(line, flush=True)
        return _wait(api, deployment_id, args.timeout)


def _print_plan(group: str, plan: dict[str, Any]) -> None:
    running = plan["running"] or "nothing yet"
    print(f"plan for group {group} (the core runs {running}):")
    for line in plan["lines"]:
        print(f"  {line}")


def _wait(api: Api, deployment_id: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 1
    started = time.monotonic()
    while time.monotonic() < deadline:
        deployment = api.get(f"/api/v1/deployments/{deployment_id}")
        for event in deployment["events"][seen:]:
            detail = f" ({event['detail']})" if event["detail"] else ""
            print(f"  {time.monotonic() - started:6.1f}s  {event['status']}{detail}", flush=True)
        seen = len(deployment["events"])
        if deployment["status"] in FINAL_STATUSES:
            if deployment["status"] == "Success":
                print(f"deployment {deployment_id} succeeded in {time.monotonic() - started:.1f}s")
                return 0
            print(
                f"deployment {deployment_id} ended {deployment['status']}: {deployment['detail']}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.2)
    print(
        f"deployment {deployment_id} did not finish within {timeout:.0f}s (is the core running?)",
        file=sys.stderr,
    )
    return 1


def cmd_release_upload(args: argparse.Namespace) -> int:
    wheel: Path = args.wheel
    if wheel.suffix != ".whl" or not wheel.is_file():
        raise CLIError(f"{wheel}: not a wheel file (build one: pip wheel --no-deps -w dist .)")
    files = [wheel]
    if args.wheelhouse is not None:
        if not args.wheelhouse.is_dir():
            raise CLIError(f"--wheelhouse {args.wheelhouse}: not a directory")
        files += sorted(p for p in args.wheelhouse.glob("*.whl") if p.name != wheel.name)
    uploaded = []
    with Api(args) as api:
        for index, path in enumerate(files, 1):
            data = path.read_bytes()
            if not args.json:
                print(
                    f"  [{index}/{len(files)}] {path.name} ({len(data) / 1e6:.1f} MB)", flush=True
                )
            stored = api.request(
                "POST",
                "/api/v1/artifacts",
                content=data,
                headers={"content-type": "application/octet-stream"},
            )
            uploaded.append({"filename": path.name, "sha256": stored["sha256"]})
        release = api.post("/api/v1/releases", {"wheels": uploaded})
    return done(
        args,
        release,
        f"release {release['version']}: {len(release['wheels'])} wheel(s), "
        f"{release['size'] / 1e6:.1f} MB, signed; deploy it with "
        f"hedgerow cloud deploy --group G --core-version {release['version']}",
    )


def cmd_release_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get("/api/v1/releases")
    if args.json:
        print_json(result["items"])
        return 0
    _table(
        [
            [r["version"], str(len(r["wheels"])), f"{r['size'] / 1e6:.1f} MB", r["created_at"]]
            for r in result["items"]
        ],
        ["VERSION", "WHEELS", "SIZE", "CREATED"],
    )
    return 0


def cmd_release_remove(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.request("DELETE", f"/api/v1/releases/{args.version}")
    return done(args, result, f"release {args.version} removed")


def cmd_deployments(args: argparse.Namespace) -> int:
    with Api(args) as api:
        if args.id:
            show(args, api.get(f"/api/v1/deployments/{args.id}"))
            return 0
        if not args.group:
            raise CLIError("give --group G (history of a group) or a deployment id")
        result = api.get(
            f"/api/v1/groups/{args.group}/deployments", params={"limit": str(args.limit)}
        )
    if args.json:
        print_json(result["items"])
    else:
        _table(
            [
                [d["deployment_id"], d["kind"], d["status"], d["created_at"], d["detail"]]
                for d in result["items"]
            ],
            ["DEPLOYMENT", "KIND", "STATUS", "CREATED", "DETAIL"],
        )
    return 0


def fleet_definition(from_group: str | None, file: str | None) -> dict[str, Any]:
    """What many groups get: ``{"from_group"}``, or the functions and subscriptions of a
    JSON file (``{}``: neither given)."""
    if from_group:
        return {"from_group": from_group}
    if not file:
        return {}
    try:
        spec = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise CLIError(
            f"cannot read fleet file {file}: {exc} (JSON {{functions: [...], subscriptions: [...]}})"
        ) from exc
    return {"functions": spec.get("functions", []), "subscriptions": spec.get("subscriptions", [])}


def cmd_fleet_apply(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"groups": args.group, "deploy": args.deploy}
    body.update(fleet_definition(args.from_group, args.file))
    if len(body) == 2:
        raise CLIError("give --from-group TEMPLATE or --file fleet.json")
    with Api(args) as api:
        result = api.post("/api/v1/fleet/apply", body)
    if args.json:
        print_json(result)
        return 0
    print(
        f"applied {result['functions']} function(s) and {result['subscriptions']} subscription(s) to {len(result['groups'])} group(s)"
    )
    for deployment in result.get("deployments", []):
        print(f"  {deployment['group']}: deployment {deployment['deployment_id']}")
    return 0


# ---- telemetry ---------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def reading_time(payload: str | None) -> float | None:
    """The reading's own timestamp (a JSON payload's ``timestamp``, Unix seconds), if any:
    readings spooled while offline arrive in a burst, but were taken one by one."""
    if not payload or not payload.startswith("{"):
        return None
    try:
        value = json.loads(payload).get("timestamp")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e11:
        return float(value)
    return None


def _message_line(message: dict[str, Any]) -> str:
    """``#id  ingest time  (read at ...)  core  topic  payload``."""
    payload = message.get("payload")
    if payload is None:
        payload = "base64:" + message.get("payload_base64", "")
    read = reading_time(message.get("payload"))
    taken = f"  read {_utc(read)[11:]}" if read is not None else ""
    ident = f"#{message['id']}  " if "id" in message else ""
    return (
        f"{ident}{_utc(message['ts'])}{taken}  {message['core']:<16} {message['topic']}  {payload}"
    )


def _topic_filter(args: argparse.Namespace, *, required: bool) -> str | None:
    """The topic filter, given as the positional argument or ``--filter`` (the same idea,
    spelled either way, in ``messages`` and ``tail``)."""
    positional, flag = args.filter_positional, args.filter
    if positional and flag and positional != flag:
        raise CLIError(f"two topic filters ({positional!r} and --filter {flag!r}): give one")
    chosen = positional or flag
    if required and not chosen:
        raise CLIError("give a topic filter, e.g. 'corrected/#' (or --filter 'corrected/#')")
    return str(chosen) if chosen else None


#: messages fetched per API call with --all
MESSAGE_PAGE = 1000


def cmd_messages(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CLIError("--limit must be at least 1")
    params: dict[str, str] = {}
    topic_filter = _topic_filter(args, required=False)
    if topic_filter:
        params["filter"] = topic_filter
    if args.group:
        params["group"] = args.group
    if args.since:
        params["since"] = args.since
    if args.until:
        params["until"] = args.until
    paging = args.after is not None or args.all
    with Api(args) as api:
        if not paging:  # the newest --limit, shown oldest first
            page = api.get("/api/v1/messages", params={**params, "limit": str(args.limit)})
            messages = list(reversed(page["items"]))
            more = len(messages) == args.limit
        else:  # oldest first from --after (or the beginning), one page or --all
            messages, more = [], False
            after = args.after or 0
            size = MESSAGE_PAGE if args.all else args.limit
            while True:
                query = {**params, "order": "asc", "limit": str(size), "after_id": str(after)}
                page = api.get("/api/v1/messages", params=query)["items"]
                messages += page
                more = len(page) == size
                if not page or not args.all or not more:
                    break
                after = page[-1]["id"]
    if args.json:
        print_json(messages)
        return 0
    for message in messages:
        print(_message_line(message))
    note = f"{len(messages)} message(s)"
    if more and messages and not args.all:
        if paging:
            note += f"; next page: --after {messages[-1]['id']}"
        else:
            note += (
                f", the newest; older ones: --after ID (from #{messages[0]['id']} back) or --all"
            )
    print(f"({note})", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.post(
            "/api/v1/messages/publish",
            {"topic": args.topic, "payload": args.payload, "retain": args.retain},
        )
    return done(args, result, f"published {result['bytes']} bytes to {result['topic']}")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CLIError(
            f'{option} is not JSON ({exc}): give an object, e.g. \'{{"led": "on"}}\''
        ) from exc
    if value is not None and not isinstance(value, dict):
        raise CLIError(f"{option} must be a JSON object (or null to clear the section)")
    return {"value": value}


def _print_shadow(args: argparse.Namespace, shadow: dict[str, Any]) -> None:
    if args.json:
        print_json(shadow)
        return
    state = shadow["state"]
    synced = ", ".join(shadow["synced_by"]) or "no core (set the group's --sync-shadows, deploy)"
    print(f"thing     {shadow['thing']}")
    print(f"version   {shadow['version']}")
    print(f"synced by {synced}")
    keys = sorted(set(state.get("desired", {})) | set(state.get("reported", {})))
    rows = []
    for key in keys:
        desired = state.get("desired", {}).get(key, "-")
        reported = state.get("reported", {}).get(key, "-")
        mark = "*" if key in state.get("delta", {}) else ""
        rows.append([key, json.dumps(desired), json.dumps(reported), mark])
    if rows:
        _table(rows, ["KEY", "DESIRED", "REPORTED", "DELTA"])
    else:
        print("(empty shadow)")


def cmd_shadow_get(args: argparse.Namespace) -> int:
    with Api(args) as api:
        _print_shadow(args, api.get(f"/api/v1/things/{args.thing}/shadow"))
    return 0


def cmd_shadow_update(args: argparse.Namespace) -> int:
    state: dict[str, Any] = {}
    for option, text in (("desired", args.desired), ("reported", args.reported)):
        value = _json_object(text, f"--{option}")
        if value is not None:
            state[option] = value["value"]
    if not state:
        raise CLIError("nothing to change: give --desired '{...}' and/or --reported '{...}'")
    body: dict[str, Any] = {"state": state}
    if args.version is not None:
        body["version"] = args.version
    with Api(args) as api:
        shadow = api.request("PATCH", f"/api/v1/things/{args.thing}/shadow", json=body)
    if args.json:
        print_json(shadow)
    else:
        cores = ", ".join(shadow["synced_by"]) or "no core syncs it yet"
        print(f"shadow of {shadow['thing']} at version {shadow['version']} (sent to: {cores})")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    topic_filter = _topic_filter(args, required=True)
    assert topic_filter is not None
    print(f"following {topic_filter} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    count = 0
    with Api(args) as api:
        for line in api.stream_lines("/api/v1/messages/stream", {"filter": topic_filter}):
            if not line.startswith("data: "):
                continue
            message = json.loads(line[len("data: ") :])
            print(json.dumps(message) if args.json else _message_line(message), flush=True)
            count += 1
            if args.count and count >= args.count:
                break
    return 0


# ---- argument parsing ------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="the cloud's data directory (token, CA, URL); env HEDGEROW_CLOUD_DATA"
    )
    parser.add_argument("--url", help="API URL, e.g. https://cloud:8080; env HEDGEROW_CLOUD_URL")
    parser.add_argument(
        "--token", help="API token; env HEDGEROW_CLOUD_TOKEN (default: DATA/admin-token)"
    )
    parser.add_argument("--ca", help="CA file to verify an https API; env HEDGEROW_CLOUD_CA")
    add_json_flag(parser)


def _listen_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    from hedgerow.cloud.config import DEFAULT_API_PORT, DEFAULT_DEVICE_PORT, DEFAULT_MQTT_PORT

    parser.add_argument(
        "--api-host",
        default="127.0.0.1" if defaults else None,
        help="REST API address (HTTPS unless loopback)",
    )
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT if defaults else None)
    parser.add_argument(
        "--device-host",
        default="0.0.0.0" if defaults else None,
        help="discovery / device HTTPS address",
    )
    parser.add_argument(
        "--device-port", type=int, default=DEFAULT_DEVICE_PORT if defaults else None
    )
    parser.add_argument(
        "--mqtt-host", default="0.0.0.0" if defaults else None, help="cloud MQTT address"
    )
    parser.add_argument("--mqtt-port", type=int, default=DEFAULT_MQTT_PORT if defaults else None)


def _filter_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "filter_positional",
        nargs="?",
        metavar="TOPIC_FILTER",
        help="topic filter, e.g. 'corrected/#'" + ("" if required else " (default: every topic)"),
    )
    parser.add_argument("--filter", help="the same, as a flag")


SYNC_SHADOWS_HELP = (
    "things whose shadows the core syncs with the cloud, comma-separated ('' for none); "
    "takes effect with the next deploy"
)


def _command(
    subparsers: Any, name: str, func: Any, help_text: str, *, client: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    if client:
        _client_options(parser)
    parser.set_defaults(func=func)
    return parser


def _function_options(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--group", required=True)
    parser.add_argument("name")
    parser.add_argument(
        "--code", required=create, help="the function's code directory (zipped and uploaded)"
    )
    parser.add_argument("--handler", required=create, help="module.function")
    parser.add_argument("--runtime", choices=["python", "greengrass-v1"])
    parser.add_argument(
        "--pinned",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="long-lived (pinned) function",
    )
    parser.add_argument("--memory", type=int, metavar="MB")
    parser.add_argument("--timeout", type=float, metavar="S")
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--encoding", choices=["json", "binary"])
    parser.add_argument(
        "--env", action="append", metavar="K=V", help="environment variable (repeatable)"
    )
    parser.add_argument(
        "--device",
        action="append",
        metavar="PATH[:ro|rw]",
        help="a device file the function may open, e.g. /dev/ttyUSB0:rw (repeatable)",
    )
    parser.add_argument(
        "--volume",
        action="append",
        metavar="SRC[:DST][:ro|rw]",
        help="a host directory the function sees at DST, e.g. /var/data:/data:ro (repeatable)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        metavar="NAME",
        help="a secret of the group the function may read (repeatable; replaces the list)",
    )
    parser.add_argument(
        "--os-group",
        action="append",
        metavar="NAME",
        help="an OS group the function's process joins on the gateway (repeatable)",
    )
    parser.add_argument(
        "--v1-resources",
        metavar="FILE",
        help="a Greengrass V1 ResourceDefinitionVersion with the function's "
        "ResourceAccessPolicies (JSON): its devices, volumes, group owners and secrets",
    )
    parser.add_argument(
        "--no-group-owner",
        action="store_true",
        help="do not add each resource's owning group to the function's process (V1's "
        "group owner auto-add is on by default)",
    )


def _kek_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kek-file",
        help="the key-encryption keyring (default: [secrets] kek_file, else "
        "DATA/pki/keyring.json; env HEDGEROW_CLOUD_KEK_FILE)",
    )


def register(subparsers: Any) -> None:
    cloud = subparsers.add_parser(
        "cloud", help="the control plane: registry, PKI, discovery, deployments, telemetry"
    )
    sub = cloud.add_subparsers(dest="cloud_command", metavar="COMMAND")
    cloud.set_defaults(func=lambda args: (cloud.print_help(), 2)[1])

    p = _command(
        sub,
        "init",
        cmd_init,
        "create a data directory: root CA, database, admin token, config",
        client=False,
    )
    p.add_argument("--data", help="directory to create (default ./hedgerow-cloud)")
    p.add_argument(
        "--host",
        action="append",
        help="name/address of this server for its certificate (repeatable; first is advertised)",
    )
    p.add_argument(
        "--advertise", help="host written into core bundles (default: first --host, else 127.0.0.1)"
    )
    p.add_argument(
        "--database",
        help="SQLAlchemy URL (default: SQLite in the data directory), e.g. postgresql://user@host/db",
    )
    p.add_argument("--broker", help="external MQTT broker, mqtts://host:port")
    p.add_argument(
        "--ca-rotation-days", type=int, default=7, help="group CA rotation period, 1-30 days"
    )
    p.add_argument("--retention-days", type=float, default=7.0, help="how long telemetry is kept")
    _kek_option(p)
    _listen_options(p, defaults=True)

    p = _command(
        sub,
        "serve",
        cmd_serve,
        "run the REST API, device HTTPS (discovery) and cloud MQTT",
        client=False,
    )
    p.add_argument("--data", help="data directory made by `hedgerow cloud init`")
    p.add_argument("--database", help="override the database URL (postgresql://...)")
    p.add_argument(
        "--broker",
        help="use an external MQTT broker (mqtts://host:port) instead of the embedded one",
    )
    p.add_argument(
        "--replica-id",
        help="this replica's name at the external broker, stable across its restarts "
        "(default: host name and API port)",
    )
    p.add_argument(
        "--broker-protocol",
        choices=("5", "3.1.1"),
        help="the external broker's MQTT version: 3.1.1 where it has no 5 (RabbitMQ 3.10)",
    )
    p.add_argument(
        "--broker-login",
        choices=("certificate", "password", "mosquitto-dynsec"),
        help="password: the broker asks the cloud who logs in (HTTP auth backend; "
        "the URLs are printed at start); mosquitto-dynsec: the cloud keeps Mosquitto's "
        "dynamic security clients and roles in step with the registry",
    )
    p.add_argument(
        "--broker-ingest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-broker-ingest: this replica takes no telemetry (a broker without shared "
        "subscriptions: one replica ingests)",
    )
    p.add_argument(
        "--no-mqtt", action="store_true", help="no MQTT endpoint (API and discovery only)"
    )
    _kek_option(p)
    _listen_options(p, defaults=False)

    p = _command(
        sub,
        "rotate-kek",
        cmd_rotate_kek,
        "new key-encryption key: re-wrap every sealed group CA key, then retire the old key",
        client=False,
    )
    p.add_argument("--data", help="data directory made by `hedgerow cloud init`")
    p.add_argument("--database", help="override the database URL (postgresql://...)")
    _kek_option(p)

    p = _command(
        sub,
        "dynsec-init",
        cmd_dynsec_init,
        "write Mosquitto's first dynamic security file (broker_login = mosquitto-dynsec)",
        client=False,
    )
    p.add_argument("--data", help="data directory made by `hedgerow cloud init`")
    p.add_argument("file", help="the new file (plugin_opt_config_file); never overwritten")

    _command(sub, "status", cmd_status, "where the cloud listens and its counters")

    group = sub.add_parser("group", help="groups").add_subparsers(
        dest="group_command", metavar="COMMAND", required=True
    )
    p = _command(group, "create", cmd_group_create, "create a group")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--ca-rotation-days", type=int)
    p.add_argument(
        "--open-broker",
        action="store_true",
        help="devices may publish/subscribe anywhere in the group",
    )
    label_help = "a label key=value (repeat); rollouts select groups by labels"
    p.add_argument("--label", action="append", default=[], help=label_help)
    p.add_argument("--sync-shadows", metavar="THING,...", help=SYNC_SHADOWS_HELP)
    p = _command(group, "list", cmd_group_list, "list groups")
    p.add_argument("--label", action="append", default=[], help="only groups with key=value")
    p = _command(group, "update", cmd_group_update, "change a group's description or settings")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--ca-rotation-days", type=int)
    p.add_argument("--open-broker", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--label", action="append", default=[], help=label_help + " (key= removes)")
    p.add_argument("--sync-shadows", metavar="THING,...", help=SYNC_SHADOWS_HELP)
    for name, func, text in (
        ("show", cmd_group_show, "show a group"),
        ("delete", cmd_group_delete, "delete a group and what only it owns"),
        ("rotate-ca", cmd_group_rotate_ca, "rotate the group CA now"),
    ):
        _command(group, name, func, text).add_argument("name")

    core = sub.add_parser("core", help="cores (gateways)").add_subparsers(
        dest="core_command", metavar="COMMAND", required=True
    )
    p = _command(
        core,
        "create",
        cmd_core_create,
        "create a core and write its provisioning bundle NAME.tar.gz",
    )
    p.add_argument("--group", required=True)
    p.add_argument("--out", default=".", help="directory for the bundle (default: here)")
    p.add_argument("name")
    p = _command(core, "bundle", cmd_core_bundle, "new identity and provisioning bundle for a core")
    p.add_argument("--out", default=".", help="directory for the bundle (default: here)")
    p.add_argument("name")
    _command(core, "list", cmd_core_list, "list cores")
    _command(core, "show", cmd_core_show, "show a core").add_argument("name")
    p = _command(
        core,
        "support-bundle",
        cmd_core_support_bundle,
        "fetch a support bundle from a core through the cloud (versions, config without "
        "secrets, core check, recent logs, last deployments)",
    )
    p.add_argument("name")
    p.add_argument("--out", help="file to write (default: NAME-support.tar.gz)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the core")
    p.add_argument(
        "--expires",
        type=float,
        default=86400.0,
        metavar="S",
        help="seconds the request waits for a core that is offline (default: 86400, a day)",
    )
    p.add_argument("--request", metavar="ID", help="fetch this earlier request instead of asking")
    _command(core, "delete", cmd_core_delete, "delete a core").add_argument("name")

    thing = sub.add_parser("thing", help="things (devices)").add_subparsers(
        dest="thing_command", metavar="COMMAND", required=True
    )
    p = _command(
        thing,
        "create",
        cmd_thing_create,
        "create a thing and write its certificate (and key) to --out",
    )
    p.add_argument("--group", action="append", help="group to put it in (repeatable)")
    p.add_argument("--out", help="directory for NAME.cert.pem, NAME.key, root-ca.pem")
    p.add_argument(
        "--csr", help="sign this CSR instead of generating a key (the key stays on the device)"
    )
    p.add_argument(
        "--cert",
        help="register the device's own certificate (PEM) as it is: nothing is issued, the "
        "device keeps its key (Greengrass V1 migration)",
    )
    p.add_argument("name")
    p = _command(thing, "list", cmd_thing_list, "list things")
    p.add_argument("--group")
    p.add_argument("--limit", type=int, default=1000)
    _command(thing, "show", cmd_thing_show, "show a thing and its certificates").add_argument(
        "name"
    )
    p = _command(thing, "revoke", cmd_thing_revoke, "revoke every certificate of a thing")
    p.add_argument("--group", help="the thing's group (checked before anything is revoked)")
    p.add_argument("name")
    _command(thing, "delete", cmd_thing_delete, "delete a thing").add_argument("name")
    p = _command(thing, "attach", cmd_thing_attach, "put a thing into another group")
    p.add_argument("--group", required=True)
    p.add_argument("name")
    p = _command(thing, "detach", cmd_thing_detach, "take a thing out of a group")
    p.add_argument("--group", required=True)
    p.add_argument("name")

    from hedgerow.cli import cloud_claims

    cloud_claims.register_thing_import(thing)
    cloud_claims.register(sub)
    release = sub.add_parser(
        "release", help="Hedgerow releases for over-the-air updates of cores"
    ).add_subparsers(dest="release_command", metavar="COMMAND", required=True)
    p = _command(
        release,
        "upload",
        cmd_release_upload,
        "upload a hedgerow wheel (and its dependencies) as a release cores can run",
    )
    p.add_argument("wheel", type=Path, help="dist/hedgerow-VERSION-py3-none-any.whl")
    p.add_argument(
        "--wheelhouse",
        type=Path,
        help="a directory of the dependencies' wheels (pip download -d DIR WHEEL): "
        "what a core without internet installs from",
    )
    _command(release, "list", cmd_release_list, "the releases the cloud holds")
    p = _command(release, "remove", cmd_release_remove, "remove a release")
    p.add_argument("version")

    function = sub.add_parser("function", help="functions").add_subparsers(
        dest="function_command", metavar="COMMAND", required=True
    )
    _function_options(
        _command(
            function, "create", cmd_function_create, "create a function from a code directory"
        ),
        create=True,
    )
    _function_options(
        _command(function, "update", cmd_function_update, "new version of a function"), create=False
    )
    _command(function, "list", cmd_function_list, "list a group's functions").add_argument(
        "--group", required=True
    )
    p = _command(function, "delete", cmd_function_delete, "delete a function")
    p.add_argument("--group", required=True)
    p.add_argument("name")

    connector = sub.add_parser(
        "connector", help="industrial connectors (Modbus TCP/RTU, OPC UA) run by the core"
    ).add_subparsers(dest="connector_command", metavar="COMMAND", required=True)
    p = _command(connector, "add", cmd_connector_add, "add a connector to a group")
    p.add_argument("--group", required=True)
    p.add_argument("kind", choices=["modbus-tcp", "modbus-rtu", "opcua"])
    p.add_argument("name")
    p.add_argument("--config", required=True, help="the connector's settings (TOML file)")
    p = _command(connector, "update", cmd_connector_update, "replace a connector's settings")
    p.add_argument("--group", required=True)
    p.add_argument("name")
    p.add_argument("--config", required=True, help="the connector's settings (TOML file)")
    _command(connector, "list", cmd_connector_list, "list a group's connectors").add_argument(
        "--group", required=True
    )
    p = _command(connector, "remove", cmd_connector_remove, "remove a connector")
    p.add_argument("--group", required=True)
    p.add_argument("name")

    secret = sub.add_parser("secret", help="secrets functions read").add_subparsers(
        dest="secret_command", metavar="COMMAND", required=True
    )
    for verb, func, text in (
        ("create", cmd_secret_create, "create a secret in a group"),
        ("update", cmd_secret_update, "a new value: it becomes AWSCURRENT"),
        ("rotate", cmd_secret_rotate, "a new (given or generated) value: AWSCURRENT moves"),
    ):
        p = _command(secret, verb, func, text)
        p.add_argument("--group", required=True)
        p.add_argument("name")
        p.add_argument("--value", help="the value (visible in the process list: prefer a file)")
        p.add_argument("--from-file", metavar="FILE", help="read the value from FILE (- stdin)")
        p.add_argument("--binary", action="store_true", help="the value is bytes, not text")
    p = _command(secret, "list", cmd_secret_list, "the names of a group's secrets")
    p.add_argument("--group", required=True)
    p = _command(secret, "versions", cmd_secret_versions, "a secret's versions and labels")
    p.add_argument("--group", required=True)
    p.add_argument("name")
    p = _command(secret, "delete", cmd_secret_delete, "delete a secret and its versions")
    p.add_argument("--group", required=True)
    p.add_argument("name")

    subscription = sub.add_parser("subscription", help="subscriptions (routes)").add_subparsers(
        dest="subscription_command", metavar="COMMAND", required=True
    )
    p = _command(
        subscription, "add", cmd_subscription_add, "route SOURCE's messages on TOPIC to TARGET"
    )
    p.add_argument("--group", required=True)
    p.add_argument("--source", required=True, help="thing:NAME, function:NAME, cloud or shadow")
    p.add_argument("--topic", required=True, help="topic filter")
    p.add_argument("--target", required=True, help="thing:NAME, function:NAME, cloud or shadow")
    _command(
        subscription, "list", cmd_subscription_list, "list a group's subscriptions"
    ).add_argument("--group", required=True)
    p = _command(subscription, "remove", cmd_subscription_remove, "remove a subscription")
    p.add_argument("--group", required=True)
    p.add_argument("id", type=int)

    p = _command(sub, "deploy", cmd_deploy, "deploy a group to its core")
    p.add_argument("--group", required=True)
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the core reports; non-zero exit on failure",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits")
    p.add_argument(
        "--deadline",
        type=float,
        help="seconds the core has to finish it, else it fails (default: the cloud's)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the deployment would change on the core and deploy nothing",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="deploy without asking (a deploy from a script, stdin not a terminal, never asks)",
    )
    p.add_argument(
        "--core-version",
        metavar="VERSION",
        help="update the group's core to this release (hedgerow cloud release upload); "
        "kept as the group's setting for later deployments",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--reset",
        action="store_true",
        help="deploy an empty configuration (remove functions and routes)",
    )
    mode.add_argument(
        "--redeploy",
        nargs="?",
        const="",
        metavar="ID",
        help="deploy an earlier deployment again (default: the last)",
    )

    p = _command(
        sub, "deployments", cmd_deployments, "deployment history of a group, or one deployment"
    )
    p.add_argument("--group")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("id", nargs="?")

    from hedgerow.cli import cloud_ops  # (it builds on this module's helpers)

    cloud_ops.register(sub)

    fleet = sub.add_parser("fleet", help="many groups at once").add_subparsers(
        dest="fleet_command", metavar="COMMAND", required=True
    )
    p = _command(
        fleet, "apply", cmd_fleet_apply, "give many groups the same functions and subscriptions"
    )
    p.add_argument("--group", action="append", required=True, help="target group (repeatable)")
    p.add_argument("--from-group", help="copy functions and subscriptions of this group")
    p.add_argument("--file", help="JSON {functions: [...], subscriptions: [...]}")
    p.add_argument("--deploy", action="store_true", help="deploy every group afterwards")

    from hedgerow.cli import fleet as fleet_cli

    fleet_cli.register(sub)

    p = _command(sub, "messages", cmd_messages, "stored telemetry")
    _filter_options(p, required=False)
    p.add_argument("--group", help="only what this group's core sent")
    p.add_argument("--since", help="epoch seconds or ISO-8601")
    p.add_argument("--until", help="epoch seconds or ISO-8601")
    p.add_argument("--limit", type=int, default=50, help="messages per page (default 50)")
    p.add_argument(
        "--after", type=int, metavar="ID", help="oldest first, from the message after #ID"
    )
    p.add_argument("--all", action="store_true", help="every matching message, oldest first")

    p = _command(
        sub,
        "publish",
        cmd_publish,
        "publish a message from the cloud to cores (routes with source cloud)",
    )
    p.add_argument("topic")
    p.add_argument("payload")
    p.add_argument("--retain", action="store_true")

    shadow = sub.add_parser("shadow", help="thing shadows synced with the cloud").add_subparsers(
        dest="shadow_command", metavar="COMMAND", required=True
    )
    p = _command(shadow, "get", cmd_shadow_get, "show a thing's shadow: desired vs reported")
    p.add_argument("thing")
    p = _command(shadow, "update", cmd_shadow_update, "change a thing's shadow (reaches its core)")
    p.add_argument("thing")
    p.add_argument("--desired", help="JSON object merged into desired (null deletes a key)")
    p.add_argument("--reported", help="JSON object merged into reported")
    p.add_argument("--version", type=int, help="refuse (409) if the shadow moved past this")

    p = _command(sub, "tail", cmd_tail, "follow live telemetry")
    _filter_options(p, required=True)
    p.add_argument("--count", type=int, default=0, help="stop after this many messages")
