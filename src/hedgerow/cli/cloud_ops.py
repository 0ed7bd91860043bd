"""``hedgerow cloud logs [level]``, ``hedgerow cloud alert ...`` and ``hedgerow cloud export
status``: operating a fleet.

Registered into ``hedgerow cloud`` by ``cli/cloud.py`` (``register``); they talk to the
REST API like every client command there (``--url``, ``--token``, ``--data``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from typing import Any

from hedgerow.cli import CLIError
from hedgerow.cli.cloud import Api, _command, _table, _utc
from hedgerow.cli.output import done, print_json

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_value(text: str, now: float | None = None) -> str:
    """``--since``: ``10m``/``2h``/``30s``/``1d`` ago, epoch seconds, or ISO-8601 → epoch."""
    match = _RELATIVE.match(text.strip())
    if match:
        ago = float(match[1]) * _UNIT[match[2]]
        return str((time.time() if now is None else now) - ago)
    try:
        return str(float(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CLIError(
            f"--since {text!r}: write 10m, 2h, 1d, epoch seconds or ISO-8601 (2026-12-04T17:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return str(moment.timestamp())


def log_line(entry: dict[str, Any]) -> str:
    """``time  LEVEL  core  source  logger: message`` (continuation lines indented)."""
    head = f"{_utc(entry['ts'])}  {entry['level']:<8} {entry['core']}  {entry['source']}  " + (
        f"{entry['logger']}: " if entry.get("logger") else ""
    )
    first, *rest = str(entry["message"]).split("\n")
    return "\n".join([head + first, *("    " + line for line in rest)])


def _log_params(args: argparse.Namespace) -> dict[str, str]:
    params = {"group": args.group}
    for key in ("core", "function", "level"):
        value = getattr(args, key)
        if value:
            params[key] = value
    if args.since:
        params["since"] = since_value(args.since)
    return params


def _print_entry(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    print(json.dumps(entry) if args.json else log_line(entry), flush=True)


def cmd_logs(args: argparse.Namespace) -> int:
    if not args.group:
        raise CLIError("give --group G (the group whose cores' logs to show)")
    params = _log_params(args)
    with Api(args) as api:
        if args.since:  # from then on, oldest first
            found = api.get("/api/v1/logs", params={**params, "limit": str(args.limit)})
            entries = found["items"]
        else:  # the newest ``limit``, shown oldest first
            found = api.get(
                "/api/v1/logs", params={**params, "limit": str(args.limit), "order": "desc"}
            )
            entries = list(reversed(found["items"]))
        for entry in entries:
            _print_entry(args, entry)
        if not args.follow:
            if not entries and not args.json:
                print("(no logs: check --group, --core, --level and --since)", file=sys.stderr)
            return 0
        last = max((e["id"] for e in entries), default=None)
        print("following (Ctrl-C to stop)", file=sys.stderr, flush=True)
        stream = {k: v for k, v in params.items() if k != "since"}
        if last is not None:
            stream["after_id"] = str(last)
        for line in api.stream_lines("/api/v1/logs/stream", stream):
            if line.startswith("data: "):
                _print_entry(args, json.loads(line[len("data: ") :]))
    return 0


# ---- alerts -------------------------------------------------------------------------------


def cmd_alert_list(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.active:
        params["active"] = "true"
    with Api(args) as api:
        result = api.get("/api/v1/alerts", params=params)
    if args.json:
        print_json(result["items"])
        return 0
    _table(
        [
            [
                _utc(a["fired_at"]),
                "active" if a["active"] else f"cleared {_utc(a['resolved_at'])[11:]}",
                a["rule"],
                a["message"],
                ", ".join(f"{k}: {v}" for k, v in sorted(a["deliveries"].items())) or "-",
            ]
            for a in result["items"]
        ],
        ["FIRED", "STATE", "RULE", "WHAT", "WEBHOOKS"],
    )
    return 0


def cmd_rule_add(args: argparse.Namespace) -> int:
    body = {"name": args.name, "kind": args.kind, "threshold": args.threshold, "group": args.group}
    with Api(args) as api:
        rule = api.post("/api/v1/alerts/rules", body)
    return done(args, rule, f"alert rule {rule['name']}: {rule['kind']} ({rule['means']}: "
                 f"{rule['threshold']:g})")  # fmt: skip


def cmd_rule_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get("/api/v1/alerts/rules")
    if args.json:
        print_json(result["items"])
        return 0
    _table(
        [
            [r["name"], r["kind"], f"{r['threshold']:g}", r["means"], r["group"] or "(all)"]
            for r in result["items"]
        ],
        ["RULE", "KIND", "THRESHOLD", "MEANING", "GROUP"],
    )
    return 0


def cmd_rule_remove(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.request("DELETE", f"/api/v1/alerts/rules/{args.name}")
    return done(args, result, f"removed alert rule {args.name}")


def cmd_webhook_add(args: argparse.Namespace) -> int:
    body = {"name": args.name, "url": args.hook_url, "secret": args.secret}
    with Api(args) as api:
        result = api.post("/api/v1/alerts/webhooks", body)
    return done(
        args,
        result,
        f"webhook {args.name} → {args.hook_url}\n"
        f"signing secret (shown once; verify X-Hedgerow-Signature with it): {result['secret']}",
    )


def cmd_webhook_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get("/api/v1/alerts/webhooks")
    if args.json:
        print_json(result["items"])
        return 0
    _table([[h["name"], h["url"]] for h in result["items"]], ["WEBHOOK", "URL"])
    return 0


def cmd_webhook_remove(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.request("DELETE", f"/api/v1/alerts/webhooks/{args.name}")
    return done(args, result, f"removed webhook {args.name}")


def levels_text(levels: dict[str, Any]) -> list[str]:
    """A group's log levels set from the cloud, for people."""
    core = levels.get("core")
    lines = [f"core: {core or 'as its config file says ([cloud_logs] level)'}"]
    for name, level in sorted((levels.get("functions") or {}).items()):
        lines.append(f"function {name}: {level}")
    if not levels.get("functions"):
        lines.append("functions: as the core's config file says ([cloud_logs] function_level)")
    return lines


def cmd_log_level(args: argparse.Namespace) -> int:
    """Show or set the level of a group's core or of one of its functions (no deployment:
    the core applies it at once, or when it next connects, and keeps it)."""
    path = f"/api/v1/groups/{args.group}/log-levels"
    with Api(args) as api:
        if args.new_level is None:
            levels = api.get(path)
            return done(args, levels, "\n".join(levels_text(levels)))
        levels = api.request(
            "PATCH", path, json={"level": args.new_level, "function": args.function}
        )
    what = f"function {args.function}" if args.function else "the core"
    return done(
        args,
        levels,
        "\n".join(
            [
                f"log level of {what} in {args.group}: {args.new_level.upper()} "
                "(sent to the core: applied at once, or when it connects)",
                *levels_text(levels),
            ]
        ),
    )


KINDS = ("core-offline", "deployment-failed", "function-errors", "spool-full", "cert-expiry")


# ---- telemetry export ---------------------------------------------------------------------


def export_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    def text(value: Any) -> str:
        return "-" if value is None else str(value)

    return [
        [
            e["name"] + ("" if e["configured"] else " (removed)"),
            text(e["kind"]),
            text(e["url"]),
            text(e["cursor"]),
            text(e["lag"]),
            str(e["exported"]),
            str(e["lost"]),
            f"{e['failures']}" + (f" ({e['failing']} now)" if e["failing"] else ""),
            (e["last_success_at"] or "-")[:19].replace("T", " "),
            (e["last_error"] or "-")[:60],
        ]
        for e in items
    ]


def cmd_export_status(args: argparse.Namespace) -> int:
    with Api(args) as api:
        result = api.get("/api/v1/telemetry/exports")
    items = result["items"]
    if args.json:
        print_json(items)
        return 0
    if not items:
        print("no telemetry export targets: add [[telemetry.export]] to config.toml")
        return 0
    _table(
        export_rows(items),
        ["TARGET", "KIND", "URL", "CURSOR", "LAG", "EXPORTED", "LOST", "FAILURES",
         "LAST SUCCESS", "LAST ERROR"],
    )  # fmt: skip
    for e in items:
        if e["lost"]:
            print(
                f"{e['name']}: {e['lost']} message ids skipped: deleted (retention) before "
                "the target took them; raise [telemetry] retention_days or fix the target sooner"
            )
        if e["failing"]:
            print(f"{e['name']}: failing ({e['last_error']}); retried with backoff")
    return 0


def register(sub: Any) -> None:
    """``logs``, ``alert`` and ``export`` under ``hedgerow cloud``."""
    export = sub.add_parser("export", help="telemetry export targets").add_subparsers(
        dest="export_command", metavar="COMMAND", required=True
    )
    _command(export, "status", cmd_export_status, "each target's cursor, lag, losses and failures")
    p = _command(sub, "logs", cmd_logs, "logs of cores and their functions")
    p.add_argument("--group", help="the group (required)")
    p.add_argument("--core")
    p.add_argument("--function")
    p.add_argument("--level", help="DEBUG, INFO, WARNING, ERROR, CRITICAL: this level and above")
    p.add_argument("--since", help="10m, 2h, 1d, epoch seconds or ISO-8601")
    p.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    p.add_argument("-f", "--follow", action="store_true", help="then print new records live")
    logs = p.add_subparsers(dest="logs_command", metavar="COMMAND", required=False)
    p = _command(
        logs,
        "level",
        cmd_log_level,
        "show or set the level of a group's core or one of its functions, from the cloud",
    )
    p.add_argument("--group", required=True)
    p.add_argument("--function", help="this function's records (default: the core's own)")
    p.add_argument(
        "new_level",
        nargs="?",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR, CRITICAL or default (the config file's); "
        "none: show the levels",
    )

    alert = sub.add_parser("alert", help="alerts: rules, webhooks, history").add_subparsers(
        dest="alert_command", metavar="COMMAND", required=True
    )
    p = _command(alert, "list", cmd_alert_list, "alerts that fired, newest first")
    p.add_argument("--active", action="store_true", help="only those not cleared")
    p.add_argument("--limit", type=int, default=50)
    rule = alert.add_parser("rule", help="alert rules").add_subparsers(
        dest="rule_command", metavar="COMMAND", required=True
    )
    p = _command(rule, "add", cmd_rule_add, "add an alert rule")
    p.add_argument("name")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="core-offline: seconds; function-errors: errors a minute; spool-full: fraction "
        "0-1; cert-expiry: days",
    )
    p.add_argument("--group", help="only this group's cores (default: all)")
    _command(rule, "list", cmd_rule_list, "list alert rules")
    _command(rule, "remove", cmd_rule_remove, "remove an alert rule").add_argument("name")
    hook = alert.add_parser("webhook", help="where alerts are sent").add_subparsers(
        dest="webhook_command", metavar="COMMAND", required=True
    )
    p = _command(hook, "add", cmd_webhook_add, "add a webhook (alerts POSTed, HMAC-signed)")
    p.add_argument("name")
    p.add_argument("hook_url", metavar="URL", help="where alerts are POSTed (http or https)")
    p.add_argument("--secret", help="the HMAC-SHA256 key (default: a new random one)")
    _command(hook, "list", cmd_webhook_list, "list webhooks")
    _command(hook, "remove", cmd_webhook_remove, "remove a webhook").add_argument("name")


# ---- cores at a glance --------------------------------------------------------------------

CORE_HEADER = ["CORE", "GROUP", "LINK", "VERSION", "UP", "CPU", "MEM", "DISK", "SPOOL",
               "FUNCTIONS", "LAST SEEN"]  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _functions_glance(beat: dict[str, Any]) -> str:
    states: dict[str, str] = beat.get("functions") or {}
    errors: dict[str, Any] = beat.get("function_errors") or {}
    if not states:
        return "-"
    running = sum(1 for s in states.values() if s == "RUNNING")
    parts = [f"{running}/{len(states)} running"]
    broken = sorted(n for n, s in states.items() if s == "BROKEN")
    if broken:
        parts.append("BROKEN " + ",".join(broken))
    failing = sum(int(e.get("failed", 0)) + int(e.get("crashes", 0)) for e in errors.values())
    if failing:
        parts.append(f"{failing} errors")
    return "; ".join(parts)


def core_row(core: dict[str, Any]) -> list[str]:
    """One core at a glance: link, version, uptime, host use, spool, functions."""
    beat = core.get("heartbeat") or {}
    host = beat.get("host") or {}
    link = {True: "up", False: "DOWN", None: "?"}[core.get("connected")]
    spool = str(beat.get("spool", 0))
    if beat.get("spool_age"):
        spool += f" ({_duration(beat['spool_age'])} old)"

    def pct(key: str) -> str:
        return f"{host[key]:.0f}%" if key in host else "-"

    return [
        core["name"],
        core["group"],
        link,
        beat.get("version") or "-",
        _duration(beat["uptime"]) if "uptime" in beat else "-",
        pct("cpu"),
        pct("memory"),
        pct("disk"),
        spool,
        _functions_glance(beat),
        (core.get("last_seen") or "never")[:19],
    ]


def problems(core: dict[str, Any]) -> int:
    """How badly a core needs a look (higher first): down, broken, failing, spooling."""
    beat = core.get("heartbeat") or {}
    score = 0
    if core.get("connected") is False:
        score += 1000
    if beat.get("health") == "broken":
        score += 500
    states = (beat.get("functions") or {}).values()
    score += 100 * sum(1 for s in states if s == "BROKEN")
    errors = (beat.get("function_errors") or {}).values()
    score += min(99, sum(int(e.get("failed", 0)) + int(e.get("crashes", 0)) for e in errors))
    if beat.get("spool", 0):
        score += 10
    return score
