// Drift: a core that runs something other than its group's current deployment — an
// offline deployment applied with `hedgerow core deploy --file`, or one this cloud never
// made. Shown on the fleet page (GET /api/v1/drift) and in a group's core box
// (GET /api/v1/groups/{g}/drift), with Adopt and Replace (the drift/adopt and drift/replace
// endpoints). Adopt is offered only for what this cloud signed.

import { ApiError, enc, post } from "./api.js";
import { announce, badge, h, table } from "./dom.js";

const CONFIRM = {
  adopt: (d) =>
    `Adopt ${d.running} as group ${d.group}'s current deployment? Core ${d.core} stays on it.`,
  replace: (d) =>
    `Replace what core ${d.core} runs (${d.running}) with group ${d.group}'s current deployment` +
    ` ${d.latest || "(none: the core is reset)"}?`,
};

// What the core runs, in words.
export function driftKind(d) {
  if (!d.signed_here) return "a deployment this cloud did not make";
  if (d.running_kind === "OfflineDeployment") return "an offline deployment made here";
  return "an older deployment of this cloud";
}

// Ask, then call drift/adopt or drift/replace; true when the cloud did it.
async function resolve(action, d) {
  if (!confirm(CONFIRM[action](d))) return false;
  try {
    const made = await post(`/api/v1/groups/${enc(d.group)}/drift/${action}`, {});
    announce(action === "adopt"
      ? `Group ${d.group}: ${made.deployment_id} adopted, core ${d.core} stays on it.`
      : `Group ${d.group}: ${made.deployment_id} is being deployed over ${d.running}.`);
    return true;
  } catch (exc) {
    if (!(exc instanceof ApiError)) throw exc;
    announce(exc.message, "error");
    return false;
  }
}

// The Adopt and Replace buttons of one drifting core; `after()` runs once the cloud acted.
export function driftButtons(d, after) {
  return h(
    "div",
    { class: "toolbar drift-actions" },
    h("button", {
      type: "button",
      class: "primary",
      "aria-label": `Adopt what ${d.core} runs`,
      disabled: !d.signed_here,
      title: d.signed_here ? "" : "not made by this cloud: it can only be replaced",
      onclick: async () => (await resolve("adopt", d)) && after(),
    }, "Adopt"),
    h("button", {
      type: "button",
      class: "danger",
      "aria-label": `Replace what ${d.core} runs`,
      onclick: async () => (await resolve("replace", d)) && after(),
    }, "Replace"),
  );
}

// A group's core box: nothing when the core runs the group's current deployment.
export function driftPanel(d, after) {
  if (!d || !d.drift) return null;
  return h(
    "div",
    { class: "notice drift", role: "note", "data-drift": "running" },
    h("p", {}, `Core ${d.core} runs ${d.running}, ${driftKind(d)}; the group's current deployment is `,
      d.latest || "none", "."),
    driftButtons(d, after),
  );
}

// The fleet page's table of every drifting core.
export function driftTable(items, after) {
  return table("Cores running another deployment", [
    { label: "Core", cell: (d) => d.core },
    { label: "Group", cell: (d) => h("a", { href: `#/groups/${enc(d.group)}` }, d.group) },
    { label: "Runs", cell: (d) => [d.running, " ", badge(d.signed_here ? "made here" : "unknown here",
      d.signed_here ? "rolledback" : "failure")] },
    { label: "What", cell: (d) => driftKind(d) },
    { label: "Group's current", cell: (d) => d.latest || "none" },
    { label: "", cell: (d) => driftButtons(d, after) },
  ], items, "Every core runs its group's current deployment.");
}
