// The operator's pages: one thing (its shadow, desired vs reported, desired editable; send
// it a message), what a deployment contains and how it differs, saved dashboards per group.

import { api, del, enc, get, patch, post, query } from "./api.js";
import { announce, badge, clear, fill, formatTime, h, put, section, table } from "./dom.js";
import { MAX_MESSAGES, WINDOWS, legend, renderChart, seriesOf } from "./chart.js";
import { checkName, checkTopicFilter, form } from "./forms.js";

const link = (href, ...children) => h("a", { href }, ...children);
const show = (value) => (value === undefined ? "–" : JSON.stringify(value));

// The merge patch that turns `before` into `after` (null removes a key), as AWS merges.
export function mergePatch(before, after) {
  const out = {};
  for (const key of Object.keys(before)) if (!(key in after)) out[key] = null;
  for (const [key, value] of Object.entries(after)) {
    const old = before[key];
    const objects = [value, old].every((v) => v && typeof v === "object" && !Array.isArray(v));
    if (objects) {
      const sub = mergePatch(old, value);
      if (Object.keys(sub).length) out[key] = sub;
    } else if (JSON.stringify(value) !== JSON.stringify(old)) {
      out[key] = value;
    }
  }
  return out;
}

// MQTT topic matching ('+' one level, '#' the rest), for "does a route carry this topic?".
export function topicMatches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

// ---- one thing -----------------------------------------------------------------------------

function shadowTable(thing, shadow) {
  const state = shadow.state;
  const desired = state.desired || {};
  const reported = state.reported || {};
  const delta = state.delta || {};
  const keys = [...new Set([...Object.keys(desired), ...Object.keys(reported)])].sort();
  return table(
    `Shadow of ${thing}: desired and reported`,
    [
      { label: "Key", cell: (k) => h("code", {}, k) },
      { label: "Desired", cell: (k) => show(desired[k]) },
      { label: "Reported", cell: (k) => show(reported[k]) },
      { label: "State", cell: (k) => (k in delta ? badge("pending", "pending") : k in desired ? badge("in sync", "success") : "reported only") },
    ],
    keys,
    "The shadow is empty: nothing desired, nothing reported yet.",
  );
}

function shadowSection(ctx, thing) {
  const facts = h("p", { class: "shadow-facts", "data-shadow-version": "" });
  const view = h("div", { class: "shadow-view" });
  let current = null;
  const edit = form({
    label: `Edit desired state of ${thing}`,
    title: "Edit desired state",
    submit: "Save desired state",
    defaultField: "desired",
    wide: true,
    errorFields: { state: "desired", "state.desired": "desired", version: "desired" },
    fields: [
      {
        name: "desired",
        label: "Desired state (JSON object)",
        type: "textarea",
        rows: 6,
        wide: true,
        hint: "Removing a key deletes it; the device gets the difference as a delta.",
      },
    ],
    validate: (v) => {
      try {
        const value = JSON.parse(v.desired || "{}");
        if (!value || typeof value !== "object" || Array.isArray(value)) return { desired: "the desired state must be a JSON object" };
      } catch (exc) {
        return { desired: `not JSON: ${exc.message}` };
      }
      return {};
    },
    onSubmit: async (v) => {
      const wanted = JSON.parse(v.desired || "{}");
      const change = mergePatch(current.state.desired || {}, wanted);
      if (!Object.keys(change).length) {
        announce("Nothing to save: the desired state is unchanged.");
        return;
      }
      const saved = await patch(`/api/v1/things/${enc(thing)}/shadow`, { state: { desired: change }, version: current.version });
      render(saved, true);
      const cores = saved.synced_by.length ? ` (sent to ${saved.synced_by.join(", ")})` : " (no core syncs it)";
      announce(`Desired state saved: version ${saved.version}${cores}.`);
    },
  });

  function render(shadow, resetForm) {
    const before = current ? JSON.stringify(current) : null;
    current = shadow;
    facts.dataset.shadowVersion = String(shadow.version);
    fill(facts,
      `Version ${shadow.version}. `,
      shadow.synced_by.length
        ? `Synced with core ${shadow.synced_by.join(", ")}.`
        : "No core syncs this shadow: name the thing in its group's shadow sync setting, then deploy.",
    );
    if (before !== JSON.stringify(shadow)) fill(view, shadowTable(thing, shadow));
    // the form follows the cloud's desired unless the user is editing it
    if (resetForm || document.activeElement !== edit.inputs.desired) {
      edit.inputs.desired.value = JSON.stringify(shadow.state.desired || {}, null, 2);
    }
  }

  async function refresh() {
    const shadow = await get(`/api/v1/things/${enc(thing)}/shadow`);
    if (ctx.alive()) render(shadow, false);
  }
  return { element: section("Shadow", facts, view, edit.element), refresh };
}

function messageSection(thing, routes) {
  const first = routes[0];
  const suggested = first ? first.topic.replace(/\/?#$/, "").split("/").map((l) => (l === "+" ? thing : l)).join("/") : "";
  const send = form({
    label: `Send a message to ${thing}`,
    title: "Send a message",
    submit: "Send message",
    defaultField: "topic",
    wide: true,
    errorFields: { payload: "payload" },
    fields: [
      { name: "topic", label: "Topic", required: true, value: suggested, hint: "published from the cloud; the core delivers it where a route from the cloud to this thing matches" },
      { name: "payload", label: "Payload", type: "textarea", rows: 3, value: '{"command": "ping"}', wide: true },
    ],
    validate: (v) => {
      if (!v.topic) return { topic: "a topic is required" };
      if (/[#+]/.test(v.topic)) return { topic: "a topic to publish to has no wildcards" };
      if (!routes.some((r) => topicMatches(r.topic, v.topic))) {
        return { topic: `no route from the cloud to ${thing} carries ${v.topic}: add one on its group's page` };
      }
      return {};
    },
    onSubmit: async (v) => {
      const sent = await post("/api/v1/messages/publish", { topic: v.topic, payload: v.payload });
      announce(`Sent ${sent.bytes} bytes to ${sent.topic}.`);
    },
  });
  const list = routes.length
    ? h("ul", { class: "routes" }, routes.map((r) => h("li", {}, "cloud → ", h("code", {}, r.topic), ` → ${thing} (group `, link(`#/groups/${enc(r.group)}`, r.group), ")")))
    : h("p", { class: "empty" }, `No route from the cloud reaches ${thing}: add a subscription with source cloud and target thing:${thing} on its group's page.`);
  return section("Send a message", list, send.element);
}

export async function thingPage(ctx) {
  const thing = ctx.parts[1];
  const info = await get(`/api/v1/things/${enc(thing)}`);
  const subscriptions = await Promise.all(info.groups.map((g) => get(`/api/v1/groups/${enc(g)}/subscriptions`).then((r) => r.items.map((s) => ({ ...s, group: g })))));
  const routes = subscriptions.flat().filter((s) => s.source === "cloud" && s.target === `thing:${thing}`);
  if (!ctx.alive()) return;
  const shadow = shadowSection(ctx, thing);
  put(ctx.main,
    h("p", { class: "breadcrumb" }, link("#/things", "Things"), " / ", thing),
    h("h1", {}, `Thing ${thing}`),
    h("p", {}, "Groups: ", info.groups.length ? info.groups.map((g, i) => [i ? ", " : "", link(`#/groups/${enc(g)}`, g)]) : "none"),
    shadow.element,
    messageSection(thing, routes),
  );
  await shadow.refresh();
  ctx.every(1000, () => shadow.refresh().catch(() => {}));
}

// ---- what a deployment contains --------------------------------------------------------------

function changeList(label, plan, self) {
  if (!plan) return h("p", { class: "empty" }, label === "previous" ? "This is the core's first deployment." : "The core runs no deployment yet.");
  if (plan.running === self) return h("p", { "data-diff": label }, "The core runs this deployment.");
  const heading = label === "previous" ? "Since the previous deployment " : "Against what the core runs, ";
  return h(
    "div",
    { "data-diff": label },
    h("p", {}, heading, link(`#/deployments/${enc(plan.running)}`, plan.running), plan.empty ? ": no changes." : ":"),
    plan.empty ? null : h("ul", { class: "changes" }, plan.lines.map((line) => h("li", { class: `change-${{ "+": "add", "-": "remove", "~": "replace" }[line[0]] || "same"}` }, line))),
  );
}

export async function deploymentContents(id) {
  const c = await get(`/api/v1/deployments/${enc(id)}/contents`);
  const doc = c.document;
  const settings = Object.entries(doc.settings || {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  return h(
    "div",
    { class: "deployment-contents" },
    section(
      "What it contains",
      h("p", {}, `Things: ${(doc.things || []).join(", ") || "none"}. Settings: ${settings.join("; ") || "none"}.`),
      table(
        "Functions",
        [
          { label: "Function", cell: (f) => f.name },
          { label: "Version", cell: (f) => String(f.version) },
          { label: "Runtime", cell: (f) => f.runtime },
          { label: "Handler", cell: (f) => h("code", {}, f.handler) },
          { label: "Pinned", cell: (f) => (f.pinned ? "yes" : "no") },
          { label: "Memory", cell: (f) => `${f.memory_mb} MB` },
        ],
        doc.functions || [],
        "No functions.",
      ),
      table(
        "Subscriptions",
        [
          { label: "Source", cell: (s) => s.source },
          { label: "Topic filter", cell: (s) => h("code", {}, s.topic) },
          { label: "Target", cell: (s) => s.target },
        ],
        doc.subscriptions || [],
        "No subscriptions.",
      ),
    ),
    section("Difference from the previous deployment", changeList("previous", c.previous, id)),
    section("Difference from what the core runs", changeList("running", c.running, id)),
  );
}

// ---- saved dashboards --------------------------------------------------------------------------

async function chartOf(group, spec) {
  const to = Date.now() / 1000;
  const from = to - spec.window_s;
  const found = await get(query("/api/v1/messages", { group, filter: spec.filter, since: from.toFixed(3), limit: MAX_MESSAGES, order: "desc" }));
  const messages = found.items.reverse();
  const { series } = seriesOf(messages, spec.fields);
  const title = spec.title || `${spec.fields.join(", ")} on ${spec.filter}`;
  if (!series.length) {
    return h("figure", { class: "chart-figure", "data-chart": title }, h("figcaption", {}, h("strong", {}, title), `: no numeric ${spec.fields.join(" or ")} on ${spec.filter} in this window.`));
  }
  const times = series.flatMap((s) => s.points.map((p) => p[0]));
  const first = Math.min(...times);
  const last = Math.max(...times, first + 1);
  const points = series.reduce((n, s) => n + s.points.length, 0);
  return h(
    "figure",
    { class: "chart-figure", "data-chart": title, "data-points": String(points) },
    renderChart(series, first, last, 640),
    h("figcaption", {}, h("strong", {}, title), ` (${points} points)`, legend(series)),
  );
}

export async function dashboardsPage(ctx) {
  const groups = (await get("/api/v1/groups")).items;
  const group = ctx.params.get("group") || (groups[0] && groups[0].name) || "";
  const name = ctx.params.get("name") || "";
  const body = h("div", { class: "page-body" });
  put(ctx.main, h("h1", {}, "Dashboards"), body);
  if (!groups.length) {
    put(body, h("p", { class: "empty" }, "No groups yet: create one on the Groups page."));
    return;
  }
  const pick = h(
    "form",
    { class: "filters", "aria-label": "Choose a group", onsubmit: (e) => { e.preventDefault(); location.hash = query("#/dashboards", { group: new FormData(e.target).get("group") }); } },
    h("div", { class: "field inline" }, h("label", { for: "dash-group" }, "Group"), h("select", { id: "dash-group", name: "group" }, groups.map((g) => h("option", { value: g.name, selected: g.name === group }, g.name)))),
    h("button", { type: "submit" }, "Show"),
  );
  const charts = h("div", { class: "dashboard-charts", "aria-live": "polite" });
  let saved = (await get(`/api/v1/groups/${enc(group)}/dashboards`)).items;
  let open = saved.find((d) => d.name === name) || null;

  async function save(dashboardName, list, message) {
    const result = await api("PUT", `/api/v1/groups/${enc(group)}/dashboards/${enc(dashboardName)}`, { charts: list });
    saved = (await get(`/api/v1/groups/${enc(group)}/dashboards`)).items;
    open = result;
    announce(message);
    history.replaceState(null, "", query("#/dashboards", { group, name: dashboardName }));
    render();
    await drawCharts();
  }

  async function drawCharts() {
    if (!open) return clear(charts);
    const figures = await Promise.all(open.charts.map((spec) => chartOf(group, spec)));
    if (!ctx.alive()) return;
    fill(charts,
      figures.map((figure, i) =>
        h("div", { class: "dashboard-chart" }, figure,
          h("button", { type: "button", class: "danger", onclick: () => save(open.name, open.charts.filter((_, j) => j !== i), `Chart removed from ${open.name}.`) }, `Remove chart ${open.charts[i].title || i + 1}`),
        ),
      ),
    );
  }

  const addChart = form({
    label: "Add a chart",
    title: "Add a chart to a dashboard",
    submit: "Add chart",
    defaultField: "filter",
    errorFields: { "dashboard name": "dashboard", "charts[0].filter": "filter", "charts[0].fields": "fields" },
    fields: [
      { name: "dashboard", label: "Dashboard", required: true, value: name || "main", hint: "a new name makes a new dashboard" },
      { name: "title", label: "Title", value: "" },
      { name: "filter", label: "Topic filter", required: true, value: "sensors/#" },
      { name: "fields", label: "Fields", required: true, value: "temperature", hint: "comma-separated JSON fields" },
      { name: "window", label: "Time window", type: "select", value: "3600", options: WINDOWS },
    ],
    validate: (v) => ({
      dashboard: checkName(v.dashboard, "dashboard name"),
      filter: checkTopicFilter(v.filter),
      fields: v.fields.split(",").some((f) => f.trim()) ? null : "name at least one field",
    }),
    onSubmit: async (v) => {
      const existing = saved.find((d) => d.name === v.dashboard);
      const chart = { title: v.title, filter: v.filter, fields: v.fields.split(",").map((f) => f.trim()).filter(Boolean), window_s: Number(v.window) };
      await save(v.dashboard, [...(existing ? existing.charts : []), chart], `Chart added to ${v.dashboard}; the dashboard is saved in the cloud.`);
    },
  });

  function render() {
    const list = saved.length
      ? h("ul", { class: "dashboards" }, saved.map((d) => h("li", {}, link(query("#/dashboards", { group, name: d.name }), d.name), ` (${d.charts.length} charts, saved ${formatTime(d.updated_at)})`, d === open || (open && d.name === open.name) ? " ← shown" : "")))
      : h("p", { class: "empty" }, `Group ${group} has no saved dashboards yet: add a chart below.`);
    fill(body,
      pick,
      section(`Dashboards of ${group}`, list),
      open
        ? section(`Dashboard ${open.name}`,
            h("div", { class: "toolbar" },
              h("button", { type: "button", class: "danger", onclick: async () => {
                if (!confirm(`Delete dashboard ${open.name}?`)) return;
                await del(`/api/v1/groups/${enc(group)}/dashboards/${enc(open.name)}`);
                announce(`Dashboard ${open.name} deleted.`);
                location.hash = query("#/dashboards", { group });
              } }, `Delete dashboard ${open.name}`)),
            charts)
        : null,
      addChart.element,
    );
  }
  render();
  await drawCharts();
  ctx.every(5000, () => drawCharts().catch(() => {}));
}
