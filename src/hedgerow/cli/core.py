"""``hedgerow core``: run the edge daemon, check the machine, install the systemd service."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from hedgerow.cli import CLIError
from hedgerow.cli.output import add_json_flag, print_json, show
from hedgerow.core import service
from hedgerow.core.bundle_unpack import unpack_bundle
from hedgerow.core.config import CONFIG_FILE, CoreConfig, load_config
from hedgerow.core.errors import ConfigError, CoreError
from hedgerow.core.logs import file_handlers

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/hedgerow/core")
    return Path.home() / ".local" / "share" / "hedgerow" / "core"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("core", help="the edge daemon on a gateway")
    sub = parser.add_subparsers(dest="core_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="run the core (first start: --bundle)")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--bundle", type=Path, help="provisioning bundle NAME.tar.gz (first start)")
    source.add_argument("--config", type=Path, help="config.toml (default: DATA_DIR/config.toml)")
    source.add_argument(
        "--claim",
        type=Path,
        help="claim credential claim.tar.gz: provision on first boot (ignored once provisioned)",
    )
    run.add_argument("--serial", help="serial number sent with --claim (default: /etc/machine-id)")
    run.add_argument("--data-dir", type=Path, help="where the core keeps its state")
    run.add_argument(
        "--host", help="address the local MQTT endpoint listens on (config: local.host)"
    )
    run.add_argument(
        "--port", type=int, help="port of the local MQTT endpoint (config: local.port)"
    )
    run.add_argument(
        "--advertise",
        action="append",
        metavar="HOST",
        help="address devices use to reach the core (repeatable; config: local.hosts)",
    )
    run.set_defaults(func=cmd_run)

    provision = sub.add_parser(
        "provision", help="provision this core with a claim credential, then stop"
    )
    provision.add_argument("--claim", type=Path, required=True, help="claim.tar.gz")
    provision.add_argument("--serial", help="serial number (default: /etc/machine-id)")
    provision.add_argument("--data-dir", type=Path, help="where the core keeps its state")
    provision.add_argument(
        "--timeout", type=float, default=120.0, help="keep trying to reach the cloud this long (s)"
    )
    provision.set_defaults(func=cmd_provision)

    for name, helped, timeout_help, json_help, func in (
        ("check", "check dependencies and health (ok / warn / fail)", "per network check (s)",
         "print the checks as JSON", cmd_check),
        ("status", "what the running core reports (its heartbeat)", "seconds to wait for it",
         "print the heartbeat JSON", cmd_status),
    ):  # fmt: skip
        command = sub.add_parser(name, help=helped)
        command.add_argument("--config", type=Path)
        command.add_argument("--data-dir", type=Path)
        command.add_argument("--timeout", type=float, default=5.0, help=timeout_help)
        add_json_flag(command, json_help)
        command.set_defaults(func=func)

    install = sub.add_parser("install-service", help="install and enable the systemd unit")
    install.add_argument("--config", type=Path)
    install.add_argument("--data-dir", type=Path)
    install.add_argument("--user", help="run the core as this user (default: root)")
    install.add_argument("--unit-path", type=Path, default=service.UNIT_PATH)
    install.add_argument("--no-systemctl", action="store_true", help="only write the unit file")
    add_json_flag(install, "print the unit, command and next steps as JSON")
    install.set_defaults(func=cmd_install)

    uninstall = sub.add_parser("uninstall-service", help="disable and remove the systemd unit")
    uninstall.add_argument("--unit-path", type=Path, default=service.UNIT_PATH)
    uninstall.add_argument("--no-systemctl", action="store_true")
    uninstall.set_defaults(func=cmd_uninstall)

    deploy = sub.add_parser(
        "deploy", help="apply an offline deployment file (no cloud needed; the core must run)"
    )
    deploy.add_argument(
        "--file", type=Path, required=True, help="from `hedgerow cloud deployment export`"
    )
    deploy.add_argument("--config", type=Path)
    deploy.add_argument("--data-dir", type=Path)
    deploy.add_argument("--timeout", type=float, default=300.0, help="wait this long (s)")
    deploy.add_argument("--json", action="store_true", help="print the result as JSON")
    deploy.set_defaults(func=cmd_deploy)

    opcua = sub.add_parser("opcua", help="OPC UA tools (to pick nodes for a connector)")
    opcua_sub = opcua.add_subparsers(dest="opcua_command", required=True)
    browse = opcua_sub.add_parser("browse", help="list an OPC UA server's nodes")
    browse.add_argument("url", help="opc.tcp://host:4840/path")
    browse.add_argument("--node", default="i=85", help="where to start (default: Objects)")
    browse.add_argument("--depth", type=int, default=3)
    browse.add_argument("--limit", type=int, default=1000)
    browse.add_argument("--username", default="")
    browse.add_argument("--password", default="", help="or HEDGEROW_OPCUA_PASSWORD")
    browse.add_argument("--security-policy", default="None", choices=["None", "Basic256Sha256"])
    browse.add_argument("--security-mode", default=None, choices=["Sign", "SignAndEncrypt"])
    browse.add_argument("--certificate", default="", help="our certificate (trusted by the server)")
    browse.add_argument("--private-key", default="")
    browse.add_argument("--server-certificate", default="")
    browse.add_argument("--timeout", type=float, default=4.0)
    add_json_flag(browse, "print the nodes as JSON")
    browse.set_defaults(func=cmd_opcua_browse)


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    return (args.data_dir or default_data_dir()) / CONFIG_FILE


def _load(path: Path) -> CoreConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        hint = (
            "first start: hedgerow core run --bundle NAME.tar.gz"
            if exc.field == "config" and not path.exists()
            else "see src/hedgerow/core/README.md for the keys"
        )
        where = "" if exc.file else f"{path}: "  # the loader's errors name the file
        raise CLIError(f"{where}{exc} ({hint})") from exc


def _file_logging(config: CoreConfig) -> list[logging.Handler]:
    handlers = file_handlers(config.log_dir, config.logging.max_bytes, config.logging.backups)
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
        for h in root.handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.WARNING)
    return handlers


def _local_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[local]`` keys the command-line flags set (they win over the config file)."""
    changes: dict[str, Any] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise CLIError(f"--port {args.port} is not a TCP port (1-65535)")
        changes["port"] = args.port
    if args.advertise:
        changes["hosts"] = tuple(args.advertise)
    elif args.host is not None and _is_loopback(args.host):
        # a core bound to loopback is reachable only there: advertise that, not the interfaces
        changes["hosts"] = (args.host,)
    return changes


def _save_local_overrides(config_path: Path, changes: dict[str, Any]) -> None:
    """Write the flags into the config's ``[local]`` section, so that ``core check``,
    ``install-service`` and the next plain ``core run`` see where the core listens."""
    import tomllib

    import tomli_w

    try:
        document = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CLIError(f"{config_path}: cannot save the flags: {exc}") from exc
    local = document.setdefault("local", {})
    updated = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
    if all(local.get(k) == v for k, v in updated.items()):
        return
    local.update(updated)
    tmp = config_path.with_name(config_path.name + ".tmp")
    try:
        tmp.write_text(tomli_w.dumps(document))
        tmp.chmod(config_path.stat().st_mode & 0o777)  # owner-only stays so (a broker password)
        tmp.replace(config_path)
    except OSError as exc:
        raise CLIError(f"{config_path}: cannot save the flags: {exc}") from exc
    saved = ", ".join(f"local.{k} = {v!r}" for k, v in updated.items())
    print(f"saved to {config_path}: {saved}", flush=True)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _csr_here(key_file: Path, name: str, hosts: Sequence[str]) -> bytes:
    """The key tool's CSR code run in this process (``core provision`` exits right after)."""
    from hedgerow.core import _keytool_child

    reply = _keytool_child.csr({"key_file": str(key_file), "name": name, "hosts": list(hosts)})
    return str(reply["csr"]).encode()


def _provision(
    claim: Path, data_dir: Path, serial: str | None, timeout: float, *, in_process: bool = False
) -> Path:
    from hedgerow.core import keytool
    from hedgerow.core.provision import default_serial, provision_core

    maker = _csr_here if in_process else keytool.make_csr
    try:
        return asyncio.run(
            provision_core(
                claim, data_dir, serial or default_serial(), timeout=timeout, make_csr=maker
            )
        )
    except ConfigError as exc:
        raise CLIError(
            f"{exc} (check the claim with `hedgerow cloud claim show ID` on the cloud)"
        ) from exc


def cmd_provision(args: argparse.Namespace) -> int:
    from hedgerow.core.provision import provisioned

    data_dir = args.data_dir or default_data_dir()
    if provisioned(data_dir):
        print(f"{data_dir} is already provisioned; the claim is not used")
        return 0
    config_path = _provision(args.claim, data_dir, args.serial, args.timeout, in_process=True)
    config = _load(config_path)
    print(f"core {config.name} provisioned in group {config.group} ({data_dir})")
    print(f"run it: hedgerow core run --data-dir {data_dir}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.claim is not None:
        from hedgerow.core.provision import provisioned

        data_dir = args.data_dir or default_data_dir()
        if provisioned(data_dir):
            config_path = data_dir / CONFIG_FILE
        else:
            config_path = _provision(args.claim, data_dir, args.serial, 120.0)
            print(f"provisioned by claim: {config_path}", flush=True)
    elif args.bundle is not None:
        data_dir = args.data_dir or default_data_dir()
        try:
            config_path = unpack_bundle(args.bundle, data_dir)
        except ConfigError as exc:
            raise CLIError(f"{exc}") from exc
    else:
        config_path = _config_path(args)
    config = _load(config_path)
    changes = _local_overrides(args)
    if changes:
        config = dataclasses.replace(config, local=dataclasses.replace(config.local, **changes))
        _save_local_overrides(config_path, changes)
    if _runs_another_release(config):
        return _restart_into_release(config, config_path)
    level = logging.getLogger().level
    handlers = _file_logging(config)
    # the standard event loop: the function runtime's worker channels do not work under uvloop
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    _small_tls_buffers()
    from hedgerow.broker import collector

    collector.tune_for_routing()  # the local endpoint queues for its devices
    outcome: list[bool] = []
    try:
        runner(_run(config, outcome))
    except CoreError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        logging.getLogger().setLevel(level)
    if outcome and outcome[0]:
        return _restart_into_release(config, config_path)
    return 0


def _runs_another_release(config: CoreConfig) -> bool:
    """Started by hand (not by the launcher) after an update of the core: the release
    ``runtime/current`` names (or an update on trial) is the launcher's to start."""
    from hedgerow.core import launcher

    if os.environ.get(launcher.ENV_LAUNCHER):
        return False
    runtime = config.data_dir / "runtime"
    return (
        launcher.current_env(runtime) != launcher.BASE or launcher.read_pending(runtime) is not None
    )


def _restart_into_release(config: CoreConfig, config_path: Path) -> int:
    """The core switched to another release: under the launcher, exit for it to start
    that one; started by hand, become the launcher (same process id) and let it."""
    from hedgerow.core import launcher, runtime

    if os.environ.get(launcher.ENV_LAUNCHER):
        return launcher.RESTART
    command = runtime.restart_command(
        config.data_dir, ["core", "run", "--config", str(config_path.resolve())]
    )
    print(
        f"hedgerow core: restarting into {launcher.current_env(config.data_dir / 'runtime')}",
        flush=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


#: Per-connection TLS read buffer of asyncio (its default, 256 KiB, is allocated for every
#: connection: 500 devices would hold 128 MB). One TLS record carries at most 16 KiB.
TLS_READ_BUFFER = 16 * 1024


def _small_tls_buffers() -> None:
    import asyncio.sslproto

    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


async def _run(config: CoreConfig, outcome: list[bool]) -> None:
    """Run until SIGTERM/SIGINT or until the core switched release (``outcome`` gets
    True then)."""
    from hedgerow.core.daemon import CoreDaemon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with CoreDaemon(config) as core:
        assert core.local_address is not None
        print(
            f"hedgerow core {config.name} serving on {core.local_address[0]}:{core.local_address[1]}",
            flush=True,
        )
        restart = asyncio.ensure_future(core.restart_requested.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({restart, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            restart.cancel()
            stopped.cancel()
        outcome.append(core.restart_requested.is_set())
        service.sd_notify("STOPPING=1")


def cmd_deploy(args: argparse.Namespace) -> int:
    """Hand an offline deployment file to the running core (through its data directory)
    and wait for the result; the core verifies and applies it as any deployment."""
    import json
    import shutil
    import time

    from hedgerow.contract.errors import ContractError
    from hedgerow.contract.offline import unpack
    from hedgerow.core.deployment import OFFLINE_SUFFIX, offline_inbox

    config = _load(_config_path(args))
    try:
        offline = unpack(args.file.read_bytes())
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc}") from exc
    except ContractError as exc:
        raise CLIError(
            f"{args.file} is not an offline deployment ({exc}): write one with "
            "`hedgerow cloud deployment export --group GROUP --out FILE`"
        ) from exc
    if offline.core != config.name:
        raise CLIError(
            f"{args.file} is for core {offline.core!r}, this is {config.name!r}: "
            f"export it for group {config.group!r}"
        )
    inbox = offline_inbox(config.data_dir)
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"{offline.deployment_id}{OFFLINE_SUFFIX}"
    result_file = target.with_name(target.name + ".result")
    result_file.unlink(missing_ok=True)
    tmp = inbox / f".{offline.deployment_id}.tmp"
    shutil.copyfile(args.file, tmp)
    tmp.replace(target)
    if not args.json:
        print(f"deployment {offline.deployment_id} handed to core {config.name}", flush=True)
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    while not result_file.exists():
        if time.monotonic() > deadline:
            raise CLIError(
                f"core {config.name} did not answer within {args.timeout:g} s: is "
                "`hedgerow core run` running? The file stays in "
                f"{inbox} and is applied when the core starts"
            )
        if not args.json and sys.stdout.isatty():
            print(f"\r  applying... {time.monotonic() - started:5.1f} s", end="", flush=True)
        time.sleep(0.2)
    result = json.loads(result_file.read_text())
    result_file.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(result))
    else:
        detail = f": {result['detail']}" if result.get("detail") else ""
        print(f"\rdeployment {result['deployment_id']}: {result['status']}{detail}")
    return 0 if result["status"] == "Success" else 1


def cmd_check(args: argparse.Namespace) -> int:
    # imported here: it loads the function runtime and the deployment agent, which
    # `core provision` (20 gateways at once in the tests) does not need
    from hedgerow.core.check import Level, format_results, run_checks

    config = _load(_config_path(args))
    results = asyncio.run(run_checks(config, wait_s=args.timeout))
    failed = sum(r.level is Level.FAIL for r in results)
    warned = sum(r.level is Level.WARN for r in results)
    if args.json:
        checks = [
            {"name": r.name, "level": r.level.value, "detail": r.detail, "advice": r.advice}
            for r in results
        ]
        print_json({"checks": checks, "failed": failed, "warnings": warned})
        return 1 if failed else 0
    print("\n".join(format_results(results)))
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    """The running core's own report: the heartbeat its metrics listener serves."""
    from hedgerow.core.check import running_status

    config_path = _config_path(args)
    config = _load(config_path)
    beat = asyncio.run(running_status(config, args.timeout))
    if beat is None:
        raise CLIError(
            f"core {config.name} is not running or does not answer on its metrics port"
            f" (status.metrics_port in {config_path}); start it: hedgerow core run"
            f" --config {config_path}"
        )
    show(args, {"core": config.name, **beat})
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    config_path = _config_path(args).resolve()
    config = _load(config_path)
    # `core run` saved its --host/--port/--advertise into this config: the service listens
    # where the user ran the core
    # through the launcher's own copy: it follows the `current` release and rolls back an
    # update that does not commit (core/launcher.py)
    from hedgerow.core import launcher

    core_args = ["core", "run", "--config", str(config_path)]
    command = launcher.command(config.data_dir, sys.executable, core_args)
    text = service.unit_text(command, user=args.user, working_dir=config_path.parent)
    try:
        launcher.install(config.data_dir)
        service.install(text, args.unit_path, systemctl=not args.no_systemctl)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CLIError(f"cannot install {args.unit_path}: {exc} (run as root?)") from exc
    unit = args.unit_path.name
    if args.json:
        print_json({
            "unit": str(args.unit_path),
            "command": command,
            "listens": f"{config.local.host}:{config.local.port}",
            "start": f"sudo systemctl start {unit}",
            "follow": f"journalctl -u {unit} -f",
            "log": str(config.log_dir / "core.log"),
            "check": f"hedgerow core check --config {config_path}",
        })  # fmt: skip
        return 0
    print(f"installed {args.unit_path}: {' '.join(command)}")
    print(
        f"  listens on {config.local.host}:{config.local.port} (local.host, local.port in {config_path})"
    )
    print("  enabled at boot; stop a core you started by hand first, then")
    print(f"  start it:   sudo systemctl start {unit}")
    print(f"  follow it:  journalctl -u {unit} -f   (and {config.log_dir}/core.log)")
    print(f"  check it:   hedgerow core check --config {config_path}")
    return 0


def cmd_opcua_browse(args: argparse.Namespace) -> int:
    """Browse a server with the same settings an ``opcua`` connector takes."""
    from hedgerow.connectors import ConnectorConfigError, ConnectorError, validate
    from hedgerow.connectors.config import OpcUaConfig
    from hedgerow.connectors.opcua import browse

    raw: dict[str, Any] = {
        "url": args.url,
        "security_policy": args.security_policy,
        "certificate": args.certificate,
        "private_key": args.private_key,
        "server_certificate": args.server_certificate,
        "username": args.username,
        "password": args.password or os.environ.get("HEDGEROW_OPCUA_PASSWORD", ""),
        "timeout_s": args.timeout,
        "nodes": [{"name": "root", "node_id": args.node}],
    }
    if args.security_mode:
        raw["security_mode"] = args.security_mode
    try:
        config = validate("opcua", "browse", raw)
        assert isinstance(config, OpcUaConfig)
        entries = asyncio.run(browse(config, root=args.node, depth=args.depth, limit=args.limit))
    except ConnectorConfigError as exc:
        raise CLIError(f"--{exc.field.replace('_', '-')}: {exc.message}") from exc
    except ConnectorError as exc:
        raise CLIError(str(exc)) from exc
    except Exception as exc:  # asyncua's errors: say what failed and where
        raise CLIError(f"browsing {args.url} failed: {type(exc).__name__}: {exc}") from exc
    if args.json:
        print_json([dataclasses.asdict(e) for e in entries])
        return 0
    for e in entries:
        print(f"{'  ' * e.depth}{e.browse_name}  {e.node_class}  {e.node_id}")
    print(f"{len(entries)} nodes")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    try:
        existed = service.uninstall(args.unit_path, systemctl=not args.no_systemctl)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CLIError(f"cannot remove {args.unit_path}: {exc} (run as root?)") from exc
    print(f"removed {args.unit_path}" if existed else f"{args.unit_path} was not installed")
    return 0
