"""Mosquitto's dynamic security kept in step with the registry: what the broker should
hold (one dynsec client and one role per live core, the cloud's own role, deny by
default) and the ``$CONTROL/dynamic-security/v1`` commands that take what it holds there.
Pure: the shell (``hedgerow.cloud.mosquitto_dynsec``) asks the broker and sends these.

A core's dynsec client is its name (user name and client id, as it logs in), its password
the one in its bundle (``BrokerSecret.core_password``); the client's text description keeps
a digest of that password (dynsec never gives a password back), so a re-issued identity
or a new broker secret is seen and the client made again. Its role
(``hedgerow-core-{name}``) allows what ``broker_acl`` allows it: its own
``$hedgerow/cores/{name}/`` leaves and ``routed/`` prefix, its group's routes to and from
``cloud``. Mosquitto 2.0.11 matches a leading wildcard in an ACL against ``$`` topics too,
so for a route that starts with ``#`` or ``+`` a higher priority denies ``$hedgerow/``,
``$CONTROL/`` (where the plugin's commands, passwords included, travel), ``$SYS/`` and
shared subscriptions before the routes are read (dynsec 2.0.11 has no ``%u`` pattern:
every core's own namespace is spelled out in its role); and publishClientReceive is
denied by default,
so a filter a pattern lets through (``a/#`` under a route ``a/+``) delivers only what the
routes cover.

What Mosquitto 2.0.11 does to a connected client (measured): ``deleteClient``,
``disableClient``, ``setClientPassword``, ``modifyClient`` and ``addClientRole`` close
its connection at once; ``addRoleACL``/``removeRoleACL`` do not (they hold from the next
publish or subscribe). The plan therefore edits a role's ACLs in place and touches a
client only when it must go or log in anew. Clients and roles it did not make (the
administrators, anything an operator added) are left alone.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hedgerow.cloud.broker_acl import Routes
from hedgerow.contract.topics import FROM_CORE, core_namespace_filter, core_topic, routed_topic

#: The text name that marks a dynsec client as the cloud's to manage.
CORE_TEXTNAME: Final = "hedgerow core"
CORE_ROLE_PREFIX: Final = "hedgerow-core-"
#: The cloud replicas' role (given to their own dynsec client, an administrator).
CLOUD_ROLE: Final = "hedgerow-cloud"
#: What dynsec applies when no ACL matches: nothing but unsubscribing.
DEFAULT_ACCESS: Final[Mapping[str, bool]] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
#: ACL priorities (higher first): a core's own namespace, then the denials, then routes.
OWN, FENCE, ROUTE = 2, 1, 0
#: ``$`` trees no core reaches but its own namespace.
FENCED: Final = ("$hedgerow/#", "$CONTROL/#", "$SYS/#")

Command = dict[str, Any]


@dataclass(frozen=True, order=True)
class Acl:
    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Acl:
        return cls(
            str(data.get("acltype", "")),
            str(data.get("topic", "")),
            bool(data.get("allow", False)),
            int(data.get("priority", 0)),
        )


@dataclass(frozen=True)
class DesiredCore:
    """A live core as dynsec should know it."""

    name: str
    password: str
    acls: frozenset[Acl]

    @property
    def role(self) -> str:
        return core_role(self.name)

    @property
    def tag(self) -> str:
        return password_tag(self.password)


@dataclass(frozen=True)
class ObservedClient:
    """A dynsec client as ``listClients``/``getClient`` (verbose) describe it."""

    username: str
    textname: str = ""
    textdescription: str = ""
    clientid: str = ""
    roles: tuple[str, ...] = ()
    disabled: bool = False

    @property
    def managed(self) -> bool:
        return self.textname == CORE_TEXTNAME

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObservedClient:
        return cls(
            username=str(data.get("username", "")),
            textname=str(data.get("textname", "")),
            textdescription=str(data.get("textdescription", "")),
            clientid=str(data.get("clientid", "")),
            roles=tuple(str(r.get("rolename", "")) for r in data.get("roles", ())),
            disabled=bool(data.get("disabled", False)),
        )


@dataclass(frozen=True)
class Observed:
    """What the broker holds: clients and roles by name, its default access (None: not
    asked, a one-core sync)."""

    clients: Mapping[str, ObservedClient] = field(default_factory=dict)
    roles: Mapping[str, frozenset[Acl]] = field(default_factory=dict)
    default_access: Mapping[str, bool] | None = None


def core_role(core: str) -> str:
    return CORE_ROLE_PREFIX + core


def password_tag(password: str) -> str:
    """What the client's text description keeps of its password (not the password)."""
    return "password-sha256:" + hashlib.sha256(password.encode()).hexdigest()[:24]


def core_acls(core: str, routes: Routes) -> frozenset[Acl]:
    """The ACLs that give ``core`` what ``broker_acl.topic_allowed`` gives it."""
    own = core_namespace_filter(core)
    acls = {
        *(Acl("publishClientSend", core_topic(core, leaf), True, OWN) for leaf in FROM_CORE),
        Acl("publishClientSend", routed_topic(core, "#"), True, OWN),
        Acl("subscribePattern", own, True, OWN),
        Acl("publishClientReceive", own, True, OWN),
    }
    if any(f.startswith(("#", "+")) for f in (*routes.to_cloud, *routes.from_cloud)):
        # only then: Mosquitto 2.0.11 saves its whole file at every command, so a role
        # costs what its ACLs weigh (8 for a core whose routes start with a level)
        acls.add(Acl("subscribePattern", "$share/#", False, FENCE))
        for fenced in FENCED:
            for acltype in ("publishClientSend", "subscribePattern", "publishClientReceive"):
                acls.add(Acl(acltype, fenced, False, FENCE))
    acls.update(Acl("publishClientSend", f, True, ROUTE) for f in routes.to_cloud)
    for f in routes.from_cloud:
        acls.add(Acl("subscribePattern", f, True, ROUTE))
        acls.add(Acl("publishClientReceive", f, True, ROUTE))
    return frozenset(acls)


def cloud_acls() -> frozenset[Acl]:
    """The replicas publish and subscribe anywhere (``#`` and the ``$hedgerow`` tree:
    dynsec needs no more, a shared subscription included)."""
    acls = set()
    for topic in ("#", "$hedgerow/#", "$share/#"):
        for acltype in ("publishClientSend", "subscribePattern", "publishClientReceive"):
            if acltype == "publishClientSend" and topic == "$share/#":
                continue
            acls.add(Acl(acltype, topic, True, 0))
    return frozenset(acls)


def desired_core(core: str, password: str, routes: Routes) -> DesiredCore:
    return DesiredCore(core, password, core_acls(core, routes))


# ---- the plan ---------------------------------------------------------------------------


def plan_role(name: str, want: frozenset[Acl], have: frozenset[Acl] | None) -> list[Command]:
    """Create the role, or edit its ACLs in place (no client is disconnected)."""
    if have is None:
        return [
            {
                "command": "createRole",
                "rolename": name,
                "acls": [a.to_json() for a in sorted(want)],
            }
        ]
    commands: list[Command] = [
        {"command": "removeRoleACL", "rolename": name, "acltype": a.acltype, "topic": a.topic}
        for a in sorted(have - want)
    ]
    # an ACL whose allow or priority changed was removed above (keyed by type and topic)
    commands += [
        {"command": "addRoleACL", "rolename": name, **a.to_json()} for a in sorted(want - have)
    ]
    return commands


def plan_core(want: DesiredCore | None, have: ObservedClient | None) -> list[Command]:
    """One core's client: made, made again (a new password), or deleted (which closes
    its connection and refuses its next login)."""
    if want is None:
        if have is None or not have.managed:
            return []
        return [{"command": "deleteClient", "username": have.username}]
    create = {
        "command": "createClient",
        "username": want.name,
        "password": want.password,
        "clientid": want.name,
        "textname": CORE_TEXTNAME,
        "textdescription": want.tag,
        "roles": [{"rolename": want.role}],
    }
    if have is None:
        return [create]
    if not have.managed:  # a client of that name someone else made: not ours to replace
        return []
    if (
        have.textdescription != want.tag
        or have.clientid != want.name
        or have.roles != (want.role,)
        or have.disabled
    ):
        return [{"command": "deleteClient", "username": want.name}, create]
    return []


def plan(
    desired: Mapping[str, DesiredCore],
    observed: Observed,
    *,
    cloud_user: str,
    scope: Iterable[str] | None = None,
) -> list[Command]:
    """The commands that take ``observed`` to ``desired``: the whole broker (``scope``
    None: also the default access, the cloud's role, and every managed client no live
    core stands for), or only the cores named in ``scope``. Roles before the clients
    that name them; a deleted core's role after its client."""
    commands: list[Command] = []
    whole = scope is None
    if whole and observed.default_access is not None:
        wrong = [
            {"acltype": k, "allow": v}
            for k, v in DEFAULT_ACCESS.items()
            if observed.default_access.get(k) != v
        ]
        if wrong:
            commands.append({"command": "setDefaultACLAccess", "acls": wrong})
    if whole:
        commands += plan_role(CLOUD_ROLE, cloud_acls(), observed.roles.get(CLOUD_ROLE))
    names: Sequence[str]
    if whole:
        managed = {n for n, c in observed.clients.items() if c.managed}
        roles = {
            r[len(CORE_ROLE_PREFIX) :] for r in observed.roles if r.startswith(CORE_ROLE_PREFIX)
        }
        names = sorted(set(desired) | managed | roles)
    else:
        names = sorted(set(scope or ()))
    gone: list[Command] = []
    for name in names:
        want = desired.get(name)
        have_client = observed.clients.get(name)
        role = core_role(name)
        if want is not None:
            if have_client is not None and not have_client.managed:
                continue  # someone else's client of that name
            commands += plan_role(role, want.acls, observed.roles.get(role))
            commands += plan_core(want, have_client)
            continue
        commands += plan_core(None, have_client)
        if role in observed.roles:
            gone.append({"command": "deleteRole", "rolename": role})
    commands += gone
    if whole:
        cloud = observed.clients.get(cloud_user)
        if cloud is not None and CLOUD_ROLE not in cloud.roles:
            # last: Mosquitto closes the cloud's own connections when its roles change
            commands.append(
                {"command": "addClientRole", "username": cloud_user, "rolename": CLOUD_ROLE}
            )
    return commands


def observed_from(
    clients: Iterable[Mapping[str, Any]],
    roles: Iterable[Mapping[str, Any]],
    default_access: Iterable[Mapping[str, Any]] | None = None,
) -> Observed:
    """``Observed`` from the data of ``listClients``/``getClient``, ``listRoles``/
    ``getRole`` (verbose) and ``getDefaultACLAccess`` answers."""
    return Observed(
        {c.username: c for c in map(ObservedClient.from_json, clients)},
        {
            str(r.get("rolename", "")): frozenset(Acl.from_json(a) for a in r.get("acls", ()))
            for r in roles
        },
        None
        if default_access is None
        else {str(a.get("acltype", "")): bool(a.get("allow", False)) for a in default_access},
    )


# ---- the broker's first dynsec file ---------------------------------------------------

#: Mosquitto 2.0's password hashing for dynsec clients (PBKDF2-HMAC-SHA512).
PBKDF2_ITERATIONS: Final = 101
#: The administrator's role ``mosquitto_ctrl dynsec init`` makes (the plugin's commands
#: and ``$SYS``): the cloud adds its own role at its first connect.
ADMIN_ACLS: Final = (
    ("publishClientSend", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$CONTROL/dynamic-security/#"),
    ("subscribePattern", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$SYS/#"),
    ("subscribePattern", "$SYS/#"),
)


def initial_config(admin: str, password: str, salt: bytes) -> dict[str, Any]:
    """A dynsec file with ``admin`` as its only client, an administrator (what
    ``mosquitto_ctrl dynsec init FILE ADMIN PASSWORD`` writes, with the cloud's
    password; ``salt``: 12 random bytes)."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return {
        "clients": [
            {
                "username": admin,
                "textName": "hedgerow cloud replicas",
                "password": base64.b64encode(digest).decode(),
                "salt": base64.b64encode(salt).decode(),
                "iterations": PBKDF2_ITERATIONS,
                "roles": [{"rolename": "admin"}],
            }
        ],
        "roles": [
            {
                "rolename": "admin",
                "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in ADMIN_ACLS],
            }
        ],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
