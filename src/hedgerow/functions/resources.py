"""Local resources a function declares: device files, volumes and OS groups (pure).

The Greengrass V1 semantics are kept: a resource has a source path on the gateway, a
destination path inside the function's view (devices: the same path), read-only or
read-write access, and "group owner auto-add" (the function's process gets the Linux group
that owns the source as a supplementary group, so a ``root:dialout 0660`` serial port is
reachable without loosening its mode).

``parse_device("/dev/ttyUSB0:rw")`` and ``parse_volume("/var/data:/data:ro")`` read the CLI
forms; :func:`resource_from_document` / :meth:`LocalResource.to_document` the deployment
document's. :func:`plan_access` decides, from the facts about each source (owner, group,
mode — gathered by the caller), which supplementary groups the function's process gets, or
raises :class:`ResourceUnavailable` saying what to change on the gateway.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from hedgerow.functions.errors import InvalidFunctionSpec, LaunchError

Kind = Literal["device", "volume"]
Access = Literal["ro", "rw"]

KINDS: Final = ("device", "volume")
ACCESSES: Final = ("ro", "rw")
MAX_RESOURCES: Final = 32
MAX_GROUPS: Final = 16
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
#: Destinations a volume may not cover: the function would lose the system it runs on.
FORBIDDEN_DESTINATIONS: Final = ("/", "/proc", "/sys", "/dev", "/usr", "/lib", "/bin", "/etc")


class ResourceUnavailable(LaunchError):
    """A declared resource is missing on the gateway or cannot be granted as declared."""


@dataclass(frozen=True)
class LocalResource:
    """One device file or volume; ``destination`` is where the function sees it."""

    kind: Kind
    source: str
    destination: str
    access: Access = "rw"
    auto_add_group_owner: bool = True

    def __post_init__(self) -> None:
        field = f"{self.kind}s" if self.kind in KINDS else "resources"
        if self.kind not in KINDS:
            raise InvalidFunctionSpec(field, f"kind must be one of {', '.join(KINDS)}")
        for label, path in (("source", self.source), ("destination", self.destination)):
            _check_path(field, label, path)
        if self.access not in ACCESSES:
            raise InvalidFunctionSpec(field, f"{self.source}: access must be ro or rw")
        if not isinstance(self.auto_add_group_owner, bool):
            raise InvalidFunctionSpec(field, "auto_add_group_owner must be true or false")
        if self.kind == "device" and self.destination != self.source:
            raise InvalidFunctionSpec(field, f"{self.source}: a device is seen at its own path")
        if self.kind == "volume" and _normal(self.destination) in FORBIDDEN_DESTINATIONS:
            raise InvalidFunctionSpec(field, f"{self.destination} cannot be a volume destination")

    @property
    def read_only(self) -> bool:
        return self.access == "ro"

    @property
    def needs_mount(self) -> bool:
        """Only a mount namespace can show it: another path, or read-only by the kernel."""
        return self.kind == "volume" and (self.read_only or self.destination != self.source)

    def to_document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "destination": self.destination,
            "access": self.access,
            "auto_add_group_owner": self.auto_add_group_owner,
        }


def _normal(path: str) -> str:
    return path.rstrip("/") or "/"


def _check_path(field: str, label: str, path: object) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidFunctionSpec(field, f"{label} {path!r} must be an absolute path")
    if "\0" in path or ":" in path or len(path) > 4096:
        raise InvalidFunctionSpec(field, f"{label} {path!r}: no ':' or NUL, at most 4096 bytes")
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidFunctionSpec(field, f"{label} {path!r} must not contain '.' or '..'")


def parse_device(text: str) -> LocalResource:
    """``/dev/ttyUSB0`` or ``/dev/ttyUSB0:ro|rw`` (default rw)."""
    source, _, access = text.partition(":")
    return LocalResource("device", source, source, _access("devices", text, access or "rw"))


def parse_volume(text: str) -> LocalResource:
    """``SRC``, ``SRC:ro|rw``, ``SRC:DST`` or ``SRC:DST:ro|rw`` (default: DST=SRC, rw)."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise InvalidFunctionSpec("volumes", f"{text!r}: use SOURCE[:DESTINATION][:ro|rw]")
    access = "rw"
    if parts[-1] in ACCESSES and len(parts) > 1:
        access = parts.pop()
    if len(parts) > 2:
        raise InvalidFunctionSpec("volumes", f"{text!r}: use SOURCE[:DESTINATION][:ro|rw]")
    destination = parts[1] if len(parts) == 2 else parts[0]
    return LocalResource("volume", parts[0], destination, _access("volumes", text, access))


def _access(field: str, text: str, value: str) -> Access:
    if value == "ro":
        return "ro"
    if value == "rw":
        return "rw"
    raise InvalidFunctionSpec(field, f"{text!r}: access must be ro or rw")


def resource_from_document(entry: object) -> LocalResource:
    if not isinstance(entry, Mapping):
        raise InvalidFunctionSpec("resources", "each resource must be an object")
    known = {"kind", "source", "destination", "access", "auto_add_group_owner"}
    kwargs = {key: entry[key] for key in known if key in entry}
    if "source" not in kwargs:
        raise InvalidFunctionSpec("resources", "a resource needs a source")
    kwargs.setdefault("destination", kwargs["source"])
    kwargs.setdefault("kind", "volume")
    return LocalResource(**kwargs)


def check_resources(resources: Sequence[LocalResource], groups: Sequence[str]) -> None:
    if len(resources) > MAX_RESOURCES:
        raise InvalidFunctionSpec("resources", f"at most {MAX_RESOURCES}")
    destinations = [_normal(r.destination) for r in resources]
    for index, destination in enumerate(destinations):
        if destination in destinations[:index]:
            raise InvalidFunctionSpec("resources", f"{destination} is declared twice")
    if len(groups) > MAX_GROUPS:
        raise InvalidFunctionSpec("groups", f"at most {MAX_GROUPS}")
    for group in groups:
        if not isinstance(group, str) or not _GROUP.match(group):
            raise InvalidFunctionSpec("groups", f"bad group name {group!r}")


# -- deciding access (pure: the caller gathers the facts) -----------------------------------


@dataclass(frozen=True)
class SourceFacts:
    """What the gateway says about a resource's source (``None``: it does not exist)."""

    mode: int
    uid: int
    gid: int


def _kind_matches(resource: LocalResource, mode: int) -> bool:
    if resource.kind == "device":
        return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
    return stat.S_ISDIR(mode)


def _bits(resource: LocalResource) -> tuple[int, int, int]:
    """(user, group, other) permission bits the declared access needs."""
    user = stat.S_IRUSR | (0 if resource.read_only else stat.S_IWUSR)
    if resource.kind == "volume":
        user |= stat.S_IXUSR  # a directory is entered
    return user, user >> 3, user >> 6


def missing_reason(resource: LocalResource, facts: SourceFacts | None) -> str | None:
    """Why the resource cannot be used as declared on this gateway (None: it can)."""
    if facts is None:
        return f"{resource.kind} {resource.source} does not exist on this gateway"
    if not _kind_matches(resource, facts.mode):
        wanted = "a character or block device" if resource.kind == "device" else "a directory"
        return f"{resource.source} is not {wanted}"
    return None


def plan_access(
    resources: Sequence[LocalResource],
    facts: Mapping[str, SourceFacts | None],
    *,
    uid: int,
    gid: int,
    group_ids: Mapping[str, int | None],
) -> tuple[int, ...]:
    """The supplementary groups the function's process gets; or ResourceUnavailable.

    ``group_ids`` maps the declared OS group names to their ids (None: no such group).
    A source is granted through its owner (when the function's user owns it), through its
    group (auto-added when ``auto_add_group_owner``), or through "other" bits; a source that
    none of these open as declared is refused with the command that would fix it.
    """
    groups: list[int] = []
    for name, group_id in group_ids.items():
        if group_id is None:
            raise ResourceUnavailable(
                f"OS group {name!r} does not exist on this gateway: create it (groupadd {name})"
            )
        groups.append(group_id)
    for resource in resources:
        source_facts = facts.get(resource.source)
        reason = missing_reason(resource, source_facts)
        if reason is not None:
            raise ResourceUnavailable(reason)
        assert source_facts is not None
        user_bits, group_bits, other_bits = _bits(resource)
        mode = source_facts.mode
        if source_facts.uid == uid and mode & user_bits == user_bits:
            continue
        in_group = source_facts.gid == gid or source_facts.gid in groups
        if in_group and mode & group_bits == group_bits:
            continue
        if mode & other_bits == other_bits:
            continue
        # group owner auto-add; never the root group (it opens much more than the resource)
        auto = resource.auto_add_group_owner and source_facts.gid != 0
        if auto and mode & group_bits == group_bits:
            groups.append(source_facts.gid)
            continue
        wanted = "read" if resource.read_only else "read and write"
        bits = ("r" if resource.read_only else "rw") + ("x" if resource.kind == "volume" else "")
        fix = f"chmod g+{bits} {resource.source}"
        if source_facts.gid == 0:  # the root group is never added: it opens far more
            fix = f"chgrp <a group of its own> {resource.source} && {fix}"
        raise ResourceUnavailable(
            f"{resource.source} (mode {stat.filemode(mode)}, uid {source_facts.uid}, gid "
            f"{source_facts.gid}) does not let the function's user {wanted} it: give a group "
            f"the access ({fix}) and keep auto_add_group_owner, or declare that group"
        )
    return tuple(dict.fromkeys(g for g in groups if g != gid))


# -- migrated Greengrass V1 definitions -------------------------------------------------------


@dataclass(frozen=True)
class MigratedAccess:
    """What a V1 function's resource access policies become here."""

    resources: tuple[LocalResource, ...]
    groups: tuple[str, ...]
    secrets: tuple[str, ...]


def _v1_secret_name(arn: str) -> str:
    """``arn:aws:secretsmanager:r:a:secret:NAME-AbCdEf`` -> ``NAME`` (AWS's 6-char suffix off)."""
    name = arn.split(":secret:", 1)[-1]
    head, dash, tail = name.rpartition("-")
    return head if dash and len(tail) == 6 and tail.isalnum() else name


def from_v1_definition(
    resources: Sequence[Mapping[str, Any]], policies: Sequence[Mapping[str, Any]]
) -> MigratedAccess:
    """A V1 ``ResourceDefinitionVersion``'s ``Resources`` and a function's
    ``Environment.ResourceAccessPolicies`` as local resources, OS groups and secret names.

    ``GroupOwnerSetting``: ``AutoAddGroupOwner`` is kept; a named ``GroupOwner`` becomes an
    OS group. Machine-learning model resources have no counterpart: refused, saying what
    to use instead."""
    by_id = {str(r.get("Id")): r for r in resources if isinstance(r, Mapping)}
    out: list[LocalResource] = []
    groups: list[str] = []
    secrets: list[str] = []
    for policy in policies:
        resource_id = str(policy.get("ResourceId"))
        resource = by_id.get(resource_id)
        if resource is None:
            raise InvalidFunctionSpec(
                "resources", f"V1 policy names unknown resource {resource_id}"
            )
        container = resource.get("ResourceDataContainer") or {}
        access = _access("resources", resource_id, str(policy.get("Permission", "ro")))
        if "SecretsManagerSecretResourceData" in container:
            secrets.append(
                _v1_secret_name(str(container["SecretsManagerSecretResourceData"]["ARN"]))
            )
            continue
        kind: Kind
        if "LocalDeviceResourceData" in container:
            kind, data = "device", container["LocalDeviceResourceData"]
        elif "LocalVolumeResourceData" in container:
            kind, data = "volume", container["LocalVolumeResourceData"]
        else:
            raise InvalidFunctionSpec(
                "resources",
                f"V1 resource {resource_id} ({', '.join(container) or 'empty'}) has no Hedgerow "
                "counterpart: ship a model as a volume (--volume) instead",
            )
        owner = data.get("GroupOwnerSetting") or {}
        auto = bool(owner.get("AutoAddGroupOwner", False))
        if owner.get("GroupOwner") and not auto:
            groups.append(str(owner["GroupOwner"]))
        source = str(data.get("SourcePath"))
        destination = str(data.get("DestinationPath") or source) if kind == "volume" else source
        out.append(LocalResource(kind, source, destination, access, auto))
    return MigratedAccess(tuple(out), tuple(dict.fromkeys(groups)), tuple(dict.fromkeys(secrets)))
