// Operating the fleet: health sorted by problems (#/fleet), the log view with filters and
// live follow (#/logs), alerts with their history, rules and webhooks (#/alerts).

import { ApiError, del, get, post, query, streamEvents } from "./api.js";
import { announce, badge, fill, h, put, section, table, timeCell } from "./dom.js";
import { driftTable } from "./drift.js";
import { form } from "./forms.js";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const MAX_LOG_ROWS = 1000;

// ---- fleet health --------------------------------------------------------------------------

// How badly a core needs a look (higher first): down, broken, failing, spooling.
export function problems(core) {
  const beat = core.heartbeat || {};
  const states = Object.values(beat.functions || {});
  const errors = Object.values(beat.function_errors || {});
  let score = 0;
  if (core.connected === false) score += 1000;
  if (beat.health === "broken") score += 500;
  score += 100 * states.filter((s) => s === "BROKEN").length;
  score += Math.min(99, errors.reduce((n, e) => n + (e.failed || 0) + (e.crashes || 0), 0));
  if (beat.spool) score += 10;
  return score;
}

function percent(value) {
  return value === undefined || value === null ? "–" : `${Math.round(value)}%`;
}

function duration(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`;
  }
  return `${Math.round(seconds)} s`;
}

function functionsCell(beat) {
  const states = beat.functions || {};
  const errors = beat.function_errors || {};
  const names = Object.keys(states).sort();
  if (!names.length) return "none";
  return h(
    "ul",
    { class: "plain" },
    names.map((name) => {
      const e = errors[name];
      const failed = e ? (e.failed || 0) + (e.crashes || 0) : 0;
      return h(
        "li",
        {},
        `${name} `,
        badge(states[name]),
        e ? ` ${e.invocations || 0} invocations, ${failed} failed` : "",
        e && e.last_error ? h("div", { class: "last-error" }, e.last_error) : null,
        e && e.traceback
          ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "traceback" }, e.traceback))
          : null,
      );
    }),
  );
}

export async function fleetPage(ctx) {
  const body = h("div", { id: "fleet" });
  const drift = h("div", { id: "fleet-drift" });
  put(ctx.main, h("h1", {}, "Fleet health"), h("p", { class: "hint" },
    "Cores that need a look first: offline, broken, failing functions, a spool waiting."),
    section("Drift", h("p", { class: "hint" },
      "Cores running another deployment than their group's current one (applied offline, or not made here)."),
      drift),
    body);
  let driftShown = "";
  async function refresh() {
    const [listed, drifting] = await Promise.all([get("/api/v1/cores"), get("/api/v1/drift")]);
    if (!ctx.alive()) return;
    // redrawn only when it changes, so its buttons stay put between refreshes
    const key = JSON.stringify(drifting.items);
    if (key !== driftShown) {
      driftShown = key;
      fill(drift, driftTable(drifting.items, () => {
        driftShown = "";
        return refresh();
      }));
    }
    const cores = listed.items;
    cores.sort((a, b) => problems(b) - problems(a) || a.name.localeCompare(b.name));
    const down = cores.filter((c) => c.connected === false).length;
    fill(body,
      h("p", { id: "fleet-summary" }, `${cores.length} cores, ${down} offline`),
      table("Cores by problems", [
        { label: "Core", cell: (c) => h("a", { href: `#/logs?group=${encodeURIComponent(c.group)}&core=${encodeURIComponent(c.name)}` }, c.name) },
        { label: "Group", cell: (c) => c.group },
        { label: "Link", cell: (c) => badge(c.connected === false ? "offline" : c.connected ? "online" : "unknown") },
        { label: "Health", cell: (c) => badge((c.heartbeat || {}).health || "unknown") },
        { label: "Version", cell: (c) => (c.heartbeat || {}).version || "–" },
        { label: "Uptime", cell: (c) => duration((c.heartbeat || {}).uptime) },
        { label: "CPU", cell: (c) => percent(((c.heartbeat || {}).host || {}).cpu) },
        { label: "Memory", cell: (c) => percent(((c.heartbeat || {}).host || {}).memory) },
        { label: "Disk", cell: (c) => percent(((c.heartbeat || {}).host || {}).disk) },
        { label: "Spool", cell: (c) => {
          const beat = c.heartbeat || {};
          return beat.spool_age ? `${beat.spool || 0} (${duration(beat.spool_age)} old)` : String(beat.spool || 0);
        } },
        { label: "Functions", cell: (c) => functionsCell(c.heartbeat || {}) },
        { label: "Last seen", cell: (c) => timeCell(c.last_seen) },
      ], cores, "No cores yet."),
    );
  }
  await refresh();
  ctx.every(1000, refresh);
}

// ---- logs -----------------------------------------------------------------------------------

function logRow(entry) {
  const [first, ...rest] = String(entry.message).split("\n");
  return h(
    "li",
    { class: `log log-${entry.level.toLowerCase()}`, "data-id": String(entry.id) },
    h("time", { datetime: entry.time }, entry.time.replace("T", " ").slice(0, 23)),
    " ",
    badge(entry.level, entry.level === "ERROR" || entry.level === "CRITICAL" ? "failure" : entry.level === "WARNING" ? "backoff" : "idle"),
    ` ${entry.core} ${entry.source} `,
    entry.logger ? h("span", { class: "logger" }, `${entry.logger}: `) : null,
    first,
    rest.length ? h("pre", { class: "traceback" }, rest.join("\n")) : null,
  );
}

export async function logsPage(ctx) {
  const params = ctx.params;
  const groups = (await get("/api/v1/groups")).items.map((g) => g.name);
  const state = { lastId: null, controller: null, shown: 0 };
  const list = h("ol", { id: "log-lines", class: "logs" });
  const status = h("span", { id: "log-state" }, badge("not following", "idle"));
  const count = h("span", { id: "log-count" }, "0 records");

  function show(entries) {
    for (const entry of entries) {
      list.append(logRow(entry));
      state.lastId = Math.max(state.lastId || 0, entry.id);
    }
    state.shown += entries.length;
    while (list.childElementCount > MAX_LOG_ROWS) list.firstElementChild.remove();
    count.textContent = `${state.shown} records`;
  }

  function filters(values) {
    return {
      group: values.group,
      core: values.core,
      function: values.function,
      level: values.level,
      since: values.since_minutes ? String(Date.now() / 1000 - Number(values.since_minutes) * 60) : "",
    };
  }

  async function follow(where) {
    const controller = new AbortController();
    state.controller = controller;
    ctx.onLeave(() => controller.abort());
    let delay = 500;
    while (!controller.signal.aborted && ctx.alive()) {
      try {
        fill(status, badge("connecting", "pending"));
        await streamEvents("/api/v1/logs/stream", { ...where, since: "", after_id: state.lastId }, {
          signal: controller.signal,
          onOpen: () => {
            delay = 500;
            fill(status, badge("live", "live"));
          },
          onMessage: (entry) => show([entry]),
        });
      } catch (exc) {
        if (controller.signal.aborted) return;
        if (exc instanceof ApiError && exc.status === 401) return;
      }
      fill(status, badge("reconnecting", "backoff"));
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }

  async function load(values) {
    if (state.controller) state.controller.abort();
    list.replaceChildren();
    state.lastId = null;
    state.shown = 0;
    const where = filters(values);
    const found = await get(query("/api/v1/logs", { ...where, limit: 500, order: where.since ? "asc" : "desc" }));
    show(where.since ? found.items : found.items.reverse());
    fill(status, badge("not following", "idle"));
    if (values.follow) follow(where);
  }

  const search = form({
    label: "Log filters",
    submit: "Show logs",
    fields: [
      { name: "group", label: "Group", type: "select", options: groups.map((g) => [g, g]), value: params.get("group") || groups[0] || "", required: true },
      { name: "core", label: "Core", value: params.get("core") || "" },
      { name: "function", label: "Function", value: params.get("function") || "" },
      { name: "level", label: "Level and above", type: "select", options: [["", "any"], ...LEVELS.map((l) => [l, l])], value: params.get("level") || "" },
      { name: "since_minutes", label: "Last minutes (empty: the newest 500)", value: params.get("since") || "" },
      { name: "follow", label: "Follow live", type: "checkbox", value: params.get("follow") !== "0" },
    ],
    validate: (v) => ({
      group: v.group ? null : "choose a group",
      since_minutes: v.since_minutes && !(Number(v.since_minutes) > 0) ? "a number of minutes" : null,
    }),
    onSubmit: load,
  });
  put(ctx.main,
    h("h1", {}, "Logs"),
    search.element,
    h("p", { class: "log-status" }, status, " ", count),
    h("div", { class: "messages-box", tabindex: "0", role: "region", "aria-label": "Log records, oldest first" }, list),
  );
  if (groups.length) await load(search.values());
  else fill(status, badge("no groups yet", "idle"));
}

// ---- alerts ---------------------------------------------------------------------------------

export async function alertsPage(ctx) {
  const body = h("div", { id: "alerts" });
  put(ctx.main, h("h1", {}, "Alerts"), body);
  const ruleForm = form({
    label: "Add a rule",
    submit: "Add rule",
    fields: [
      { name: "name", label: "Name", required: true },
      { name: "kind", label: "Kind", type: "select", required: true,
        options: ["core-offline", "deployment-failed", "function-errors", "spool-full", "cert-expiry"].map((k) => [k, k]) },
      { name: "threshold", label: "Threshold (seconds, errors a minute, fraction or days)", value: "0" },
      { name: "group", label: "Group (empty: all)" },
    ],
    validate: (v) => ({ name: v.name ? null : "name the rule", threshold: Number.isNaN(Number(v.threshold)) ? "a number" : null }),
    onSubmit: async (v) => {
      await post("/api/v1/alerts/rules", { name: v.name, kind: v.kind, threshold: Number(v.threshold), group: v.group || null });
      announce(`Rule ${v.name} added.`);
      await refresh();
    },
  });
  async function refresh() {
    const [history, rules, hooks] = await Promise.all([
      get("/api/v1/alerts?limit=200"),
      get("/api/v1/alerts/rules"),
      get("/api/v1/alerts/webhooks"),
    ]);
    if (!ctx.alive()) return;
    const active = history.items.filter((a) => a.active);
    fill(body,
      h("p", { id: "alerts-summary" }, `${active.length} active, ${history.items.length} in the history`),
      section("History",
        table("Alerts, newest first", [
          { label: "Fired", cell: (a) => timeCell(new Date(a.fired_at * 1000).toISOString()) },
          { label: "State", cell: (a) => badge(a.active ? "active" : "cleared", a.active ? "failure" : "idle") },
          { label: "Rule", cell: (a) => a.rule },
          { label: "What", cell: (a) => a.message },
          { label: "Webhooks", cell: (a) => Object.entries(a.deliveries).map(([k, v]) => `${k}: ${v}`).join(", ") || "–" },
        ], history.items, "No alert has fired."),
      ),
      section("Rules",
        table("Alert rules", [
          { label: "Rule", cell: (r) => r.name },
          { label: "Kind", cell: (r) => r.kind },
          { label: "Threshold", cell: (r) => `${r.threshold} (${r.means})` },
          { label: "Group", cell: (r) => r.group || "all" },
          { label: "", cell: (r) => h("button", { type: "button", class: "link-button", onclick: async () => {
            await del(`/api/v1/alerts/rules/${encodeURIComponent(r.name)}`);
            announce(`Rule ${r.name} removed.`);
            await refresh();
          } }, `Remove ${r.name}`) },
        ], rules.items, "No rules: nothing is watched."),
        ruleForm.element,
      ),
      section("Webhooks",
        table("Webhooks", [
          { label: "Webhook", cell: (w) => w.name },
          { label: "URL", cell: (w) => w.url },
        ], hooks.items, "No webhooks: alerts are shown here only."),
      ),
    );
  }
  await refresh();
  ctx.every(2000, refresh);
}
