// Rollouts: the list (#/rollouts) and one rollout (#/rollouts/ID) — per wave and per group,
// a progress bar, and Pause / Resume / Abort / Roll back. Refreshes every second.

import { enc, get, post } from "./api.js";
import { announce, badge, fill, h, put, section, table } from "./dom.js";

const ENDED = new Set(["completed", "aborted", "rolled-back"]);
const ACTIONS = {
  running: ["pause", "abort", "rollback"],
  paused: ["resume", "abort", "rollback"],
  completed: ["rollback"],
  aborted: ["rollback"],
};
const LABELS = { pause: "Pause", resume: "Resume", abort: "Abort", rollback: "Roll back" };
const CONFIRM = {
  abort: "Abort this rollout? No further wave starts; deployments made stay.",
  rollback: "Roll every group of this rollout back to the deployment it ran before?",
};

function stateBadge(state) {
  const kind = { running: "inprogress", paused: "rolledback", completed: "success",
    aborted: "failure", "rolling-back": "rolledback", "rolled-back": "idle" }[state];
  return badge(state, kind || "idle");
}

function targetBadge(state, failed) {
  const kind = { done: "success", deploying: "inprogress", soaking: "inprogress",
    restoring: "rolledback", restored: failed ? "failure" : "idle", waiting: "idle", skipped: "idle" }[state];
  return badge(state, kind || "idle");
}

// A <progress> with its text: screen readers get "7 of 10 groups done".
function progressBar(done, total, label) {
  return h(
    "div",
    { class: "rollout-progress" },
    h("progress", { max: String(total || 1), value: String(done), "aria-label": label }),
    h("span", {}, ` ${done} of ${total} done`),
  );
}

export async function rolloutsPage(ctx) {
  const body = h("div", { class: "page-body" });
  put(ctx.main,
    h("h1", {}, "Rollouts"),
    h("p", { class: "muted" },
      "Start one with hedgerow cloud rollout start --label site=berlin --from-group TEMPLATE --canary 1 --waves 10% 50% 100%."),
    body,
  );
  let shown = "";
  async function refresh() {
    const found = (await get("/api/v1/rollouts?limit=50&targets=false")).items;
    if (!ctx.alive()) return;
    const key = JSON.stringify(found.map((r) => [r.id, r.state, r.done, r.failed]));
    if (key === shown) return;
    shown = key;
    fill(body,
      table("Rollouts, newest first", [
        { label: "Rollout", cell: (r) => h("a", { href: `#/rollouts/${enc(r.id)}` }, r.id) },
        { label: "State", cell: (r) => stateBadge(r.state) },
        { label: "Progress", cell: (r) => progressBar(r.done, r.total, `rollout ${r.id}`) },
        { label: "Failed", cell: (r) => String(r.failed) },
        { label: "Why", cell: (r) => r.reason },
      ], found, "No rollout yet."),
    );
  }
  await refresh();
  ctx.every(1000, refresh);
}

export async function rolloutPage(ctx) {
  const id = ctx.parts[1];
  const body = h("div", { class: "page-body" });
  put(ctx.main, h("h1", {}, `Rollout ${id}`), body);
  let shown = "";
  async function act(action) {
    if (CONFIRM[action] && !confirm(CONFIRM[action])) return;
    const rollout = await post(`/api/v1/rollouts/${enc(id)}/actions`, { action });
    announce(`Rollout ${id}: ${rollout.state}.`, "info");
    shown = "";
    await refresh();
  }
  async function refresh() {
    const rollout = await get(`/api/v1/rollouts/${enc(id)}`);
    if (!ctx.alive()) return;
    const key = JSON.stringify(rollout);
    if (key === shown) return;
    shown = key;
    const actions = ACTIONS[rollout.state] || [];
    fill(body,
      h("p", {}, stateBadge(rollout.state), " ", rollout.reason),
      progressBar(rollout.done, rollout.total, `rollout ${id}`),
      h("p", { class: "muted" },
        `wave ${rollout.wave} of ${rollout.waves.length}; soak ${rollout.soak_s} s; ` +
        `${rollout.max_failures} failure(s) allowed; deadline ${rollout.deadline_s} s`),
      actions.length
        ? h("div", { class: "toolbar" }, actions.map((a) =>
            h("button", { type: "button", class: a === "rollback" || a === "abort" ? "danger" : "primary",
              onclick: () => act(a) }, LABELS[a])))
        : null,
      section("Waves", table("Waves", [
        { label: "Wave", cell: (w) => String(w.wave) },
        { label: "Progress", cell: (w) => progressBar(w.done, w.groups, `wave ${w.wave}`) },
        { label: "Failed", cell: (w) => String(w.failed) },
        { label: "In flight", cell: (w) => String(w.in_flight) },
      ], rollout.per_wave)),
      section("Groups", table("Groups of the rollout", [
        { label: "Group", cell: (t) => h("a", { href: `#/deployments?group=${enc(t.group)}` }, t.group) },
        { label: "Core", cell: (t) => t.core },
        { label: "Wave", cell: (t) => String(t.wave) },
        { label: "State", cell: (t) => [targetBadge(t.state, t.failed), t.failed ? " failed" : ""] },
        { label: "Deployment", cell: (t) => t.deployment
          ? h("a", { href: `#/deployments/${enc(t.deployment)}` }, t.deployment) : "-" },
        { label: "Restored to", cell: (t) => (t.restore ? t.previous || "(empty)" : "-") },
        { label: "Why", cell: (t) => t.detail },
      ], rollout.targets)),
      section("Events", h("ol", { class: "events" }, rollout.events.map((e) => h("li", {}, e)))),
    );
    if (ENDED.has(rollout.state)) shown = key;
  }
  await refresh();
  ctx.every(1000, refresh);
}
