"""Mosquitto ACL files (``acl_file``): parsing, matching, and an authorizer.

The format, as mosquitto.conf(5) describes it::

    # lines before the first `user` line apply to anonymous clients
    topic read $SYS/#

    user alice
    topic readwrite sensors/#      # access defaults to readwrite
    topic deny sensors/secret/#    # deny wins over any grant

    pattern write devices/%c/up    # every client: %c = client id, %u = username

Rules: ``deny`` rules are checked first; then access is granted when a rule with that
access matches. Nothing matching means denied. A rule whose topic starts with a wildcard
never matches a ``$`` topic. A ``pattern`` with ``%u`` does not apply to anonymous
clients, and none applies when the substituted name contains ``+`` or ``#``.

A SUBSCRIBE filter is granted when a ``read``/``readwrite`` rule covers it wholly (the
filter is as narrow as the rule or narrower) and no ``deny`` rule covers it; every message
is then checked for ``read`` when it is delivered (so ``topic read #`` with ``topic deny
secret/#`` lets ``#`` be subscribed but delivers nothing under ``secret/``, as mosquitto).
Shared subscriptions (``$share/group/filter``) are checked on their inner filter.

Parsing and matching are pure; only :func:`load_acl_file` reads the disk.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from hedgerow.broker.auth import Action, Identity
from hedgerow.broker.errors import BrokerFileError
from hedgerow.broker.passwordfile import ANONYMOUS_KIND
from hedgerow.mqtt.errors import ProtocolError
from hedgerow.mqtt.topics import filter_covers, matches, parse_shared, validate_topic_filter

log = logging.getLogger(__name__)

#: Rule lists compiled per (username, client id) kept at most (least recently used go).
RULE_CACHE_SIZE = 4096


class Access(enum.Flag):
    DENY = 0
    READ = 1
    WRITE = 2
    READWRITE = 3


_ACCESS_WORDS = {
    "read": Access.READ,
    "write": Access.WRITE,
    "readwrite": Access.READWRITE,
    "deny": Access.DENY,
}


@dataclass(frozen=True, slots=True)
class AclRule:
    access: Access
    topic: str
    line: int


@dataclass(frozen=True, slots=True)
class AclRules:
    """Everything one ACL file says."""

    source: str
    anonymous: tuple[AclRule, ...]
    users: Mapping[str, tuple[AclRule, ...]]
    patterns: tuple[AclRule, ...]

    def rules_for(self, username: str | None, client_id: str) -> CompiledRules:
        """The rules that apply to one client, patterns substituted."""
        own = self.anonymous if username is None else self.users.get(username, ())
        substituted: list[AclRule] = []
        for rule in self.patterns:
            topic = _substitute(rule.topic, username, client_id)
            if topic is not None:
                substituted.append(AclRule(rule.access, topic, rule.line))
        every = (*own, *substituted)
        return CompiledRules(
            deny=tuple(r.topic for r in every if r.access is Access.DENY),
            read=tuple(r.topic for r in every if Access.READ in r.access),
            write=tuple(r.topic for r in every if Access.WRITE in r.access),
        )


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """One client's rules as topic filters by access."""

    deny: tuple[str, ...]
    read: tuple[str, ...]
    write: tuple[str, ...]

    def may_publish(self, topic: str) -> bool:
        return _allowed(self.deny, self.write, topic)

    def may_read(self, topic: str) -> bool:
        return _allowed(self.deny, self.read, topic)

    def may_subscribe(self, topic_filter: str) -> bool:
        try:
            _, inner = parse_shared(topic_filter)
        except ProtocolError:
            return False
        if any(filter_covers(rule, inner) for rule in self.deny):
            return False
        return any(filter_covers(rule, inner) for rule in self.read)


def _allowed(deny: tuple[str, ...], grant: tuple[str, ...], topic: str) -> bool:
    for rule in deny:
        if matches(rule, topic):
            return False
    for rule in grant:
        if matches(rule, topic):
            return True
    return False


def _substitute(topic: str, username: str | None, client_id: str) -> str | None:
    if "%u" in topic:
        if username is None or "+" in username or "#" in username:
            return None
        topic = topic.replace("%u", username)
    if "%c" in topic:
        if "+" in client_id or "#" in client_id:
            return None
        topic = topic.replace("%c", client_id)
    return topic


def _rule(words: list[str], source: str, number: int) -> AclRule:
    """``topic|pattern [access] TOPIC`` (the topic may contain spaces after an access)."""
    kind = words[0]
    rest = words[1:]
    if not rest:
        raise BrokerFileError(source, number, f"`{kind}` needs a topic: `{kind} [access] TOPIC`")
    access = Access.READWRITE
    if rest[0] in _ACCESS_WORDS and len(rest) > 1:
        access = _ACCESS_WORDS[rest[0]]
        rest = rest[1:]
    topic = " ".join(rest)
    try:
        validate_topic_filter(topic.replace("%u", "u").replace("%c", "c"))
    except ProtocolError as exc:
        raise BrokerFileError(source, number, f"bad topic {topic!r}: {exc}") from exc
    if kind == "topic" and ("%u" in topic or "%c" in topic):
        raise BrokerFileError(
            source, number, f"%u/%c only work in `pattern` lines, not `topic`: {topic!r}"
        )
    return AclRule(access, topic, number)


def parse_acl(text: str, source: str = "<acl file>") -> AclRules:
    """Parse an ACL file's text; :class:`BrokerFileError` names the line at fault."""
    anonymous: list[AclRule] = []
    users: dict[str, list[AclRule]] = {}
    patterns: list[AclRule] = []
    current: list[AclRule] = anonymous
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        keyword = words[0]
        if keyword == "user":
            if len(words) < 2:
                raise BrokerFileError(source, number, "`user` needs a username")
            current = users.setdefault(line[len("user") :].strip(), [])
        elif keyword == "topic":
            current.append(_rule(words, source, number))
        elif keyword == "pattern":
            rule = _rule(words, source, number)
            patterns.append(rule)
        else:
            raise BrokerFileError(
                source,
                number,
                f"unknown keyword {keyword!r}: expected `user`, `topic` or `pattern`",
            )
    return AclRules(
        source,
        tuple(anonymous),
        MappingProxyType({name: tuple(rules) for name, rules in users.items()}),
        tuple(patterns),
    )


def load_acl_file(path: str | Path) -> AclRules:
    """Read and parse an ACL file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerFileError(str(path), None, f"cannot read the ACL file: {exc}") from exc
    return parse_acl(text, str(path))


def identity_names(identity: Identity) -> tuple[str | None, str]:
    """(username or None when anonymous, client id) of an identity, for ACL lookups."""
    attributes = identity.attributes
    client_id = attributes.get("client_id", identity.name)
    if identity.kind == ANONYMOUS_KIND:
        return None, client_id
    return attributes.get("username", identity.name), client_id


class AclFileAuthorizer:
    """The broker's :class:`~hedgerow.broker.auth.Authorizer` from an ACL file.

    PUBLISH needs ``write``; SUBSCRIBE needs a covering ``read`` rule; each delivery to a
    client needs ``read`` on the message's topic (``may_read``, see ``ReadAuthorizer``),
    retained messages, wills and in-process publishes included.
    """

    def __init__(self, rules: AclRules) -> None:
        self.rules = rules
        self._compiled: OrderedDict[tuple[str | None, str], CompiledRules] = OrderedDict()

    def reload(self, rules: AclRules) -> None:
        self.rules = rules
        self._compiled.clear()
        log.info("acl_file_reloaded source=%s users=%d", rules.source, len(rules.users))

    def _for(self, identity: Identity) -> CompiledRules:
        key = identity_names(identity)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self.rules.rules_for(*key)
            if len(self._compiled) > RULE_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        rules = self._for(identity)
        if action is Action.PUBLISH:
            return rules.may_publish(topic)
        return rules.may_subscribe(topic)

    def may_read(self, subscriber: Identity, topic: str) -> bool:
        return self._for(subscriber).may_read(topic)
