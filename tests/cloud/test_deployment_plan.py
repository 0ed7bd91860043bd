"""The deployment planner (pure): the group's definition against what the core runs."""

from __future__ import annotations

from typing import Any

from hedgerow.cloud.deployment_plan import FunctionChange, Route, plan_deployment


def function(name: str, version: int, factor: str = "5", sha: str = "a" * 64) -> dict[str, Any]:
    return {"name": name, "version": version, "handler": f"{name}.handler", "pinned": True,
            "environment": {"FACTOR": factor}, "artifact": {"sha256": sha, "size": 10}}  # fmt: skip


def doc(deployment_id: str, functions: list[dict[str, Any]], subs: list[tuple[str, str, str]],
        things: list[str], open_broker: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "deployment_id": deployment_id,
        "functions": functions,
        "subscriptions": [{"source": s, "topic": t, "target": g} for s, t, g in subs],
        "things": things,
        "settings": {"open_broker": open_broker},
    }


SUBS = [("thing:bme680-1", "sensors/#", "function:temp-correct")]


def test_first_deployment_starts_everything() -> None:
    plan = plan_deployment(None, doc("d-1", [function("temp-correct", 1)], SUBS, ["bme680-1"]))
    assert plan.running is None
    assert plan.functions == (FunctionChange("temp-correct", None, 1),)
    assert plan.routes_added == (Route("thing:bme680-1", "sensors/#", "function:temp-correct"),)
    assert plan.things_added == ("bme680-1",)
    assert plan.render() == [
        "+ route thing:bme680-1 sensors/# → function:temp-correct",
        "+ start function temp-correct v1",
        "+ thing bme680-1",
    ]


def test_after_a_rollback_the_next_deploy_shows_the_version_it_brings_back() -> None:
    """The seed's path: v2 (FACTOR 7) rolled back to d-1 (v1, FACTOR 5); the group's
    definition still says v2, so the plan says what the next plain deploy replaces."""
    running = doc("d-1", [function("temp-correct", 1, "5")], SUBS, ["bme680-1"])
    definition = doc("d-3", [function("temp-correct", 2, "7")], SUBS, ["bme680-1"])
    plan = plan_deployment(running, definition)
    assert plan.running == "d-1"
    assert plan.functions == (FunctionChange("temp-correct", 1, 2, ("environment",)),)
    assert plan.render() == ["~ replace function temp-correct v1 → v2 (environment)"]
    assert not plan.empty


def test_same_definition_is_no_change() -> None:
    running = doc("d-1", [function("f", 3)], SUBS, ["a", "b"])
    again = doc("d-2", [function("f", 3)], list(reversed(SUBS)), ["b", "a"])
    plan = plan_deployment(running, again)
    assert plan.empty
    assert plan.render() == ["no changes: the core already runs this definition"]
    assert plan.to_dict()["empty"] is True


def test_stops_removes_and_settings() -> None:
    running = doc("d-1", [function("f", 1), function("g", 4)], SUBS + [("cloud", "cmd/#", "function:g")],
                  ["a", "b"])  # fmt: skip
    proposed = doc("d-2", [function("f", 1, sha="b" * 64)], SUBS, ["a", "c"], open_broker=True)
    plan = plan_deployment(running, proposed)
    assert plan.functions == (
        FunctionChange("f", 1, 1, ("artifact",)),
        FunctionChange("g", 4, None),
    )
    assert plan.routes_removed == (Route("cloud", "cmd/#", "function:g"),)
    assert plan.things_added == ("c",) and plan.things_removed == ("b",)
    assert plan.settings == ("open_broker",)
    assert plan.render() == [
        "- route cloud cmd/# → function:g",
        "~ replace function f v1 → v1 (artifact)",
        "- stop function g v4",
        "+ thing c",
        "- thing b",
        "~ setting open_broker",
    ]


def test_connectors_started_stopped_and_replaced() -> None:
    running = doc("d-1", [], [], [])
    running["connectors"] = [
        {"name": "plc", "kind": "modbus", "poll_s": 1},
        {"name": "old", "kind": "opcua"},
    ]
    proposed = doc("d-2", [], [], [])
    proposed["connectors"] = [
        {"name": "plc", "kind": "modbus", "poll_s": 2},
        {"name": "new", "kind": "opcua"},
    ]
    plan = plan_deployment(running, proposed)
    assert plan.connectors == (("new", "start"), ("old", "stop"), ("plc", "replace"))
    assert plan.render() == [
        "+ start connector new",
        "- stop connector old",
        "~ replace connector plc",
    ]
    assert plan_deployment(running, running).empty
