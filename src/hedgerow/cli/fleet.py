"""``hedgerow cloud rollout ...`` (staged rollouts over many groups) and ``hedgerow cloud
deployment export|drift|adopt|replace`` (offline deployments and what a core runs)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hedgerow.cli import CLIError
from hedgerow.cli.cloud import (
    Api,
    _command,
    _decode,
    _labels,
    _table,
    fleet_definition,
)
from hedgerow.cli.output import done, print_json

#: Rollout states after which ``--follow``/``watch`` stop.
ENDED = {"completed", "aborted", "rolled-back"}
BAR = 30


def cmd_rollout_start(args: argparse.Namespace) -> int:
    groups = [g for item in args.groups for g in item.split(",") if g]
    if not groups and not args.label:
        raise CLIError("give the target groups: --groups a,b or --label site=berlin")
    body: dict[str, Any] = {
        "groups": groups,
        "labels": _labels(args.label),
        "canary": args.canary,
        "waves": args.waves or ["100%"],
        "soak_s": args.soak,
        "max_failures": args.max_failures,
    }
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    body.update(fleet_definition(args.from_group, args.config))
    with Api(args) as api:
        rollout = api.post("/api/v1/rollouts", body)
        if not args.follow:
            return done(
                args,
                rollout,
                f"rollout {rollout['id']} started: {rollout['total']} group(s) in "
                f"{len(rollout['waves'])} wave(s) (follow it: hedgerow cloud rollout watch {rollout['id']})",
            )
        return _follow(args, api, rollout["id"], args.timeout)


def _bar(done: int, total: int) -> str:
    filled = BAR * done // total if total else BAR
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def _line(rollout: dict[str, Any]) -> str:
    return (
        f"{_bar(rollout['done'], rollout['total'])} {rollout['done']}/{rollout['total']} done, "
        f"{rollout['failed']} failed, wave {rollout['wave']}/{len(rollout['waves'])}, "
        f"{rollout['state']}"
    )


def _follow(args: argparse.Namespace, api: Api, rollout_id: str, timeout: float) -> int:
    """Progress until the rollout ends or pauses (non-zero unless it completed)."""
    started = time.monotonic()
    shown = ""
    seen_events = 0
    while True:
        # the summary: a big fleet's per-group list is long, and asked for at once at the end
        rollout = api.get(f"/api/v1/rollouts/{rollout_id}", params={"targets": "false"})
        if not args.json:
            for event in rollout["events"][seen_events:]:
                print(f"\n  {time.monotonic() - started:6.1f}s  {event}", end="", flush=True)
            seen_events = len(rollout["events"])
            line = _line(rollout)
            if line != shown:
                print(
                    f"\n{line}" if sys.stdout.isatty() is False else f"\r{line}", end="", flush=True
                )
                shown = line
        state = rollout["state"]
        if state in ENDED or state == "paused":
            break
        if time.monotonic() - started > timeout:
            print(file=sys.stderr)
            raise CLIError(
                f"rollout {rollout_id} is still {state} after {timeout:g} s: it goes on in the "
                f"cloud (hedgerow cloud rollout watch {rollout_id})"
            )
        time.sleep(0.3)
    if args.json:
        print_json(api.get(f"/api/v1/rollouts/{rollout_id}"))
    else:
        print()
        print(f"rollout {rollout_id} {state}: {rollout['reason']}")
        if state == "paused":
            print(
                f"  fix the failed groups, then: hedgerow cloud rollout resume {rollout_id}"
                f"  (or: hedgerow cloud rollout rollback {rollout_id})"
            )
    return 0 if state == "completed" else 1


def cmd_rollout_watch(args: argparse.Namespace) -> int:
    with Api(args) as api:
        return _follow(args, api, args.id, args.timeout)


def cmd_rollout_status(args: argparse.Namespace) -> int:
    with Api(args) as api:
        if not args.id:
            result = api.get(
                "/api/v1/rollouts", params={"limit": str(args.limit), "targets": "false"}
            )
            if args.json:
                print_json(result["items"])
            else:
                _table(
                    [
                        [
                            r["id"],
                            r["state"],
                            f"{r['done']}/{r['total']}",
                            str(r["failed"]),
                            r["reason"],
                        ]
                        for r in result["items"]
                    ],  # fmt: skip
                    ["ROLLOUT", "STATE", "DONE", "FAILED", "REASON"],
                )
            return 0
        rollout = api.get(f"/api/v1/rollouts/{args.id}")
    if args.json:
        print_json(rollout)
        return 0
    print(f"rollout {rollout['id']}: {rollout['state']} ({rollout['reason']})")
    print(_line(rollout))
    for wave in rollout["per_wave"]:
        print(
            f"  wave {wave['wave']}: {wave['done']}/{wave['groups']} done, "
            f"{wave['failed']} failed, {wave['in_flight']} in flight"
        )
    _table(
        [
            [
                t["group"],
                str(t["wave"]),
                t["state"],
                "yes" if t["failed"] else "-",
                t["deployment"] or "-",
                t["detail"],
            ]
            for t in rollout["targets"]
        ],  # fmt: skip
        ["GROUP", "WAVE", "STATE", "FAILED", "DEPLOYMENT", "DETAIL"],
    )
    return 0


def _action(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with Api(args) as api:
            rollout = api.post(f"/api/v1/rollouts/{args.id}/actions", {"action": name})
        return done(args, rollout, f"rollout {args.id}: {rollout['state']} ({rollout['reason']})")

    return run


# ---- offline deployments -----------------------------------------------------------------


def cmd_deployment_export(args: argparse.Namespace) -> int:
    from hedgerow.contract.offline import OfflineDeployment, pack

    with Api(args) as api:
        exported = api.post(f"/api/v1/groups/{args.group}/deployments/export")
        artifacts: dict[str, bytes] = {}
        for sha in exported["artifacts"]:
            response = api.client.get(f"/api/v1/artifacts/{sha}")
            if response.status_code >= 400:
                _decode(response)
            artifacts[sha] = response.content
    deployment = exported["deployment"]
    data = pack(
        OfflineDeployment(
            deployment["deployment_id"],
            deployment["group"],
            deployment["core"],
            exported["document"],
            exported["signature"],
            artifacts,
        )
    )
    out = Path(args.out)
    out.write_bytes(data)
    return done(
        args,
        {**deployment, "file": str(out), "bytes": len(data)},
        f"deployment {deployment['deployment_id']} of group {args.group} written to {out} "
        f"({len(data)} bytes, {len(artifacts)} artifact(s)); on the core: "
        f"hedgerow core deploy --file {out.name}",
    )


def cmd_deployment_drift(args: argparse.Namespace) -> int:
    with Api(args) as api:
        drift = api.get(f"/api/v1/groups/{args.group}/drift")
    if args.json:
        print_json(drift)
    elif not drift["drift"]:
        print(
            f"group {args.group}: core {drift['core']} runs {drift['running'] or 'nothing reported'} (no drift)"
        )
    else:
        origin = (
            f"signed by this cloud ({drift['running_kind']})"
            if drift["signed_here"]
            else "not made by this cloud"
        )
        print(
            f"group {args.group}: DRIFT: core {drift['core']} runs {drift['running']} ({origin}); "
            f"the group's deployment is {drift['latest'] or 'none'}"
        )
        print(
            f"  keep it: hedgerow cloud deployment adopt --group {args.group}\n"
            f"  or deploy the group's over it: hedgerow cloud deployment replace --group {args.group}"
        )
    return 0


def _drift_action(action: str, said: str) -> Any:
    """``adopt`` or ``replace`` the drift of ``--group``; ``said``: what is printed."""

    def run(args: argparse.Namespace) -> int:
        with Api(args) as api:
            deployment = api.post(f"/api/v1/groups/{args.group}/drift/{action}")
        text = said.format(
            group=args.group, id=deployment["deployment_id"], core=deployment["core"]
        )
        return done(args, deployment, text)

    return run


def register(sub: Any) -> None:
    rollout = sub.add_parser("rollout", help="staged rollouts over many groups").add_subparsers(
        dest="rollout_command", metavar="COMMAND", required=True
    )
    p = _command(rollout, "start", cmd_rollout_start, "start a staged rollout")
    p.add_argument("--groups", action="append", default=[], help="target groups a,b (repeatable)")
    p.add_argument("--label", action="append", default=[], help="target groups with key=value")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--from-group", help="give every target this group's functions and subscriptions"
    )
    source.add_argument("--config", help="JSON {functions: [...], subscriptions: [...]}")
    p.add_argument("--canary", type=int, default=0, help="groups in a first wave of their own")
    p.add_argument("--waves", nargs="*", default=[], help="cumulative waves: 10%% 50%% 100%%")
    p.add_argument("--soak", type=float, default=0.0, help="seconds each group must stay healthy")
    p.add_argument(
        "--max-failures", default="0", help="failed groups allowed (N or P%%) before a pause"
    )
    p.add_argument("--deadline", type=float, help="seconds a group has to become healthy")
    p.add_argument("--follow", action="store_true", help="show progress until it ends or pauses")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds --follow waits")
    p = _command(rollout, "status", cmd_rollout_status, "one rollout per wave and group, or all")
    p.add_argument("id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p = _command(rollout, "watch", cmd_rollout_watch, "progress until the rollout ends or pauses")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=3600.0)
    for name, text in (
        ("pause", "start no further wave"),
        ("resume", "go on; failed groups are tried again"),
        ("abort", "stop: no further wave, deployments made stay"),
        ("rollback", "every group of the rollout back to its previous deployment"),
    ):
        _command(rollout, name, _action(name), text).add_argument("id")

    deployment = sub.add_parser(
        "deployment", help="offline deployments and what a core runs"
    ).add_subparsers(dest="deployment_command", metavar="COMMAND", required=True)
    p = _command(
        deployment, "export", cmd_deployment_export, "write a signed deployment for an offline core"
    )
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True, help="the file to write (d.tar)")
    for name, func, text in (
        ("drift", cmd_deployment_drift, "what the core runs against the group's deployment"),
        (
            "adopt",
            _drift_action(
                "adopt", "group {group}: deployment {id} adopted (the group's current one)"
            ),
            "make what the core runs the group's deployment",
        ),
        (
            "replace",
            _drift_action("replace", "group {group}: deployment {id} sent to core {core}"),
            "deploy the group's deployment over what the core runs",
        ),
    ):
        _command(deployment, name, func, text).add_argument("--group", required=True)
