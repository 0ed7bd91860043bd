// Releases (#/releases): the Hedgerow releases uploaded for over-the-air updates of cores
// (version, size, wheels, when) and which cores run which version (from their heartbeats).
// Refreshes every 2 s; redrawn only when what it shows changed.

import { get } from "./api.js";
import { fill, h, put, section, table, timeCell } from "./dom.js";

export function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

// version -> names of the cores whose last heartbeat says they run it ("unknown": none yet)
export function coresByVersion(cores) {
  const found = new Map();
  for (const core of cores) {
    const version = (core.heartbeat && core.heartbeat.version) || "unknown";
    if (!found.has(version)) found.set(version, []);
    found.get(version).push(core.name);
  }
  for (const names of found.values()) names.sort();
  return found;
}

function coreList(names) {
  if (!names || !names.length) return "none";
  return h("ul", { class: "plain" }, names.map((name) => h("li", {}, name)));
}

export async function releasesPage(ctx) {
  const body = h("div", { id: "releases", class: "page-body" });
  put(ctx.main,
    h("h1", {}, "Releases"),
    h("p", { class: "muted" },
      "Upload one with hedgerow cloud release upload hedgerow-X.whl --wheelhouse DIR; " +
      "update a group's core with hedgerow cloud deploy --group G --core-version X."),
    body,
  );
  let shown = "";
  async function refresh() {
    const [releases, cores] = await Promise.all([get("/api/v1/releases"), get("/api/v1/cores")]);
    if (!ctx.alive()) return;
    const running = coresByVersion(cores.items);
    const key = JSON.stringify([releases.items, [...running.entries()]]);
    if (key === shown) return;
    shown = key;
    const uploaded = new Set(releases.items.map((r) => r.version));
    const versions = [...running.keys()].sort();
    fill(body,
      table("Releases, newest first", [
        { label: "Version", cell: (r) => r.version },
        { label: "Size", cell: (r) => formatBytes(r.size) },
        { label: "Wheels", cell: (r) => String(r.wheels.length) },
        { label: "Uploaded", cell: (r) => timeCell(r.created_at) },
        { label: "Cores on it", cell: (r) => coreList(running.get(r.version)) },
      ], releases.items, "No releases uploaded: cores run what they were installed with."),
      section("Cores by version", table("Cores by the version they run", [
        { label: "Version", cell: (v) => v },
        { label: "Release", cell: (v) => (v === "unknown" ? "no heartbeat yet" : uploaded.has(v) ? "uploaded" : "not uploaded here") },
        { label: "Cores", cell: (v) => String(running.get(v).length) },
        { label: "Which", cell: (v) => coreList(running.get(v)) },
      ], versions, "No cores yet.")),
    );
  }
  await refresh();
  ctx.every(2000, refresh);
}
