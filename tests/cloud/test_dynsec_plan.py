"""The dynsec plan: the registry's cores against what Mosquitto holds, no broker."""

from __future__ import annotations

from hedgerow.cloud import dynsec_plan as dp
from hedgerow.cloud.broker_acl import Routes

CLOUD = "hedgerow-cloud"
NO_ROUTES = Routes((), ())


def held(*cores: dp.DesiredCore, cloud_roles: tuple[str, ...] = (dp.CLOUD_ROLE,)) -> dp.Observed:
    """A broker in step with ``cores`` (and its administrator, the cloud)."""
    clients = {
        c.name: dp.ObservedClient(c.name, dp.CORE_TEXTNAME, c.tag, c.name, (c.role,)) for c in cores
    }
    clients[CLOUD] = dp.ObservedClient(CLOUD, "Dynsec admin user", roles=("admin", *cloud_roles))
    roles = {c.role: c.acls for c in cores} | {dp.CLOUD_ROLE: dp.cloud_acls()}
    return dp.Observed(clients, roles, dict(dp.DEFAULT_ACCESS))


def names(commands: list[dp.Command]) -> list[tuple[str, str]]:
    return [(c["command"], c.get("username") or c.get("rolename") or "") for c in commands]


def test_an_empty_broker_gets_deny_by_default_the_cloud_role_and_every_core() -> None:
    core = dp.desired_core("gw", "pw", NO_ROUTES)
    observed = dp.Observed(
        {CLOUD: dp.ObservedClient(CLOUD, roles=("admin",))},
        {},
        {"publishClientSend": False, "publishClientReceive": True, "subscribe": False},
    )
    commands = dp.plan({"gw": core}, observed, cloud_user=CLOUD)
    assert names(commands) == [
        ("setDefaultACLAccess", ""),
        ("createRole", dp.CLOUD_ROLE),
        ("createRole", "hedgerow-core-gw"),
        ("createClient", "gw"),
        ("addClientRole", CLOUD),  # last: it closes the cloud's own connections
    ]
    assert commands[0]["acls"] == [
        {"acltype": "publishClientReceive", "allow": False},
        {"acltype": "unsubscribe", "allow": True},
    ]
    create = commands[3]
    assert (create["password"], create["clientid"]) == ("pw", "gw")
    assert (
        create["textdescription"] == dp.password_tag("pw") and "pw" not in create["textdescription"]
    )


def test_a_broker_in_step_needs_nothing() -> None:
    cores = [dp.desired_core(n, f"pw-{n}", Routes(["t/#"], ["c/+"])) for n in ("a", "b")]
    assert dp.plan({c.name: c for c in cores}, held(*cores), cloud_user=CLOUD) == []


def test_a_revoked_core_is_deleted_then_its_role_others_are_left_alone() -> None:
    gw = dp.desired_core("gw", "pw", NO_ROUTES)
    observed = held(gw)
    observed.clients["someone"] = dp.ObservedClient("someone", "made by hand")  # type: ignore[index]
    commands = dp.plan({}, observed, cloud_user=CLOUD)
    assert names(commands) == [("deleteClient", "gw"), ("deleteRole", "hedgerow-core-gw")]


def test_a_new_password_makes_the_client_again_and_keeps_the_role() -> None:
    old = dp.desired_core("gw", "old", NO_ROUTES)
    new = dp.desired_core("gw", "new", NO_ROUTES)
    commands = dp.plan({"gw": new}, held(old), cloud_user=CLOUD)
    assert names(commands) == [("deleteClient", "gw"), ("createClient", "gw")]
    assert commands[1]["password"] == "new"


def test_a_route_change_edits_the_role_in_place_without_touching_the_client() -> None:
    before = dp.desired_core("gw", "pw", Routes(["t/#"], []))
    after = dp.desired_core("gw", "pw", Routes(["u/#"], ["c/#"]))
    commands = dp.plan({"gw": after}, held(before), cloud_user=CLOUD)
    assert {c["command"] for c in commands} == {"removeRoleACL", "addRoleACL"}
    removed = {(c["acltype"], c["topic"]) for c in commands if c["command"] == "removeRoleACL"}
    added = {(c["acltype"], c["topic"]) for c in commands if c["command"] == "addRoleACL"}
    assert removed == {("publishClientSend", "t/#")}
    assert added == {
        ("publishClientSend", "u/#"),
        ("subscribePattern", "c/#"),
        ("publishClientReceive", "c/#"),
    }


def test_a_client_of_a_core_name_someone_else_made_is_not_replaced() -> None:
    gw = dp.desired_core("gw", "pw", NO_ROUTES)
    observed = held()
    observed.clients["gw"] = dp.ObservedClient("gw", "an operator's")  # type: ignore[index]
    assert dp.plan({"gw": gw}, observed, cloud_user=CLOUD) == []


def test_one_core_in_scope_touches_nothing_else() -> None:
    a, b = dp.desired_core("a", "pw", NO_ROUTES), dp.desired_core("b", "pw", NO_ROUTES)
    empty = dp.Observed()
    assert names(dp.plan({"a": a, "b": b}, empty, cloud_user=CLOUD, scope=["a"])) == [
        ("createRole", "hedgerow-core-a"),
        ("createClient", "a"),
    ]
    assert names(dp.plan({}, held(a, b), cloud_user=CLOUD, scope=["b"])) == [
        ("deleteClient", "b"),
        ("deleteRole", "hedgerow-core-b"),
    ]


def test_a_core_role_fences_the_dollar_trees_above_its_routes() -> None:
    acls = dp.core_acls("gw", Routes(["#"], ["#"]))
    by_topic = {(a.acltype, a.topic): a for a in acls}
    own = by_topic[("subscribePattern", "$hedgerow/cores/gw/#")]
    fence = by_topic[("subscribePattern", "$hedgerow/#")]
    route = by_topic[("subscribePattern", "#")]
    assert own.allow and not fence.allow and route.allow
    assert own.priority > fence.priority > route.priority
    assert not by_topic[("subscribePattern", "$share/#")].allow
    assert by_topic[("publishClientSend", "$hedgerow/cores/gw/heartbeat")].allow
    assert by_topic[("publishClientSend", "$hedgerow/cores/gw/routed/#")].allow
    assert ("publishClientSend", "$hedgerow/cores/gw/deployments") not in by_topic
    # routes that start with a level need no fence: 8 ACLs of its own, one per route way
    assert len(dp.core_acls("gw", Routes(["plant/#"], []))) == 9
    assert not [a for a in dp.core_acls("gw", Routes(["plant/#"], ["c/+"])) if not a.allow]


def test_observed_reads_the_plugins_verbose_answers() -> None:
    observed = dp.observed_from(
        [
            {
                "username": "gw",
                "clientid": "gw",
                "textname": dp.CORE_TEXTNAME,
                "textdescription": "x",
                "roles": [{"rolename": "hedgerow-core-gw"}],
                "groups": [],
                "disabled": True,
            }
        ],
        [
            {
                "rolename": "r",
                "acls": [
                    {"acltype": "subscribePattern", "topic": "a/#", "priority": 1, "allow": True}
                ],
            }
        ],
        [{"acltype": "subscribe", "allow": False}],
    )
    assert observed.clients["gw"].disabled and observed.clients["gw"].managed
    assert observed.roles["r"] == frozenset({dp.Acl("subscribePattern", "a/#", True, 1)})
    assert observed.default_access == {"subscribe": False}
    # a disabled client of ours is made again (enabled, with the password it should have)
    gw = dp.desired_core("gw", "pw", NO_ROUTES)
    assert ("deleteClient", "gw") in names(
        dp.plan({"gw": gw}, observed, cloud_user=CLOUD, scope=["gw"])
    )
