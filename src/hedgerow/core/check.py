"""``hedgerow core check``: dependencies and health, each item ok / warn / fail with advice.

Each check is a pure function of what was observed (``check_python(version)``,
``check_disk(free)``, …); ``run_checks(config)`` observes the machine and the cloud and
calls them. Modelled on Greengrass's ``check_ggc_dependencies``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import enum
import grp
import json
import os
import pwd
import resource
import shutil
import socket
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hedgerow import certinfo, tlscontext
from hedgerow.functions.errors import InvalidFunctionSpec
from hedgerow.functions.host import source_facts
from hedgerow.functions.resources import missing_reason
from hedgerow.functions.spec import FunctionSpec

from . import keytool
from .config import CORE_CERT, CORE_KEY, DEPLOY_VERIFY, ROOT_CA, CoreConfig, Endpoint
from .deployment import DeploymentStore
from .https import HTTPSError, request

MIN_PYTHON = (3, 11)
DISK_WARN = 200 * 1024 * 1024
DISK_FAIL = 20 * 1024 * 1024
CERT_WARN = dt.timedelta(days=14)
#: ...or, for a short-lived certificate (the server's lives about 8 days and is renewed
#: with 30 % left), less than this share of its lifetime: renewal is overdue
CERT_WARN_FRACTION = 0.2
CLOCK_WARN = dt.timedelta(seconds=30)
CLOCK_FAIL = dt.timedelta(minutes=5)
NOFILE_WARN = 4096


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    level: Level
    detail: str
    advice: str = ""


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Level.OK, detail)


def check_python(version: Sequence[int]) -> CheckResult:
    text = ".".join(str(v) for v in version[:3])
    if tuple(version[:2]) >= MIN_PYTHON:
        return ok("python", f"Python {text}")
    return CheckResult("python", Level.FAIL, f"Python {text}", "install Python 3.11 or newer")


def check_port(host: str, port: int, free: bool, core_running: bool = False) -> CheckResult:
    name = f"port {host}:{port}"
    if free:
        return ok(name, "free")
    if core_running:
        return ok(name, "served by the running core")
    return CheckResult(name, Level.FAIL, "in use", "stop what listens there or set local.port")


def check_disk(path: Path, free: int) -> CheckResult:
    detail = f"{free // (1024 * 1024)} MiB free at {path}"
    if free < DISK_FAIL:
        return CheckResult(
            "disk", Level.FAIL, detail, "free disk space: the spool and deployments need it"
        )
    if free < DISK_WARN:
        return CheckResult("disk", Level.WARN, detail, "free disk space soon")
    return ok("disk", detail)


def check_clock(local: dt.datetime, cloud: dt.datetime | None) -> CheckResult:
    if cloud is None:
        return CheckResult(
            "clock", Level.WARN, "cloud time unknown", "check that the cloud is reachable"
        )
    skew = abs(local - cloud)
    detail = f"{skew.total_seconds():.0f} s from the cloud's clock"
    if skew > CLOCK_FAIL:
        return CheckResult("clock", Level.FAIL, detail, "synchronise the clock (NTP): TLS needs it")
    if skew > CLOCK_WARN:
        return CheckResult("clock", Level.WARN, detail, "enable NTP (systemd-timesyncd or chrony)")
    return ok("clock", detail)


def check_certificate(
    label: str,
    cert: certinfo.CertInfo | None,
    now: dt.datetime,
    renew_advice: str = "issue a new one in the cloud and re-provision",
) -> CheckResult:
    """Expiry measured against the certificate's own lifetime: a warning when less than
    ``CERT_WARN`` and less than ``CERT_WARN_FRACTION`` of it is left."""
    name = f"certificate {label}"
    if cert is None:
        return CheckResult(
            name, Level.FAIL, "missing or unreadable", "re-provision from the bundle"
        )
    left = cert.expires_in(now)
    if cert.not_before > now:
        return CheckResult(name, Level.FAIL, "not yet valid", "check the clock")
    if left <= dt.timedelta(0):
        return CheckResult(name, Level.FAIL, "expired", renew_advice)
    lifetime = cert.not_after - cert.not_before
    if left < min(CERT_WARN, lifetime * CERT_WARN_FRACTION):
        return CheckResult(
            name, Level.WARN, f"expires in {_duration(left)} of {_duration(lifetime)}", renew_advice
        )
    return ok(name, f"valid for {_duration(left)} of {_duration(lifetime)}")


def _duration(span: dt.timedelta) -> str:
    if span >= dt.timedelta(days=2):
        return f"{span.days} days"
    return f"{span.total_seconds() / 3600:.0f} hours"


def check_reachable(label: str, endpoint: Endpoint, error: str | None) -> CheckResult:
    name = f"cloud {label} {endpoint.host}:{endpoint.port}"
    if error is None:
        return ok(name, "reachable")
    return CheckResult(name, Level.FAIL, error, "check the network, firewall and cloud address")


def check_cgroups(controllers: str | None) -> CheckResult:
    if controllers is None:
        return CheckResult(
            "cgroup v2",
            Level.WARN,
            "not mounted",
            "functions run without memory limits; enable cgroup v2",
        )
    have = set(controllers.split())
    missing = {"memory", "cpu"} - have
    if missing:
        return CheckResult("cgroup v2", Level.WARN, f"missing controllers {sorted(missing)}",
                           "enable them (cgroup_enable=memory on a Pi)")  # fmt: skip
    return ok("cgroup v2", "memory and cpu controllers")


def check_rlimit(nofile: int) -> CheckResult:
    if nofile < NOFILE_WARN:
        return CheckResult(
            "rlimit nofile", Level.WARN, str(nofile), "raise LimitNOFILE (the unit sets 65536)"
        )
    return ok("rlimit nofile", str(nofile))


def check_run_as(user: str | None, group: str | None, exists: tuple[bool, bool]) -> CheckResult:
    if user is None and group is None:
        return ok("function user", "functions run as the core's user")
    if not exists[0] and user is not None:
        return CheckResult(
            "function user", Level.FAIL, f"no user {user!r}", f"create it: useradd -r {user}"
        )
    if not exists[1] and group is not None:
        return CheckResult(
            "function user", Level.FAIL, f"no group {group!r}", f"create it: groupadd -r {group}"
        )
    if os.geteuid() != 0:
        return CheckResult("function user", Level.WARN, "the core is not root",
                           "run the core as root to switch functions to that user")  # fmt: skip
    return ok("function user", f"{user}:{group}")


# ---- observation ---------------------------------------------------------------------


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _read_cert(path: Path) -> certinfo.CertInfo | None:
    try:
        return certinfo.from_pem(path.read_bytes())
    except (OSError, certinfo.CertInfoError):
        return None


async def _connect(endpoint: Endpoint, wait_s: float) -> str | None:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), wait_s
        )
    except (OSError, TimeoutError) as exc:
        return f"unreachable: {exc}"
    writer.close()
    return None


async def _cloud_time(config: CoreConfig, wait_s: float) -> dt.datetime | None:
    from .cloudapi import HttpCloudAPI
    from .errors import CloudAPIError

    try:
        ctx = tlscontext.client_context(
            str(config.file(ROOT_CA)), str(config.file(CORE_CERT)), str(config.file(CORE_KEY))
        )
    except (OSError, ssl.SSLError):
        return None
    api = HttpCloudAPI(config.cloud.https, ctx, timeout=wait_s)
    try:
        date = await api.server_date()
    except CloudAPIError:
        return None
    finally:
        await api.aclose()
    return email.utils.parsedate_to_datetime(date) if date else None


async def _core_running(config: CoreConfig, wait_s: float) -> bool:
    """Whether this core answers on its metrics port (then its own port is rightly taken)."""
    return await running_status(config, wait_s) is not None


async def running_status(config: CoreConfig, wait_s: float) -> dict[str, Any] | None:
    """The running core's heartbeat as its metrics listener's ``/health`` gives it (the
    contract's ``Heartbeat`` JSON); None when this core is not running or not answering."""
    endpoint = config.metrics_endpoint()  # "auto": what the running core wrote
    if endpoint is None:
        return None
    host, port = endpoint
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    base = f"http://{host}:{port}"
    try:
        response = await request(base, "GET", "/health", timeout=wait_s)
    except HTTPSError:
        return None
    if response.status != 200:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) and "uptime" in body else None


def _cgroup_controllers(path: Path = Path("/sys/fs/cgroup/cgroup.controllers")) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


# RFC 8032, section 7.1, test 1: the empty message signed by this key
_RFC8032_KEY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def check_keytool(error: str | None) -> CheckResult:
    if error is None:
        return ok("key tool", "makes keys and checks deployment signatures")
    return CheckResult(
        "key tool",
        Level.FAIL,
        error,
        "the core cannot check deployments or renew its certificate: reinstall hedgerow "
        "with its dependencies (pip install --force-reinstall hedgerow)",
    )


async def _keytool_error(wait_s: float) -> str | None:
    """Why the key tool child cannot check a known-good signature (None when it can)."""
    try:
        valid = await keytool.verify_signature(
            _RFC8032_KEY, b"", _RFC8032_SIGNATURE, timeout=max(wait_s, 10.0)
        )
    except keytool.KeytoolError as exc:
        return str(exc)
    return None if valid else "a known-good signature did not verify"


def check_local_resources(declared: int, problems: Sequence[str]) -> CheckResult:
    """Devices, volumes and OS groups the deployed functions declare, against this gateway."""
    if problems:
        return CheckResult(
            "local resources",
            Level.FAIL,
            "; ".join(problems),
            "create or plug in what is missing (or fix the function's declaration): the "
            "functions that declare them cannot start",
        )
    if declared == 0:
        return ok("local resources", "the deployed functions declare none")
    return ok("local resources", f"all {declared} declared by the deployed functions are present")


def resource_problems(functions: Sequence[Mapping[str, Any]]) -> tuple[int, list[str]]:
    """(how many resources and groups are declared, what is missing or wrong on the gateway)."""
    declared, problems = 0, []
    for entry in functions:
        try:
            spec = FunctionSpec.from_document(entry)
        except InvalidFunctionSpec as exc:
            problems.append(f"function {entry.get('name')!r}: {exc}")
            continue
        declared += len(spec.resources) + len(spec.groups)
        for declared_resource in spec.resources:
            reason = missing_reason(declared_resource, source_facts(declared_resource.source))
            if reason is not None:
                problems.append(f"function {spec.name!r}: {reason}")
        for group in spec.groups:
            if not _exists("group", group):
                problems.append(f"function {spec.name!r}: OS group {group!r} does not exist")
    return declared, problems


def _deployed_functions(config: CoreConfig) -> list[Mapping[str, Any]]:
    """The function entries of the deployment this core runs (none when never deployed)."""
    store = DeploymentStore(config.data_dir / "deployments")
    current = store.pointer("current")
    doc = store.load(current) if current else None
    return list(doc.functions) if doc is not None else []


def _exists(kind: str, name: str | None) -> bool:
    if name is None:
        return True
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


def format_results(results: Sequence[CheckResult]) -> list[str]:
    """One line per check (level, name, detail, advice when not ok), then the totals."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        line = f"{r.level.value:4}  {r.name:{width}}  {r.detail}"
        if r.advice and r.level is not Level.OK:
            line += f"  -> {r.advice}"
        lines.append(line)
    failed = sum(r.level is Level.FAIL for r in results)
    warned = sum(r.level is Level.WARN for r in results)
    lines.append(f"{len(results)} checks: {failed} failed, {warned} warnings")
    return lines


async def run_checks(
    config: CoreConfig, *, wait_s: float = 5.0, check_local_port: bool = True
) -> list[CheckResult]:
    now = certinfo.now()
    results = [check_python(tuple(sys.version_info[:3]))]
    if check_local_port:
        free = _port_free(config.local.host, config.local.port)
        running = not free and await _core_running(config, wait_s)
        results.append(check_port(config.local.host, config.local.port, free, running))
    disk_path = config.data_dir if config.data_dir.exists() else Path("/")
    results.append(check_disk(disk_path, shutil.disk_usage(disk_path).free))
    for label, file in (("core", CORE_CERT), ("root CA", ROOT_CA)):
        results.append(check_certificate(label, _read_cert(config.file(file)), now))
    if not config.file(DEPLOY_VERIFY).exists():
        results.append(
            CheckResult("deploy-verify key", Level.FAIL, "missing", "re-provision from the bundle")
        )
    server = config.data_dir / "server" / "server.cert.pem"
    if server.exists():
        results.append(
            check_certificate(
                "server",
                _read_cert(server),
                now,
                "the core renews it itself with 30 % of its lifetime left: is the core running"
                " and the cloud reachable? (see logs/core.log)",
            )
        )
    https_error, mqtt_error = await asyncio.gather(
        _connect(config.cloud.https_endpoint, wait_s), _connect(config.cloud.mqtt, wait_s)
    )
    results.append(check_reachable("https", config.cloud.https_endpoint, https_error))
    results.append(check_reachable("mqtt", config.cloud.mqtt, mqtt_error))
    cloud_now = await _cloud_time(config, wait_s) if https_error is None else None
    results.append(check_clock(certinfo.now(), cloud_now))
    results.append(check_keytool(await _keytool_error(wait_s)))
    results.append(check_cgroups(_cgroup_controllers()))
    results.append(check_rlimit(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    user, group = config.functions.run_as_user, config.functions.run_as_group
    results.append(check_run_as(user, group, (_exists("user", user), _exists("group", group))))
    results.append(check_local_resources(*resource_problems(_deployed_functions(config))))
    return results
