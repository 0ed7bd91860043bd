// Pages of the registry: overview, groups (with their picture), deployments, things.

import { ApiError, del, enc, get, patch, post, query } from "./api.js";
import {
  ago,
  announce,
  badge,
  base64Bytes,
  downloadLink,
  fill,
  formatTime,
  h,
  put,
  section,
  statusBadge,
  svg,
  table,
  timeCell,
} from "./dom.js";
import { driftPanel } from "./drift.js";
import { checkName, checkTopicFilter, form, HANDLER_PATTERN } from "./forms.js";
import { deploymentContents } from "./operator.js";
import { zipFiles } from "./zip.js";

const FINAL = new Set(["Success", "Failure", "RolledBack"]);
// A core that sent nothing for this long is offline (when the cloud cannot tell directly).
const STALE_MS = 20 * 60 * 1000;

function link(href, ...children) {
  return h("a", { href }, ...children);
}

function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 14)}…` : id;
}

function refreshTimes(root) {
  for (const node of root.querySelectorAll("time[datetime]")) {
    const iso = node.getAttribute("datetime");
    if (iso) node.textContent = ago(iso);
  }
}

function coreOnline(core, status) {
  // the core's live MQTT session at the cloud, when the cloud can tell
  if (typeof core.connected === "boolean") return core.connected;
  if (Array.isArray(status.connected_cores)) return status.connected_cores.includes(core.name);
  return Boolean(core.last_seen) && Date.now() - new Date(core.last_seen).getTime() < STALE_MS;
}

function functionStates(heartbeat) {
  const states = Object.entries((heartbeat && heartbeat.functions) || {});
  if (!states.length) return "none";
  return h(
    "ul",
    { class: "plain" },
    states.map(([name, state]) => h("li", {}, `${name}: `, badge(state, String(state).toLowerCase()), functionError(heartbeat, name))),
  );
}

function connectorStates(heartbeat) {
  const entries = Object.entries((heartbeat && heartbeat.connectors) || {});
  if (!entries.length) return "none";
  return h(
    "ul",
    { class: "plain" },
    entries.map(([name, c]) =>
      h(
        "li",
        {},
        `${name} (${c.kind}): `,
        badge(c.state, String(c.state).toLowerCase()),
        ` polls ${c.polls ?? 0}, errors ${c.errors ?? 0}, reconnects ${c.reconnects ?? 0}, ${c.latency_ms ?? 0} ms`,
      ),
    ),
  );
}

// A function's failures as the core's heartbeat reports them (null when none).
function functionError(heartbeat, name) {
  const error = ((heartbeat && heartbeat.function_errors) || {})[name];
  if (!error) return null;
  const counts = ["failed", "crashes", "timeouts"].filter((k) => error[k]).map((k) => `${error[k]} ${k}`).join(", ");
  return h(
    "span",
    { class: "function-error" },
    counts ? ` (${counts})` : "",
    error.last_error ? h("span", { class: "detail" }, `last error: ${error.last_error}`) : null,
  );
}

// ---- each thing's connection, as its group's core reports it (heartbeat "things") ----------

// name → {connected, last_activity (ISO), core, online} over the given cores' heartbeats.
function thingStates(cores, status) {
  const states = {};
  for (const core of cores) {
    const online = coreOnline(core, status);
    for (const [name, t] of Object.entries((core.heartbeat && core.heartbeat.things) || {})) {
      const seen = { connected: online && t.connected, last_activity: new Date(t.last_activity * 1000).toISOString(), core: core.name, online };
      const known = states[name];
      // a thing in several groups: the connection wins, then the latest activity
      if (!known || (seen.connected && !known.connected) || (seen.connected === known.connected && seen.last_activity > known.last_activity)) {
        states[name] = seen;
      }
    }
  }
  return states;
}

function thingStateCell(name, states) {
  return h("span", { class: "thing-state", "data-thing-state": name }, thingStateNodes(states[name]));
}

function thingActivityCell(name, states) {
  const state = states[name];
  return h("span", { "data-thing-activity": name }, timeCell(state ? state.last_activity : null));
}

function thingStateNodes(state) {
  if (!state) return [badge("unknown", "idle")];
  if (!state.online) return [badge("unknown", "idle"), h("span", { class: "detail" }, ` core ${state.core} is offline`)];
  return [state.connected ? badge("connected", "online") : badge("disconnected", "offline")];
}

// Update the state and last-activity cells in place (forms on the page keep their input).
function updateThingCells(root, states) {
  for (const cell of root.querySelectorAll("[data-thing-state]")) {
    const next = thingStateNodes(states[cell.dataset.thingState]);
    if (cell.textContent !== next.map((n) => n.textContent).join("")) fill(cell, ...next);
  }
  for (const cell of root.querySelectorAll("[data-thing-activity]")) {
    const state = states[cell.dataset.thingActivity];
    fill(cell, timeCell(state ? state.last_activity : null));
  }
}

// What the next deploy would change against what the core runs (the cloud's plan).
function driftNotice(plan, coreName) {
  if (!plan) return null;
  if (plan.empty) {
    return h("p", { class: "in-sync", "data-drift": "none" }, `Core ${coreName} runs the group's definition.`);
  }
  return h(
    "div",
    { class: "notice drift", role: "note", "data-drift": "differs" },
    h(
      "p",
      {},
      plan.running
        ? `The group's definition differs from what core ${coreName} runs (${plan.running}). The next deploy would:`
        : `Core ${coreName} runs no deployment yet. The first deploy would:`,
    ),
    h("ul", {}, plan.lines.map((line) => h("li", {}, h("code", {}, line)))),
  );
}

async function planOf(group) {
  try {
    return await post(`/api/v1/groups/${enc(group)}/deployments/plan`, { kind: "new" });
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 409) return null; // no core yet
    throw exc;
  }
}

function thingBundle(created) {
  const name = created.thing.name;
  const files = [{ name: `${name}.cert.pem`, text: created.certificate }];
  if (created.private_key) files.push({ name: `${name}.key`, text: created.private_key });
  files.push({ name: "root-ca.pem", text: created.root_ca });
  return downloadLink(`${name}-certs.zip`, zipFiles(files), `Download ${name}-certs.zip`);
}

function coreBundle(created) {
  const blob = new Blob([base64Bytes(created.bundle)], { type: "application/gzip" });
  return downloadLink(created.bundle_name, blob, `Download ${created.bundle_name}`);
}

function focusHeading(root, text) {
  const heading = [...root.querySelectorAll("h2")].find((node) => node.textContent === text);
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

// ---- overview ----------------------------------------------------------------------------

export async function overviewPage(ctx) {
  const body = h("div", { class: "page-body" });
  put(ctx.main, h("h1", {}, "Overview"), body);
  let shown = "";
  async function refresh() {
    const [status, cores, groups] = await Promise.all([
      get("/api/v1/status"),
      get("/api/v1/cores"),
      get("/api/v1/groups"),
    ]);
    const histories = await Promise.all(
      groups.items
        .filter((g) => g.core)
        .map((g) => get(`/api/v1/groups/${enc(g.name)}/deployments?limit=5`)),
    );
    const recent = histories
      .flatMap((r) => r.items)
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))
      .slice(0, 10);
    if (!ctx.alive()) return;
    const key = JSON.stringify([status.connected_cores, status.ingest, cores, groups, recent]);
    if (key === shown) return refreshTimes(body);
    shown = key;
    render(status, cores.items, groups.items, recent);
  }
  function render(status, cores, groups, recent) {
    const online = cores.filter((c) => coreOnline(c, status));
    const devices = cores.reduce((sum, c) => sum + ((c.heartbeat && c.heartbeat.devices) || 0), 0);
    const ingest = status.ingest || {};
    const cards = [
      ["Cores online", online.length, "online"],
      ["Cores offline", cores.length - online.length, cores.length - online.length ? "offline" : ""],
      ["Connected devices", devices, ""],
      ["Groups", groups.length, ""],
      ["Messages stored", ingest.stored ?? "–", ""],
    ];
    fill(body,
      h(
        "ul",
        { class: "cards", "aria-label": "Fleet summary" },
        cards.map(([label, value, kind]) =>
          h("li", { class: `card ${kind ? `card-${kind}` : ""}` }, h("span", { class: "card-value" }, value), h("span", { class: "card-label" }, label)),
        ),
      ),
      section(
        "Cores",
        table(
          "Cores",
          [
            { label: "Core", cell: (c) => c.name },
            { label: "Group", cell: (c) => link(`#/groups/${enc(c.group)}`, c.group) },
            {
              label: "State",
              cell: (c) => (coreOnline(c, status) ? badge("online") : badge("offline")),
            },
            { label: "Last heartbeat", cell: (c) => timeCell(c.last_seen) },
            { label: "Version", cell: (c) => (c.heartbeat && c.heartbeat.version) || "–" },
            { label: "Spool depth", cell: (c) => (c.heartbeat ? String(c.heartbeat.spool ?? 0) : "–") },
            { label: "Devices", cell: (c) => (c.heartbeat ? String(c.heartbeat.devices ?? 0) : "–") },
            { label: "Functions", cell: (c) => functionStates(c.heartbeat) },
            { label: "Connectors", cell: (c) => connectorStates(c.heartbeat) },
          ],
          cores,
          "No cores yet: create a group, then its core.",
        ),
      ),
      section(
        "Recent deployments",
        table(
          "Recent deployments",
          [
            { label: "Deployment", cell: (d) => link(`#/deployments/${enc(d.deployment_id)}`, shortId(d.deployment_id)) },
            { label: "Group", cell: (d) => link(`#/groups/${enc(d.group)}`, d.group) },
            { label: "Core", cell: (d) => d.core },
            { label: "Kind", cell: (d) => d.kind },
            { label: "Status", cell: (d) => statusBadge(d.status) },
            { label: "Updated", cell: (d) => timeCell(d.updated_at) },
          ],
          recent,
          "No deployments yet.",
        ),
      ),
    );
  }
  await refresh();
  ctx.every(1000, () => refresh().catch(() => {})); // counts current within 2 s of a change
}

// ---- groups ------------------------------------------------------------------------------

export async function groupsPage(ctx) {
  const groups = (await get("/api/v1/groups")).items;
  if (!ctx.alive()) return;
  const create = form({
    label: "Create a group",
    title: "Create a group",
    submit: "Create group",
    defaultField: "name",
    errorFields: { "group name": "name", description: "description" },
    fields: [
      { name: "name", label: "Name", required: true, hint: "e.g. factory-1" },
      { name: "description", label: "Description" },
    ],
    validate: (v) => ({ name: checkName(v.name, "group name") }),
    onSubmit: async (v) => {
      await post("/api/v1/groups", { name: v.name, description: v.description });
      announce(`Group ${v.name} created.`);
      location.hash = `#/groups/${enc(v.name)}`;
    },
  });
  put(ctx.main,
    h("h1", {}, "Groups"),
    table(
      "Groups",
      [
        { label: "Group", cell: (g) => link(`#/groups/${enc(g.name)}`, g.name) },
        { label: "Description", cell: (g) => g.description || "" },
        { label: "Core", cell: (g) => g.core || "none yet" },
        { label: "Created", cell: (g) => timeCell(g.created_at) },
      ],
      groups,
      "No groups yet.",
    ),
    create.element,
  );
}

function parseRef(value) {
  if (value === "cloud" || value === "shadow") return { kind: value, name: null };
  const at = value.indexOf(":");
  if (at < 0) return null;
  const kind = value.slice(0, at);
  if (kind !== "thing" && kind !== "function") return null;
  return { kind, name: value.slice(at + 1) };
}

function checkRef(value, what, group, things, functions) {
  if (!value) return `${what} is required`;
  const ref = parseRef(value);
  if (!ref) return `invalid ${what} '${value}': use thing:<name>, function:<name>, cloud or shadow`;
  if (ref.kind === "thing" && !things.includes(ref.name)) {
    return `unknown ${what}: thing '${ref.name}' is not in group '${group}'`;
  }
  if (ref.kind === "function" && !functions.includes(ref.name)) {
    return `unknown ${what}: function '${ref.name}' is not in group '${group}'`;
  }
  return null;
}

const NODE_W = 220;
const NODE_H = 34;
const ROW = 46;
const KIND_OF = (ref) => (ref.includes(":") ? ref.split(":")[0] : ref);

function nodeBox(x, y, text, kind, title) {
  const shown = text.length > 26 ? `${text.slice(0, 25)}…` : text;
  return svg(
    "g",
    { class: `node node-${kind}` },
    svg("title", {}, title || text),
    svg("rect", { x, y, width: NODE_W, height: NODE_H, rx: 6 }),
    svg("text", { x: x + 10, y: y + NODE_H / 2 + 5 }, shown),
  );
}

// The group's routing as a picture: sources -> topic filters -> targets.
export function routingPicture(groupName, subscriptions) {
  const sources = [...new Set(subscriptions.map((s) => s.source))];
  const topics = [...new Set(subscriptions.map((s) => s.topic))];
  const targets = [...new Set(subscriptions.map((s) => s.target))];
  const rows = Math.max(sources.length, topics.length, targets.length, 1);
  const height = rows * ROW + 40;
  const col = [10, 290, 570];
  const y = (index) => 30 + index * ROW;
  const edges = [];
  const seen = new Set();
  const curve = (x1, y1, x2, y2, kind) => {
    const key = `${x1},${y1},${x2},${y2}`;
    if (seen.has(key)) return;
    seen.add(key);
    const mid = (x1 + x2) / 2;
    edges.push(svg("path", { class: `edge edge-${kind}`, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
  };
  for (const s of subscriptions) {
    const a = y(sources.indexOf(s.source)) + NODE_H / 2;
    const b = y(topics.indexOf(s.topic)) + NODE_H / 2;
    const c = y(targets.indexOf(s.target)) + NODE_H / 2;
    curve(col[0] + NODE_W, a, col[1], b, KIND_OF(s.source));
    curve(col[1] + NODE_W, b, col[2], c, KIND_OF(s.target));
  }
  const label = `Routing of group ${groupName}: ${subscriptions
    .map((s) => `${s.source} sends ${s.topic} to ${s.target}`)
    .join("; ")}`;
  return svg(
    "svg",
    {
      class: "routing",
      viewBox: `0 0 800 ${height}`,
      role: "img",
      "aria-label": subscriptions.length ? label : `Group ${groupName} routes nothing yet`,
    },
    svg("text", { class: "column-label", x: col[0], y: 18 }, "Source"),
    svg("text", { class: "column-label", x: col[1], y: 18 }, "Topic filter"),
    svg("text", { class: "column-label", x: col[2], y: 18 }, "Target"),
    edges,
    sources.map((s, i) => nodeBox(col[0], y(i), s, KIND_OF(s))),
    topics.map((t, i) => nodeBox(col[1], y(i), t, "topic")),
    targets.map((t, i) => nodeBox(col[2], y(i), t, KIND_OF(t))),
  );
}

function parseEnvironment(text) {
  const environment = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const at = trimmed.indexOf("=");
    if (at <= 0) return { error: `environment line '${trimmed}' is not KEY=VALUE` };
    const key = trimmed.slice(0, at).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return { error: `invalid environment variable name '${key}'` };
    environment[key] = trimmed.slice(at + 1);
  }
  return { environment };
}

function functionForm(group, existing, done) {
  const editing = Boolean(existing);
  const f = existing || {};
  const env = Object.entries(f.environment || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  const numberField = (name, label, value, hint) => ({ name, label, type: "number", value, hint, attrs: { inputmode: "decimal" } });
  const fields = [
    ...(editing ? [] : [{ name: "name", label: "Name", required: true, hint: "e.g. temp-correct" }]),
    { name: "handler", label: "Handler", required: true, value: f.handler || "", hint: "module.function, e.g. temp_correct.handler" },
    {
      name: "code",
      label: editing ? "New code (zip, optional)" : "Code (zip)",
      type: "file",
      required: !editing,
      attrs: { accept: ".zip,application/zip" },
      hint: "A zip of the function's Python files.",
    },
    { name: "runtime", label: "Runtime", type: "select", value: f.runtime || "python", options: [["python", "python"], ["greengrass-v1", "greengrass-v1"]] },
    { name: "pinned", label: "Pinned (long-lived)", type: "checkbox", value: f.pinned ?? true },
    numberField("memory_mb", "Memory (MB)", f.memory_mb ?? 128, "32-16384"),
    numberField("timeout_s", "Timeout (s)", f.timeout_s ?? 3, "0.01-900"),
    numberField("max_concurrency", "Max concurrency", f.max_concurrency ?? 1, "1-64"),
    { name: "encoding", label: "Encoding", type: "select", value: f.encoding || "json", options: [["json", "json"], ["binary", "binary"]] },
    { name: "environment", label: "Environment", type: "textarea", value: env, wide: true, hint: "One KEY=VALUE per line." },
  ];
  const cancel = editing ? h("button", { type: "button", onclick: () => done(false) }, "Cancel") : null;
  return form({
    label: editing ? `Edit function ${f.name}` : "Create a function",
    title: editing ? `Edit function ${f.name} (a new version)` : "Create a function",
    submit: editing ? "Save new version" : "Create function",
    wide: true,
    defaultField: editing ? "handler" : "name",
    extra: cancel,
    errorFields: { "function name": "name", sha256: "code" },
    fields,
    validate: (v) => {
      const problems = {
        name: editing ? null : checkName(v.name, "function name"),
        handler: HANDLER_PATTERN.test(v.handler) ? null : `invalid handler '${v.handler}': use module.function`,
        code: !editing && !v.code ? "choose the function's code (a zip file)" : null,
        environment: parseEnvironment(v.environment).error || null,
      };
      // the limits of hedgerow.contract.functions (the server checks them again)
      for (const [name, low, high] of [["memory_mb", 32, 16384], ["max_concurrency", 1, 64]]) {
        const n = Number(v[name]);
        if (!Number.isInteger(n) || n < low || n > high) problems[name] = `${name} must be an integer within ${low}..${high}`;
      }
      const t = Number(v.timeout_s);
      if (!(t >= 0.01 && t <= 900)) problems.timeout_s = "timeout_s must be a number within 0.01..900";
      return problems;
    },
    onSubmit: async (v) => {
      const body = {
        handler: v.handler,
        runtime: v.runtime,
        pinned: v.pinned,
        memory_mb: Number(v.memory_mb),
        timeout_s: Number(v.timeout_s),
        max_concurrency: Number(v.max_concurrency),
        encoding: v.encoding,
        environment: parseEnvironment(v.environment).environment,
      };
      if (v.code) {
        try {
          body.artifact = (await post("/api/v1/artifacts", v.code)).sha256;
        } catch (exc) {
          if (exc instanceof ApiError) throw new ApiError(exc.status, exc.message, "sha256");
          throw exc;
        }
      }
      if (editing) {
        const updated = await patch(`/api/v1/groups/${enc(group)}/functions/${enc(f.name)}`, body);
        announce(`Function ${f.name} is now version ${updated.version}.`);
      } else {
        await post(`/api/v1/groups/${enc(group)}/functions`, { name: v.name, ...body });
        announce(`Function ${v.name} created.`);
      }
      done(true);
    },
  });
}

export async function groupPage(ctx) {
  const name = ctx.parts[1];
  const path = `/api/v1/groups/${enc(name)}`;
  const body = h("div", { class: "page-body" });
  const notices = {};
  let editing = null;
  let coreName = null; // the group's core, once known (its heartbeat feeds the things' states)
  put(ctx.main,
    h("p", { class: "breadcrumb" }, link("#/groups", "Groups"), " / ", name),
    h("h1", {}, `Group ${name}`),
    body,
  );

  async function refresh(focus) {
    const [group, things, allThings, functions, subscriptions, status] = await Promise.all([
      get(path),
      get(query("/api/v1/things", { group: name })),
      get("/api/v1/things"),
      get(`${path}/functions`),
      get(`${path}/subscriptions`),
      get("/api/v1/status"),
    ]);
    const [core, plan, drift] = group.core
      ? await Promise.all([get(`/api/v1/cores/${enc(group.core)}`), planOf(name), get(`${path}/drift`)])
      : [null, null, null];
    if (!ctx.alive()) return;
    render(group, core, status, things.items, allThings.items, functions.items, subscriptions.items, plan, drift);
    coreName = group.core;
    if (focus) focusHeading(body, focus);
  }

  // each thing's connection and last activity, current within a second or two of a change
  async function refreshThings() {
    if (!coreName) return;
    const [core, status] = await Promise.all([get(`/api/v1/cores/${enc(coreName)}`), get("/api/v1/status")]);
    if (ctx.alive()) updateThingCells(body, thingStates([core], status));
  }
  ctx.every(1000, () => refreshThings().catch(() => {}));

  async function act(message, fn, focus) {
    try {
      await fn();
      announce(message);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      announce(exc.message, "error");
    }
    await refresh(focus);
  }

  function render(group, core, status, things, allThings, functions, subscriptions, plan, drift) {
    const thingNames = things.map((t) => t.name);
    const states = core ? thingStates([core], status) : {};
    const functionNames = functions.map((f) => f.name);
    const deploy = h(
      "button",
      {
        type: "button",
        class: "primary",
        disabled: !core,
        title: core ? "" : "the group needs a core first",
        onclick: async () => {
          try {
            const made = await post(`${path}/deployments`, { kind: "new" });
            announce(`Deployment ${made.deployment_id} created.`, "info", "deployments");
            location.hash = `#/deployments/${enc(made.deployment_id)}`;
          } catch (exc) {
            if (!(exc instanceof ApiError)) throw exc;
            announce(exc.message, "error");
          }
        },
      },
      "Deploy",
    );
    const remove = h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          if (!confirm(`Delete group ${name} with its core, functions, subscriptions and deployments?`)) return;
          try {
            await del(path);
            announce(`Group ${name} deleted.`);
            location.hash = "#/groups";
          } catch (exc) {
            if (!(exc instanceof ApiError)) throw exc;
            announce(exc.message, "error");
          }
        },
      },
      "Delete group",
    );

    // core
    let coreBody;
    if (core) {
      const online = coreOnline(core, status);
      coreBody = h(
        "div",
        {},
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Core"), h("dd", {}, core.name, " ", online ? badge("online") : badge("offline")),
          h("dt", {}, "Last activity"), h("dd", {}, timeCell(core.last_seen)),
          h("dt", {}, "Runs"), h("dd", {}, (core.heartbeat && core.heartbeat.deployment) || "no deployment"),
          h("dt", {}, "Endpoints"), h("dd", {}, core.endpoints.map((e) => `${e.host}:${e.port}`).join(", ") || "none reported"),
        ),
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              if (!confirm(`Issue a new identity for ${core.name}? Its current certificate is revoked.`)) return;
              act("New provisioning bundle ready.", async () => {
                notices.core = coreBundle(await post(`/api/v1/cores/${enc(core.name)}/bundle`, {}));
              }, "Core");
            },
          },
          "New provisioning bundle",
        ),
        driftPanel(drift, () => refresh("Core")),
        driftNotice(plan, core.name),
      );
    } else {
      const made = form({
        label: "Create the core",
        submit: "Create core",
        defaultField: "name",
        errorFields: { "core name": "name" },
        fields: [{ name: "name", label: "Core name", required: true, hint: "e.g. pi-1; you get its provisioning bundle" }],
        validate: (v) => ({ name: checkName(v.name, "core name") }),
        onSubmit: async (v) => {
          notices.core = coreBundle(await post("/api/v1/cores", { name: v.name, group: name }));
          announce(`Core ${v.name} created: download its bundle.`);
          await refresh("Core");
        },
      });
      coreBody = made.element;
    }

    // things
    const createThing = form({
      label: "Create a thing in this group",
      title: "Create a thing",
      submit: "Create thing",
      defaultField: "name",
      errorFields: { "thing name": "name", "group name": "name" },
      fields: [{ name: "name", label: "Thing name", required: true, hint: "e.g. bme680-1; you get its certificate bundle" }],
      validate: (v) => ({ name: checkName(v.name, "thing name") }),
      onSubmit: async (v) => {
        notices.things = thingBundle(await post("/api/v1/things", { name: v.name, groups: [name] }));
        announce(`Thing ${v.name} created: download its certificates.`);
        await refresh("Things");
      },
    });
    const others = allThings.map((t) => t.name).filter((t) => !thingNames.includes(t));
    const attach = form({
      label: "Add an existing thing to this group",
      title: "Add an existing thing",
      submit: "Add thing",
      defaultField: "thing",
      errorFields: { "thing name": "thing" },
      fields: [{ name: "thing", label: "Existing thing", required: true, list: others, hint: others.length ? `e.g. ${others.slice(0, 3).join(", ")}` : "no other things yet" }],
      validate: (v) => {
        const bad = checkName(v.thing, "thing name");
        if (bad) return { thing: bad };
        if (thingNames.includes(v.thing)) return { thing: `thing '${v.thing}' is already in group '${name}'` };
        if (!allThings.some((t) => t.name === v.thing)) return { thing: `unknown thing '${v.thing}': create it first` };
        return {};
      },
      onSubmit: async (v) => {
        await post(`${path}/things`, { thing: v.thing });
        announce(`Thing ${v.thing} added to ${name}.`);
        await refresh("Things");
      },
    });

    // functions
    let functionArea;
    const current = editing ? functions.find((f) => f.name === editing) : null;
    if (current) {
      functionArea = functionForm(name, current, () => {
        editing = null;
        refresh("Functions");
      }).element;
    } else {
      editing = null;
      functionArea = functionForm(name, null, () => refresh("Functions")).element;
    }

    // subscriptions
    const refs = [
      ...thingNames.map((t) => `thing:${t}`),
      ...functionNames.map((f) => `function:${f}`),
      "cloud",
      "shadow",
    ];
    const subscribe = form({
      label: "Add a subscription",
      title: "Add a subscription",
      submit: "Add subscription",
      defaultField: "topic",
      errorFields: {
        "thing name": "source",
        "function name": "source",
        thing: (e, v) => (v.target.startsWith("thing:") && e.message.includes(v.target.slice(6)) ? "target" : "source"),
        function: (e, v) => (v.target.startsWith("function:") && e.message.includes(v.target.slice(9)) ? "target" : "source"),
      },
      fields: [
        { name: "source", label: "Source", required: true, list: refs, hint: "thing:<name>, function:<name>, cloud or shadow" },
        { name: "topic", label: "Topic filter", required: true, hint: "e.g. sensors/#" },
        { name: "target", label: "Target", required: true, list: refs, hint: "thing:<name>, function:<name>, cloud or shadow" },
      ],
      validate: (v) => {
        const problems = {
          source: checkRef(v.source, "source", name, thingNames, functionNames),
          topic: checkTopicFilter(v.topic),
          target: checkRef(v.target, "target", name, thingNames, functionNames),
        };
        if (!problems.source && !problems.target && v.source === v.target) problems.target = "source and target must differ";
        return problems;
      },
      onSubmit: async (v) => {
        await post(`${path}/subscriptions`, { source: v.source, topic: v.topic, target: v.target });
        announce(`Subscription ${v.source} ${v.topic} → ${v.target} added.`);
        await refresh("Subscriptions");
      },
    });

    const settings = form({
      label: "Group settings",
      title: "Group settings",
      submit: "Save settings",
      defaultField: "description",
      errorFields: { settings: "open_broker", "settings.sync_shadows": "sync_shadows" },
      fields: [
        { name: "description", label: "Description", value: group.description || "" },
        {
          name: "ca_rotation_days",
          label: "Group CA rotation (days)",
          type: "number",
          value: group.ca_rotation_days ?? "",
          hint: "1-30; empty: the cloud's default",
          attrs: { inputmode: "numeric" },
        },
        {
          name: "open_broker",
          label: "Open broker (devices may publish and subscribe anywhere)",
          type: "checkbox",
          value: Boolean(group.settings && group.settings.open_broker),
          hint: "Off: a device may only use the topics its subscriptions allow.",
        },
        {
          name: "sync_shadows",
          label: "Shadows synced with the cloud",
          value: ((group.settings && group.settings.sync_shadows) || []).join(", "),
          hint: "thing names, comma-separated; takes effect with the next deploy",
        },
      ],
      validate: (v) => {
        const bad = v.sync_shadows.split(",").map((t) => t.trim()).filter(Boolean).find((t) => checkName(t, "thing name"));
        if (bad) return { sync_shadows: checkName(bad, "thing name") };
        if (v.ca_rotation_days === "") return {};
        const days = Number(v.ca_rotation_days);
        return { ca_rotation_days: Number.isInteger(days) && days >= 1 && days <= 30 ? null : "ca_rotation_days must be an integer within 1..30" };
      },
      onSubmit: async (v) => {
        const sync = v.sync_shadows.split(",").map((t) => t.trim()).filter(Boolean);
        const change = { description: v.description, settings: { open_broker: v.open_broker, sync_shadows: sync } };
        if (v.ca_rotation_days !== "") change.ca_rotation_days = Number(v.ca_rotation_days);
        await patch(path, change);
        announce(`Settings of ${name} saved.`);
        await refresh("Settings");
      },
    });

    fill(body,
      group.description ? h("p", {}, group.description) : null,
      h(
        "div",
        { class: "toolbar" },
        deploy,
        link(`#/deployments?group=${enc(name)}`, "Deployment history"),
        remove,
      ),
      section("Core", notices.core || null, coreBody),
      section(
        "Things",
        notices.things || null,
        table(
          `Things of ${name}`,
          [
            { label: "Thing", cell: (t) => link(`#/things?owner=${enc(t.name)}`, t.name) },
            { label: "Connection", cell: (t) => thingStateCell(t.name, states) },
            { label: "Last activity", cell: (t) => thingActivityCell(t.name, states) },
            { label: "Created", cell: (t) => timeCell(t.created_at) },
            {
              label: "Actions",
              cell: (t) =>
                h("button", { type: "button", onclick: () => act(`Thing ${t.name} removed from ${name}.`, () => del(`${path}/things/${enc(t.name)}`), "Things") }, `Remove ${t.name}`),
            },
          ],
          things,
          "No things in this group yet.",
        ),
        h("div", { class: "form-row" }, createThing.element, attach.element),
      ),
      section(
        "Functions",
        table(
          `Functions of ${name}`,
          [
            { label: "Function", cell: (f) => f.name },
            { label: "Version", cell: (f) => String(f.version) },
            {
              label: "State on the core",
              cell: (f) => {
                const state = core && core.heartbeat && (core.heartbeat.functions || {})[f.name];
                return state ? [badge(state, String(state).toLowerCase()), functionError(core.heartbeat, f.name)] : "not deployed";
              },
            },
            { label: "Handler", cell: (f) => h("code", {}, f.handler) },
            { label: "Runtime", cell: (f) => f.runtime },
            { label: "Pinned", cell: (f) => (f.pinned ? "yes" : "no") },
            { label: "Memory", cell: (f) => `${f.memory_mb} MB` },
            { label: "Timeout", cell: (f) => `${f.timeout_s} s` },
            { label: "Code", cell: (f) => h("code", { title: f.artifact.sha256 }, f.artifact.sha256.slice(0, 12)) },
            {
              label: "Actions",
              cell: (f) =>
                h(
                  "span",
                  { class: "row-actions" },
                  h("button", { type: "button", onclick: () => { editing = f.name; refresh("Functions"); } }, `Edit ${f.name}`),
                  h("button", {
                    type: "button",
                    class: "danger",
                    onclick: () => confirm(`Delete function ${f.name}?`) && act(`Function ${f.name} deleted.`, () => del(`${path}/functions/${enc(f.name)}`), "Functions"),
                  }, `Delete ${f.name}`),
                ),
            },
          ],
          functions,
          "No functions yet.",
        ),
        functionArea,
      ),
      section(
        "Subscriptions",
        h(
          "figure",
          { class: "picture", tabindex: "0", role: "region", "aria-label": "Routing picture" },
          routingPicture(name, subscriptions),
          h("figcaption", {}, "Source → topic filter → target"),
          h("p", { class: "scroll-hint" }, "Scroll sideways for the targets →"),
        ),
        table(
          `Subscriptions of ${name}`,
          [
            { label: "Source", cell: (s) => s.source },
            { label: "Topic filter", cell: (s) => h("code", {}, s.topic) },
            { label: "Target", cell: (s) => s.target },
            {
              label: "Actions",
              cell: (s) => h("button", { type: "button", onclick: () => act("Subscription removed.", () => del(`${path}/subscriptions/${s.id}`), "Subscriptions") }, "Remove", h("span", { class: "visually-hidden" }, ` ${s.source} ${s.topic} to ${s.target}`)),
            },
          ],
          subscriptions,
          "No subscriptions: nothing is routed yet.",
        ),
        subscribe.element,
      ),
      section("Settings", settings.element),
    );
  }
  await refresh();
}

// ---- deployments -------------------------------------------------------------------------

function eventTimeline(events) {
  return h(
    "ol",
    { class: "timeline", "aria-label": "Status events" },
    events.map((e, i) => {
      const took = i ? (new Date(e.at) - new Date(events[i - 1].at)) / 1000 : null;
      return h(
        "li",
        { class: `event event-${e.status.toLowerCase()}` },
        statusBadge(e.status),
        " ",
        h("time", { datetime: e.at }, formatTime(e.at)),
        took !== null ? h("span", { class: "muted" }, ` (+${took.toFixed(1)} s)`) : null,
        e.detail ? h("p", { class: "detail" }, e.detail) : null,
      );
    }),
  );
}

async function startDeployment(group, body) {
  try {
    const made = await post(`/api/v1/groups/${enc(group)}/deployments`, body);
    announce(`Deployment ${made.deployment_id} created.`, "info", "deployments");
    location.hash = `#/deployments/${enc(made.deployment_id)}`;
  } catch (exc) {
    if (!(exc instanceof ApiError)) throw exc;
    announce(exc.message, "error");
  }
}

export async function deploymentsPage(ctx) {
  const groups = (await get("/api/v1/groups")).items;
  if (!ctx.alive()) return;
  const withCore = groups.filter((g) => g.core);
  const chosen = ctx.params.get("group") || (withCore[0] || groups[0] || {}).name || "";
  const picker = h(
    "select",
    { id: "deploy-group", onchange: (e) => (location.hash = `#/deployments?group=${enc(e.target.value)}`) },
    groups.map((g) => h("option", { value: g.name, selected: g.name === chosen }, g.core ? `${g.name} (core ${g.core})` : `${g.name} (no core)`)),
  );
  const body = h("div", { class: "page-body" });
  put(ctx.main,
    h("h1", {}, "Deployments"),
    groups.length
      ? h("div", { class: "field inline" }, h("label", { for: "deploy-group" }, "Group"), picker)
      : h("p", { class: "empty" }, "No groups yet: create one on the Groups page."),
    body,
  );
  if (!chosen) return;
  const group = groups.find((g) => g.name === chosen);
  if (!group) {
    put(body, h("p", { class: "form-error", role: "alert" }, `No group '${chosen}'.`));
    return;
  }
  let shown = "";
  async function refresh() {
    const [found, core, plan] = await Promise.all([
      get(`/api/v1/groups/${enc(chosen)}/deployments?limit=50`),
      group.core ? get(`/api/v1/cores/${enc(group.core)}`) : null,
      group.core ? planOf(chosen) : null,
    ]);
    const history = found.items;
    // what the core says it runs (its last heartbeat)
    const running = (core && core.heartbeat && core.heartbeat.deployment) || null;
    if (!ctx.alive()) return;
    const key = JSON.stringify([history, running, plan, core && core.connected]);
    if (key === shown) return refreshTimes(body);
    shown = key;
    render(history, running, plan, core);
  }
  function render(history, running, plan, core) {
    const runs = (d) => (d.deployment_id === running ? [" ", badge("running on the core", "live")] : null);
    const latest = history[0];
    // roll back to a successful deployment older than the one running, with other content
    const at = history.findIndex((d) => d.deployment_id === running);
    const current = at >= 0 ? history[at] : null;
    const previousGood = history
      .slice(at >= 0 ? at + 1 : 1)
      .find((d) => d.status === "Success" && d.deployment_id !== running && !(current && current.restores === d.deployment_id));
    const button = (label, options, onclick, cls) => h("button", { type: "button", class: cls, onclick, ...options }, label);
    const noCore = !group.core;
    fill(body,
      h(
        "div",
        { class: "toolbar" },
        button("Deploy", { disabled: noCore }, () => startDeployment(chosen, { kind: "new" }), "primary"),
        button("Redeploy latest", { disabled: noCore || !latest }, () => startDeployment(chosen, { kind: "redeploy" })),
        button(
          previousGood ? `Roll back to ${shortId(previousGood.deployment_id)}` : "Roll back",
          { disabled: noCore || !previousGood, title: previousGood ? "" : "no earlier successful deployment" },
          () => startDeployment(chosen, { kind: "redeploy", deployment_id: previousGood.deployment_id }),
        ),
        button("Reset core", { disabled: noCore }, () => confirm(`Remove every function and subscription from core ${group.core}?`) && startDeployment(chosen, { kind: "reset" }), "danger"),
      ),
      core ? driftNotice(plan, core.name) : null,
      section(
        `Timeline of core ${group.core || "(none)"}`,
        history.length
          ? h(
              "ol",
              { class: "strip", id: "deploy-timeline", "aria-label": "Deployments, oldest first" },
              [...history].reverse().map((d) =>
                h(
                  "li",
                  { class: `strip-item strip-${d.status.toLowerCase()}` },
                  link(`#/deployments/${enc(d.deployment_id)}`, h("span", { class: "visually-hidden" }, `${d.deployment_id} `), d.status),
                  h("span", { class: "muted" }, ` ${formatTime(d.created_at)}`),
                  runs(d),
                ),
              ),
            )
          : h("p", { class: "empty" }, "No deployments yet."),
      ),
      section(
        "History",
        table(
          `Deployments of ${chosen}`,
          [
            { label: "Deployment", cell: (d) => link(`#/deployments/${enc(d.deployment_id)}`, d.deployment_id) },
            { label: "Kind", cell: (d) => (d.restores ? `${d.kind} (restores ${shortId(d.restores)})` : d.kind) },
            { label: "Created", cell: (d) => timeCell(d.created_at) },
            { label: "Status", cell: (d) => [statusBadge(d.status), runs(d)] },
            { label: "Detail", cell: (d) => d.detail || "" },
            {
              label: "Actions",
              cell: (d) => h("button", { type: "button", onclick: () => startDeployment(chosen, { kind: "redeploy", deployment_id: d.deployment_id }) }, "Redeploy", h("span", { class: "visually-hidden" }, ` ${d.deployment_id}`)),
            },
          ],
          history,
          "No deployments yet.",
        ),
      ),
    );
    // the timeline reads oldest to newest: on a narrow screen, show the newest end
    const strip = body.querySelector("#deploy-timeline");
    if (strip) strip.scrollLeft = strip.scrollWidth;
  }
  await refresh();
  ctx.every(1500, () => refresh().catch(() => {}));
}

export async function deploymentPage(ctx) {
  const id = ctx.parts[1];
  const status = h("p", { class: "deployment-status", role: "status", "aria-live": "polite" });
  const body = h("div", { class: "page-body" });
  const contents = h("div", { class: "page-body" });
  put(ctx.main,
    h("p", { class: "breadcrumb" }, link("#/deployments", "Deployments"), " / ", id),
    h("h1", {}, `Deployment ${shortId(id)}`),
    status,
    body,
    contents,
  );
  deploymentContents(id).then((c) => ctx.alive() && put(contents, c)).catch(() => {});
  let shown = "";
  async function refresh() {
    const d = await get(`/api/v1/deployments/${enc(id)}`);
    const core = FINAL.has(d.status) ? null : await get(`/api/v1/cores/${enc(d.core)}`).catch(() => null);
    if (!ctx.alive()) return;
    const offline = core && core.connected === false;
    const key = JSON.stringify([d, offline]);
    if (key === shown) return;
    shown = key;
    fill(status, "Status: ", statusBadge(d.status), FINAL.has(d.status) ? "" : " (watching…)",
      offline
        ? h("span", { class: "offline-core" }, ` core ${d.core} is offline (last seen ${ago(core.last_seen)}): it gets this deployment when it connects`)
        : null,
    );
    status.dataset.status = d.status;
    const failed = d.status === "Failure" || d.status === "RolledBack";
    fill(body,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Deployment"), h("dd", {}, h("code", {}, d.deployment_id)),
        h("dt", {}, "Group"), h("dd", {}, link(`#/groups/${enc(d.group)}`, d.group)),
        h("dt", {}, "Core"), h("dd", {}, d.core),
        h("dt", {}, "Kind"), h("dd", {}, d.kind),
        d.restores ? [h("dt", {}, "Restores"), h("dd", {}, link(`#/deployments/${enc(d.restores)}`, d.restores))] : null,
        h("dt", {}, "Created"), h("dd", {}, formatTime(d.created_at)),
        h("dt", {}, "Updated"), h("dd", {}, formatTime(d.updated_at)),
      ),
      failed
        ? h("div", { class: "error-detail", role: "alert" }, h("h2", {}, "Error detail"), h("pre", {}, d.detail || "(the core gave no detail)"))
        : d.detail
          ? h("p", { class: "detail" }, d.detail)
          : null,
      section("Status timeline", eventTimeline(d.events)),
      h(
        "div",
        { class: "toolbar" },
        h("button", { type: "button", onclick: () => startDeployment(d.group, { kind: "redeploy", deployment_id: d.deployment_id }) }, "Redeploy this deployment"),
        link(`#/deployments?group=${enc(d.group)}`, "History of this group"),
      ),
    );
    if (FINAL.has(d.status)) announce(`Deployment ${d.status}.`, d.status === "Success" ? "info" : "error");
  }
  await refresh();
  ctx.every(1000, () => {
    if (!FINAL.has(status.dataset.status)) refresh().catch(() => {});
  });
}

// ---- things and certificates -------------------------------------------------------------

function expiryCell(cert) {
  const days = (new Date(cert.not_after) - Date.now()) / 86400000;
  const when = new Date(cert.not_after).toLocaleDateString();
  if (days < 0) return h("span", { class: "expired" }, `expired ${when}`);
  const text = `${when} (in ${Math.floor(days)} days)`;
  // a core renews its short-lived server certificate itself; identities are renewed by hand
  const warnDays = cert.kind === "core-server" ? 2 : 30;
  return days < warnDays ? h("span", { class: "expiring" }, text) : text;
}

export async function thingsPage(ctx) {
  const owner = ctx.params.get("owner") || "";
  const kind = ctx.params.get("kind") || "";
  const body = h("div", { class: "page-body" });
  const notices = {};
  put(ctx.main, h("h1", {}, "Things and certificates"), body);

  async function refresh(focus) {
    const [things, certs, groups, cores, status] = await Promise.all([
      get("/api/v1/things"),
      get(query("/api/v1/certificates", { owner, kind })),
      get("/api/v1/groups"),
      get("/api/v1/cores"),
      get("/api/v1/status"),
    ]);
    if (!ctx.alive()) return;
    render(things.items, certs.items, groups.items, thingStates(cores.items, status));
    if (focus) focusHeading(body, focus);
  }

  async function refreshThings() {
    const [cores, status] = await Promise.all([get("/api/v1/cores"), get("/api/v1/status")]);
    if (ctx.alive()) updateThingCells(body, thingStates(cores.items, status));
  }
  ctx.every(1000, () => refreshThings().catch(() => {}));

  async function act(message, fn, focus) {
    try {
      await fn();
      announce(message);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      announce(exc.message, "error");
    }
    await refresh(focus);
  }

  function render(things, certs, groups, states) {
    const create = form({
      label: "Create a thing",
      title: "Create a thing",
      submit: "Create thing",
      defaultField: "name",
      errorFields: { "thing name": "name", "group name": "group", groups: "group" },
      fields: [
        { name: "name", label: "Thing name", required: true, hint: "you get its certificate bundle" },
        { name: "group", label: "Group", type: "select", value: "", options: [["", "(no group)"], ...groups.map((g) => [g.name, g.name])] },
      ],
      validate: (v) => ({ name: checkName(v.name, "thing name") }),
      onSubmit: async (v) => {
        notices.things = thingBundle(await post("/api/v1/things", { name: v.name, groups: v.group ? [v.group] : [] }));
        announce(`Thing ${v.name} created: download its certificates.`);
        await refresh("Things");
      },
    });
    const filter = h(
      "form",
      {
        class: "filters",
        "aria-label": "Filter certificates",
        onsubmit: (e) => {
          e.preventDefault();
          const data = new FormData(e.target);
          location.hash = query("#/things", { owner: data.get("owner").trim(), kind: data.get("kind") });
        },
      },
      h("div", { class: "field inline" }, h("label", { for: "cert-owner" }, "Owner"), h("input", { id: "cert-owner", name: "owner", value: owner, autocomplete: "off" })),
      h(
        "div",
        { class: "field inline" },
        h("label", { for: "cert-kind" }, "Kind"),
        h("select", { id: "cert-kind", name: "kind" }, [["", "all"], ["thing", "thing"], ["core", "core"], ["core-server", "core-server"]].map(([v, t]) => h("option", { value: v, selected: v === kind }, t))),
      ),
      h("button", { type: "submit" }, "Filter"),
    );
    const certsOf = (name) => certs.filter((c) => c.owner === name && c.status === "active");
    fill(body,
      section(
        "Things",
        notices.things || null,
        table(
          "Things",
          [
            { label: "Thing", cell: (t) => link(`#/things/${enc(t.name)}`, t.name) },
            { label: "Groups", cell: (t) => (t.groups.length ? t.groups.map((g, i) => [i ? ", " : "", link(`#/groups/${enc(g)}`, g)]) : "none") },
            { label: "Connection", cell: (t) => thingStateCell(t.name, states) },
            { label: "Last activity", cell: (t) => thingActivityCell(t.name, states) },
            { label: "Created", cell: (t) => timeCell(t.created_at) },
            {
              label: "Next expiry",
              cell: (t) => {
                const active = certsOf(t.name).sort((a, b) => (a.not_after < b.not_after ? -1 : 1));
                if (active.length) return expiryCell(active[0]);
                if (owner || kind) return "–";
                const revoked = certs.filter((c) => c.owner === t.name && c.status === "revoked");
                return revoked.length ? badge("revoked") : "no certificate";
              },
            },
            {
              label: "Actions",
              cell: (t) =>
                h(
                  "span",
                  { class: "row-actions" },
                  h("button", {
                    type: "button",
                    onclick: () => act(`New certificate for ${t.name}: download it.`, async () => {
                      notices.things = thingBundle(await post(`/api/v1/things/${enc(t.name)}/certificates`, {}));
                    }, "Things"),
                  }, `New certificate for ${t.name}`),
                  h("button", {
                    type: "button",
                    class: "danger",
                    onclick: () => confirm(`Revoke every certificate of ${t.name}?`) && act(`Certificates of ${t.name} revoked.`, () => post(`/api/v1/things/${enc(t.name)}/revoke`, {}), "Things"),
                  }, `Revoke ${t.name}`),
                  h("button", {
                    type: "button",
                    class: "danger",
                    onclick: () => confirm(`Delete ${t.name} and revoke its certificates?`) && act(`Thing ${t.name} deleted.`, () => del(`/api/v1/things/${enc(t.name)}`), "Things"),
                  }, `Delete ${t.name}`),
                ),
            },
          ],
          owner ? things.filter((t) => t.name === owner) : things,
          "No things yet.",
        ),
        create.element,
      ),
      section(
        "Certificates",
        filter,
        table(
          "Certificates",
          [
            { label: "Owner", cell: (c) => c.owner },
            { label: "Kind", cell: (c) => c.kind },
            { label: "Fingerprint", cell: (c) => h("code", { title: c.fingerprint }, c.fingerprint.slice(0, 16)) },
            { label: "Issued", cell: (c) => formatTime(c.issued_at) },
            { label: "Expires", cell: (c) => expiryCell(c) },
            { label: "Status", cell: (c) => statusBadge(c.status) },
            {
              label: "Actions",
              cell: (c) =>
                c.status === "active"
                  ? h("button", {
                      type: "button",
                      class: "danger",
                      onclick: () => confirm(`Revoke certificate ${c.fingerprint.slice(0, 16)} of ${c.owner}?`) && act(`Certificate of ${c.owner} revoked.`, () => post(`/api/v1/certificates/${c.fingerprint}/revoke`, {}), "Certificates"),
                    }, "Revoke", h("span", { class: "visually-hidden" }, ` certificate ${c.fingerprint.slice(0, 16)} of ${c.owner}`))
                  : `revoked ${formatTime(c.revoked_at)}`,
            },
          ],
          certs,
          "No certificates match.",
        ),
      ),
    );
  }
  await refresh();
}
