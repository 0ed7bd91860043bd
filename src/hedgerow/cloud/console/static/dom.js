// Small DOM helpers: element builders, formatting, downloads, the status line.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(key, "");
    } else {
      element.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// h("button", {class: "x", onclick: fn}, "text", child, [more])
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Append children (nested arrays, strings, nodes; null and false are skipped).
export function put(element, ...children) {
  return build(element, {}, children);
}

// Replace the children of element. Focus inside it stays on the "same" control (same
// tag, text and link) so that pages refreshing themselves do not lose a keyboard user.
export function fill(element, ...children) {
  const active = document.activeElement;
  const had = active && active !== element && element.contains(active);
  const key = had ? [active.tagName, active.textContent, active.getAttribute("href")] : null;
  element.replaceChildren();
  put(element, ...children);
  if (key) {
    const match = [...element.querySelectorAll(key[0])].find(
      (node) => node.textContent === key[1] && node.getAttribute("href") === key[2],
    );
    if (match) match.focus({ preventScroll: true });
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export function formatTime(iso) {
  if (!iso) return "never";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { hour12: false });
}

export function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function timeCell(iso) {
  return h("time", { datetime: iso || "", title: iso ? formatTime(iso) : "" }, ago(iso));
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind || String(text).toLowerCase()}` }, text);
}

export function statusBadge(status) {
  return badge(status, String(status).toLowerCase());
}

// A table: columns = [{label, cell(row) -> node|string}], with a caption for screen readers.
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.cell(row)))),
        ),
      ),
    ),
  );
}

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), children);
}

// Offer bytes as a file download (an <a download> the user may also click again).
export function downloadLink(name, blob, label) {
  const url = URL.createObjectURL(blob);
  return h("a", { class: "button download", href: url, download: name }, label || `Download ${name}`);
}

export function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

let statusTimer = null;

function pageOf(hash) {
  return (hash.slice(1).split("?")[0].split("/").filter(Boolean)[0]) || "overview";
}

// The polite status line at the top of the page (screen readers announce it). A line
// belongs to the page it was said on (`page`: the page it is meant for, when a message is
// said just before moving there, e.g. "Logged in."); another page never shows it.
export function announce(message, kind = "info", page = pageOf(location.hash)) {
  const line = document.getElementById("status-line");
  if (!line) return;
  line.textContent = message;
  line.className = `status-line status-${kind}`;
  line.dataset.page = page;
  clearTimeout(statusTimer);
  if (kind !== "error") statusTimer = setTimeout(() => (line.textContent = ""), 6000);
}

// On navigation: the status line of another page is cleared.
export function leavePageStatus(hash) {
  const line = document.getElementById("status-line");
  if (!line || line.dataset.page === pageOf(hash)) return;
  clearTimeout(statusTimer);
  line.textContent = "";
  line.className = "status-line";
  delete line.dataset.page;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const area = h("textarea", { class: "visually-hidden", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
