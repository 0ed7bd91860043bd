// Claims: the list (#/claims) with each claim's template, uses of its limit, expiry and
// state, Revoke (asks first); one claim (#/claims/ID) with the audit of its uses.
// Refreshes every 2 s; a table is redrawn only when what it shows changed.

import { ApiError, enc, get, post } from "./api.js";
import { announce, badge, fill, formatTime, h, put, section, table, timeCell } from "./dom.js";

const STATE_BADGE = { active: "active", revoked: "revoked", expired: "idle", "used up": "idle" };

// What a claim can still do: revoked, expired, used up or active.
export function claimState(claim, now = Date.now()) {
  if (claim.revoked_at) return "revoked";
  if (claim.expires_at && new Date(claim.expires_at).getTime() <= now) return "expired";
  if (claim.used >= claim.max_uses) return "used up";
  return "active";
}

function stateBadge(claim) {
  const state = claimState(claim);
  return badge(state, STATE_BADGE[state]);
}

function expiry(claim) {
  if (!claim.expires_at) return "never";
  return h("time", { datetime: claim.expires_at }, formatTime(claim.expires_at));
}

// The Revoke button of a claim not revoked yet; `after()` runs once the cloud revoked it.
function revokeButton(claim, after) {
  if (claim.revoked_at) return null;
  return h("button", {
    type: "button",
    class: "danger",
    "aria-label": `Revoke claim ${claim.id}`,
    onclick: async () => {
      if (!confirm(`Revoke claim ${claim.id}? Devices holding it can no longer provision; ` +
        "devices it already provisioned keep their identity.")) return;
      try {
        await post(`/api/v1/claims/${enc(claim.id)}/revoke`, {});
        announce(`Claim ${claim.id} revoked.`);
      } catch (exc) {
        if (!(exc instanceof ApiError)) throw exc;
        announce(exc.message, "error");
      }
      await after();
    },
  }, "Revoke");
}

export async function claimsPage(ctx) {
  const body = h("div", { id: "claims", class: "page-body" });
  put(ctx.main,
    h("h1", {}, "Claims"),
    h("p", { class: "muted" },
      "Make one with hedgerow cloud claim create --template TEMPLATE --count 100 --expires 30d --out claim.tar.gz."),
    body,
  );
  let shown = "";
  async function refresh() {
    const [claims, templates] = await Promise.all([get("/api/v1/claims"), get("/api/v1/claim-templates")]);
    if (!ctx.alive()) return;
    const key = JSON.stringify([claims.items.map((c) => [c, claimState(c)]), templates.items]);
    if (key === shown) return;
    shown = key;
    const again = () => {
      shown = "";
      return refresh();
    };
    fill(body,
      table("Claims", [
        { label: "Claim", cell: (c) => h("a", { href: `#/claims/${enc(c.id)}` }, c.id) },
        { label: "Template", cell: (c) => c.template },
        { label: "Kind", cell: (c) => c.kind },
        { label: "Uses", cell: (c) => `${c.used} of ${c.max_uses}` },
        { label: "Expires", cell: (c) => expiry(c) },
        { label: "State", cell: (c) => stateBadge(c) },
        { label: "Created", cell: (c) => timeCell(c.created_at) },
        { label: "", cell: (c) => revokeButton(c, again) },
      ], claims.items, "No claims yet."),
      section("Templates", table("Claim templates", [
        { label: "Template", cell: (t) => t.name },
        { label: "Kind", cell: (t) => t.kind },
        { label: "Group", cell: (t) => t.group },
        { label: "Name pattern", cell: (t) => t.name_pattern },
      ], templates.items, "No claim templates yet: hedgerow cloud claim template create.")),
    );
  }
  await refresh();
  ctx.every(2000, refresh);
}

export async function claimPage(ctx) {
  const id = ctx.parts[1];
  const body = h("div", { class: "page-body" });
  put(ctx.main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/claims" }, "Claims"), " / ", id),
    h("h1", {}, `Claim ${id}`),
    body,
  );
  let shown = "";
  async function refresh() {
    const claim = await get(`/api/v1/claims/${enc(id)}`);
    if (!ctx.alive()) return;
    const key = JSON.stringify([claim, claimState(claim)]);
    if (key === shown) return;
    shown = key;
    fill(body,
      h("dl", { class: "facts" },
        h("dt", {}, "State"), h("dd", {}, stateBadge(claim)),
        h("dt", {}, "Template"), h("dd", {}, `${claim.template} (${claim.kind})`),
        h("dt", {}, "Uses"), h("dd", {}, `${claim.used} of ${claim.max_uses}`),
        h("dt", {}, "Expires"), h("dd", {}, expiry(claim)),
        h("dt", {}, "Revoked"), h("dd", {}, claim.revoked_at ? formatTime(claim.revoked_at) : "no"),
        h("dt", {}, "Fingerprint"), h("dd", {}, h("code", {}, claim.fingerprint)),
      ),
      h("div", { class: "toolbar" }, revokeButton(claim, () => {
        shown = "";
        return refresh();
      })),
      section("Uses", table("Uses of the claim, newest first", [
        { label: "When", cell: (u) => timeCell(u.at) },
        { label: "Serial", cell: (u) => u.serial },
        { label: "Outcome", cell: (u) => badge(u.outcome, u.outcome === "ok" ? "success" : "failure") },
        { label: "Device", cell: (u) => u.name || "–" },
        { label: "Why", cell: (u) => u.reason || "–" },
        { label: "Certificate", cell: (u) => (u.fingerprint ? h("code", {}, u.fingerprint.slice(0, 16)) : "–") },
        { label: "From", cell: (u) => u.peer || "–" },
      ], [...claim.uses].reverse(), "Not used yet.")), // the API lists them oldest first
    );
  }
  await refresh();
  ctx.every(2000, refresh);
}
