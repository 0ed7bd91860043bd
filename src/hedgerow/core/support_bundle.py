"""A support bundle: what an operator needs to see of a core, and none of its secrets.

``collect`` gathers it from a running core (versions, ``config.toml`` without secrets,
``core check``, the core's state, the newest log lines, the last deployments);
``build`` writes it as a gzip'd tar (``hedgerow.contract.support.MEMBERS``) of at most
``MAX_BUNDLE_BYTES``, cutting the logs shorter until it fits.

What never goes in: keys (the core's, the server's: files are not copied, and any PEM
private key block in a log is cut out), secret values (a deployment's sealed secrets are
dropped; config keys and function environment variables whose names say password,
secret, token, credential or key are replaced by ``<redacted>``; ``name=value`` and
``name: value`` pairs with such names and ``Bearer`` tokens in logs are redacted).
``redact`` and ``scrub`` are pure; the manifest counts what they removed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import platform
import re
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hedgerow import __version__
from hedgerow.contract.support import MAX_BUNDLE_BYTES

REDACTED: Final = "<redacted>"
#: newest bytes of each log file (halved until the bundle fits)
LOG_TAIL_BYTES: Final = 96 * 1024
MAX_LOG_FILES: Final = 24
#: the newest deployment documents kept on the core's disk that go in
MAX_DEPLOYMENTS: Final = 5

_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|private|(^|[_-])key$|api[_-]?key", re.I
)
_PEM_PRIVATE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)
#: ``name=value`` / ``name: value`` in logs whose name says secret (a log's ``secret=NAME``
#: names a secret, it is not one, and a logger's dotted name is not a key)
_PAIR = re.compile(
    r"(?i)(?<![.\w])([\w-]*(?:password|passwd|token|credential|api[_-]?key|authorization"
    r"|[_-]secret|secret[_-]?value)[\w-]*)"
    r"([\"']?\s*[:=]\s*[\"']?)(?!bearer\b)([^\s\"',;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def secret_name(name: str) -> bool:
    """Whether a key's name says its value is secret."""
    return bool(_SECRET_NAME.search(name))


def redact(value: Any) -> tuple[Any, int]:
    """``value`` with every scalar whose key names a secret replaced (recursively: a
    ``secrets`` list keeps its entries' other fields); and how many were."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        count = 0
        for key, item in value.items():
            if (
                secret_name(str(key))
                and not isinstance(item, Mapping | list)
                and item not in (None, "")
            ):
                out[str(key)] = REDACTED
                count += 1
            else:
                out[str(key)], n = redact(item)
                count += n
        return out, count
    if isinstance(value, list):
        items = [redact(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


def scrub(text: str) -> tuple[str, int]:
    """``text`` (a log) with private key blocks, secret-named pairs and bearer tokens cut."""
    count = 0

    def cut(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        if match.re is _PAIR:
            return f"{match.group(1)}{match.group(2)}{REDACTED}"
        if match.re is _BEARER:
            return f"{match.group(1)} {REDACTED}"
        return f"-----{REDACTED} PRIVATE KEY-----"

    for pattern in (_PEM_PRIVATE, _BEARER, _PAIR):
        text = pattern.sub(cut, text)
    return text, count


def deployment_for_bundle(document: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A deployment document without its sealed secrets (names and versions stay) and with
    secret-named values redacted."""
    doc = dict(document)
    dropped = 0
    if doc.get("secrets"):
        doc["secrets"] = [
            {k: v for k, v in dict(entry).items() if k != "sealed"} for entry in doc["secrets"]
        ]
        dropped = len(doc["secrets"])
    clean, count = redact(doc)
    return clean, count + dropped


@dataclass
class BundleInputs:
    core: str
    group: str
    config: Mapping[str, Any]
    check: str
    status: Mapping[str, Any]
    #: (archive name under logs/, the file's newest text)
    logs: Sequence[tuple[str, str]] = ()
    #: (archive name under deployments/, the JSON value)
    deployments: Sequence[tuple[str, Mapping[str, Any]]] = ()
    made_at: float = field(default_factory=time.time)


def versions(core: str, group: str) -> dict[str, str]:
    return {
        "hedgerow": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "core": core,
        "group": group,
    }


def build(inputs: BundleInputs, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    """The bundle as a gzip'd tar; logs are cut to their newest half until it fits in
    ``limit`` (``ValueError`` if even without logs it would not)."""
    tail = LOG_TAIL_BYTES
    while True:
        data = _archive(inputs, tail)
        if len(data) <= limit:
            return data
        if tail == 0:
            raise ValueError(f"a support bundle without logs is {len(data)} bytes (> {limit})")
        tail = tail // 2 if tail > 1024 else 0


def _archive(inputs: BundleInputs, tail: int) -> bytes:
    redactions: dict[str, int] = {}
    files: list[tuple[str, bytes]] = []

    def add_json(name: str, value: Any) -> None:
        files.append((name, json.dumps(value, indent=2, sort_keys=True).encode()))

    add_json("versions.json", versions(inputs.core, inputs.group))
    config, redactions["config.json"] = redact(inputs.config)
    add_json("config.json", config)
    check, redactions["check.txt"] = scrub(inputs.check)
    files.append(("check.txt", check.encode()))
    status, redactions["status.json"] = redact(inputs.status)
    add_json("status.json", status)
    for name, text in inputs.logs:
        cut = text[-tail:] if tail else ""
        if len(cut) < len(text):
            cut = cut.partition("\n")[2]  # from the first whole line
        clean, n = scrub(cut)
        redactions[f"logs/{name}"] = n
        files.append((f"logs/{name}", clean.encode()))
    for name, value in inputs.deployments:
        clean_doc, n = deployment_for_bundle(value)
        redactions[f"deployments/{name}"] = n
        add_json(f"deployments/{name}", clean_doc)
    made = dt.datetime.fromtimestamp(inputs.made_at, dt.UTC).isoformat()
    manifest = {
        "core": inputs.core,
        "made_at": made,
        "files": [name for name, _ in files],
        "redacted": {k: v for k, v in redactions.items() if v},
        "log_tail_bytes": tail,
    }
    files.insert(0, ("manifest.json", json.dumps(manifest, indent=2).encode()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(f"{inputs.core}-support/{name}")
            info.size = len(data)
            info.mtime = int(inputs.made_at)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def newest_logs(directories: Mapping[str, Path]) -> list[tuple[str, str]]:
    """The newest ``MAX_LOG_FILES`` ``*.log`` files (current ones, not rotated backups) of
    ``{prefix: directory}``, each named ``prefix/file`` with its last ``LOG_TAIL_BYTES``."""
    found: list[tuple[float, str, Path]] = []
    for prefix, directory in directories.items():
        try:
            for path in directory.glob("*.log"):
                found.append((path.stat().st_mtime, f"{prefix}/{path.name}", path))
        except OSError:
            continue
    found.sort(reverse=True)
    out = []
    for _, name, path in found[:MAX_LOG_FILES]:
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                out.append((name, f.read().decode("utf-8", "replace")))
        except OSError:
            continue
    return out


def stored_deployments(directory: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """The newest deployment documents on the core's disk, and ``index.json`` (which is
    current, which previous)."""
    docs: list[tuple[float, Path]] = []
    try:
        docs = sorted(((p.stat().st_mtime, p) for p in directory.glob("*.json")), reverse=True)
    except OSError:
        return []
    out: list[tuple[str, Mapping[str, Any]]] = []
    index: dict[str, Any] = {}
    for pointer in ("current", "previous"):
        try:
            index[pointer] = (directory / pointer).read_text().strip() or None
        except OSError:
            index[pointer] = None
    out.append(("index.json", index))
    for _, path in docs[:MAX_DEPLOYMENTS]:
        try:
            value = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            out.append((path.name, value))
    return out
