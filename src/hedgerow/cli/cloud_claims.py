"""``hedgerow cloud claim ...``, ``ca ...``, ``thing import``: provisioning by claim and
bringing devices' own certificates (the Greengrass V1 device migration)."""

from __future__ import annotations

import argparse
import base64
import csv
from pathlib import Path
from typing import Any

from hedgerow.cli import CLIError
from hedgerow.cli.cloud import Api, _command, _table, _write_private
from hedgerow.cli.output import done, print_json, show


def _attributes(pairs: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--attr {pair!r}: write KEY=VALUE")
        result[key] = value
    return result


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read {what} {path}: {exc.strerror}") from exc


# ---- templates ----------------------------------------------------------------------------


def cmd_template_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "kind": args.kind,
        "group": args.group,
        "name_pattern": args.name_pattern,
        "attributes": _attributes(args.attr),
    }
    with Api(args) as api:
        template = api.post("/api/v1/claim-templates", body)
    return done(
        args,
        template,
        f"claim template {args.name}: a {args.kind} named {args.name_pattern} in group "
        f"{args.group}; next: hedgerow cloud claim create --template {args.name} --count N "
        "--out claim.tar.gz",
    )


def cmd_template_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        items = api.get("/api/v1/claim-templates")["items"]
    if args.json:
        print_json(items)
        return 0
    _table(
        [[t["name"], t["kind"], t["group"], t["name_pattern"]] for t in items],
        ["TEMPLATE", "KIND", "GROUP", "NAME"],
    )
    return 0


def cmd_template_show(args: argparse.Namespace) -> int:
    with Api(args) as api:
        show(args, api.get(f"/api/v1/claim-templates/{args.name}"))
    return 0


def cmd_template_delete(args: argparse.Namespace) -> int:
    with Api(args) as api:
        api.request("DELETE", f"/api/v1/claim-templates/{args.name}")
    return done(args, {"deleted": args.name}, f"claim template {args.name} deleted")


# ---- claims -------------------------------------------------------------------------------


def cmd_claim_create(args: argparse.Namespace) -> int:
    body = {"template": args.template, "count": args.count, "expires": args.expires}
    with Api(args) as api:
        result = api.post("/api/v1/claims", body)
    out = Path(args.out)
    if out.is_dir():
        out = out / result["bundle_name"]
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_private(out, base64.b64decode(result["bundle"]))
    claim = result["claim"]
    if args.json:
        print_json({**claim, "bundle": str(out)})
        return 0
    kind = claim["kind"]
    print(
        f"claim {claim['id']} ({args.template}): {claim['max_uses']} use(s) until "
        f"{claim['expires_at']}"
    )
    print(f"claim credential: {out} (bake it into the {kind} image; it can only provision)")
    print(f"on first boot: hedgerow {kind} run --claim {out.name} --serial SERIAL")
    return 0


def cmd_claim_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        items = api.get("/api/v1/claims")["items"]
    if args.json:
        print_json(items)
        return 0
    _table(
        [
            [
                c["id"],
                c["template"],
                c["kind"],
                f"{c['used']}/{c['max_uses']}",
                c["expires_at"],
                "revoked" if c["revoked_at"] else "active",
            ]
            for c in items
        ],
        ["CLAIM", "TEMPLATE", "KIND", "USED", "EXPIRES", "STATE"],
    )
    return 0


def cmd_claim_show(args: argparse.Namespace) -> int:
    with Api(args) as api:
        claim = api.get(f"/api/v1/claims/{args.id}")
    if args.json:
        print_json(claim)
        return 0
    state = f"revoked at {claim['revoked_at']}" if claim["revoked_at"] else "active"
    print(
        f"claim {claim['id']} ({claim['template']}, {claim['kind']}): {state}, "
        f"{claim['used']} of {claim['max_uses']} uses, expires {claim['expires_at']}"
    )
    _table(
        [
            [u["at"], u["serial"], u["outcome"], u["name"] or "-", u["reason"] or "-"]
            for u in claim.get("uses", [])
        ],
        ["AT", "SERIAL", "OUTCOME", "NAME", "REASON"],
    )
    return 0


def cmd_claim_revoke(args: argparse.Namespace) -> int:
    with Api(args) as api:
        claim = api.post(f"/api/v1/claims/{args.id}/revoke")
    return done(
        args,
        claim,
        f"claim {args.id} revoked after {claim['used']} use(s): devices already provisioned "
        "keep their own identities",
    )


# ---- device CAs ---------------------------------------------------------------------------


def cmd_ca_register(args: argparse.Namespace) -> int:
    body = {"certificate": _read(args.certificate, "the CA certificate"), "template": args.template}
    with Api(args) as api:
        ca = api.post("/api/v1/device-cas", body)
    return done(
        args,
        ca,
        f"device CA {ca['subject']} registered ({ca['fingerprint'][:16]}…): devices it signed "
        f"join group {ca['group']} at their first discovery",
    )


def cmd_ca_list(args: argparse.Namespace) -> int:
    with Api(args) as api:
        items = api.get("/api/v1/device-cas")["items"]
    if args.json:
        print_json(items)
        return 0
    _table(
        [
            [
                c["fingerprint"][:16],
                c["subject"],
                c["template"],
                c["group"],
                "revoked" if c["revoked_at"] else "active",
            ]
            for c in items
        ],
        ["FINGERPRINT", "SUBJECT", "TEMPLATE", "GROUP", "STATE"],
    )
    return 0


def cmd_ca_revoke(args: argparse.Namespace) -> int:
    with Api(args) as api:
        ca = api.post(f"/api/v1/device-cas/{args.fingerprint}/revoke")
    return done(args, ca, f"device CA {ca['subject']} revoked: the things it admitted are cut off")


# ---- bring your own certificates ----------------------------------------------------------


def register_certificate(
    api: Api, name: str, groups: list[str], certificate: str, attributes: dict[str, str]
) -> Any:
    """``thing create NAME --cert FILE``: the thing keeps its key; we keep its certificate."""
    return api.post(
        "/api/v1/things",
        {"name": name, "groups": groups, "certificate": certificate, "attributes": attributes},
    )


def _import_rows(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """``(name, certificate file, groups)`` from ``--csv`` (``name,certificate[,group]``,
    relative paths from the CSV's directory) or ``--dir`` (``NAME.cert.pem`` / ``NAME.pem``)."""
    default = [args.group] if args.group else []
    if args.csv:
        base = Path(args.csv).parent
        rows = []
        for n, row in enumerate(csv.reader(_read(args.csv, "the CSV").splitlines()), 1):
            if not row or row[0].startswith("#") or row[0] == "name":
                continue
            if len(row) < 2:
                raise CLIError(f"{args.csv}:{n}: write name,certificate[,group]")
            groups = [row[2].strip()] if len(row) > 2 and row[2].strip() else default
            rows.append((row[0].strip(), str(base / row[1].strip()), groups))
        return rows
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CLIError(f"--dir {directory}: not a directory")
    rows = []
    for path in sorted(directory.glob("*.pem")):
        name = path.name.removesuffix(".pem").removesuffix(".cert").removesuffix(".crt")
        if name in ("root-ca", "ca"):
            continue
        rows.append((name, str(path), default))
    return rows


def cmd_thing_import(args: argparse.Namespace) -> int:
    rows = _import_rows(args)
    if not rows:
        raise CLIError("nothing to import (no rows, or no NAME.cert.pem files)")
    imported, failed = [], []
    with Api(args) as api:
        for i, (name, path, groups) in enumerate(rows, 1):
            try:
                register_certificate(api, name, groups, _read(path, "the certificate"), {})
                imported.append(name)
            except CLIError as exc:
                failed.append({"name": name, "error": str(exc)})
            if not args.json:
                print(f"\r[{i}/{len(rows)}] {name}", end="", flush=True)
    if not args.json:
        print()
    result = {"imported": imported, "failed": failed}
    if args.json:
        print_json(result)
    else:
        print(f"imported {len(imported)} thing(s) with their own certificates")
        for f in failed:
            print(f"  failed {f['name']}: {f['error']}")
    return 1 if failed else 0


def register(sub: Any) -> None:
    claim = sub.add_parser("claim", help="provisioning by claim").add_subparsers(
        dest="claim_command", metavar="COMMAND", required=True
    )
    p = _command(claim, "create", cmd_claim_create, "a claim credential (claim.tar.gz)")
    p.add_argument("--template", required=True)
    p.add_argument("--count", type=int, default=1, help="devices that may use it (default 1)")
    p.add_argument("--expires", default="30d", help="lifetime: 30d, 12h, 90m, 2w (default 30d)")
    p.add_argument("--out", default=".", help="file or directory (default: ./CLAIM.tar.gz)")
    _command(claim, "list", cmd_claim_list, "list claims")
    _command(claim, "show", cmd_claim_show, "a claim and every use of it").add_argument("id")
    _command(claim, "revoke", cmd_claim_revoke, "refuse every later use").add_argument("id")

    template = claim.add_parser("template", help="claim templates").add_subparsers(
        dest="template_command", metavar="COMMAND", required=True
    )
    p = _command(template, "create", cmd_template_create, "how claimed devices are registered")
    p.add_argument("--kind", required=True, choices=["core", "thing"])
    p.add_argument(
        "--group",
        required=True,
        help="group (pattern); a core gets its own group, e.g. site-{serial}",
    )
    p.add_argument(
        "--name-pattern",
        required=True,
        help="name pattern: {serial} {seq} {group} {cn} {template}, e.g. press-{serial}",
    )
    p.add_argument("--attr", action="append", metavar="KEY=VALUE", help="attribute (repeatable)")
    p.add_argument("name")
    _command(template, "list", cmd_template_list, "list claim templates")
    _command(template, "show", cmd_template_show, "show a claim template").add_argument("name")
    _command(template, "delete", cmd_template_delete, "delete a claim template").add_argument(
        "name"
    )

    ca = sub.add_parser("ca", help="device CAs (bring your own certificates)").add_subparsers(
        dest="ca_command", metavar="COMMAND", required=True
    )
    p = _command(ca, "register", cmd_ca_register, "admit devices this CA signed, just in time")
    p.add_argument("certificate", help="the CA's PEM certificate")
    p.add_argument("--template", required=True, help="a thing template with a fixed group")
    _command(ca, "list", cmd_ca_list, "list device CAs")
    _command(ca, "revoke", cmd_ca_revoke, "stop trusting a device CA").add_argument("fingerprint")


def register_thing_import(thing: Any) -> None:
    p = _command(
        thing, "import", cmd_thing_import, "register many things by their own certificates"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="lines name,certificate-file[,group]")
    source.add_argument("--dir", help="a directory of NAME.cert.pem files")
    p.add_argument("--group", help="group for rows that name none")
