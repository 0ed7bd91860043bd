// Charts: numeric fields of a topic over time from the telemetry store, drawn as inline SVG.

import { get, query } from "./api.js";
import { clear, formatTime, h, put, svg } from "./dom.js";
import { checkTopicFilter, form } from "./forms.js";

const WIDTH = 800;
const HEIGHT = 320;
const MARGIN = { left: 60, right: 16, top: 16, bottom: 44 };
const MAX_SERIES = 8;
export const MAX_MESSAGES = 5000;
const MAX_DOTS = 600;
export const WINDOWS = [
  ["300", "last 5 minutes"],
  ["900", "last 15 minutes"],
  ["3600", "last hour"],
  ["21600", "last 6 hours"],
  ["86400", "last 24 hours"],
  ["604800", "last 7 days"],
];

// The number at a dotted path ("a.b.c") of a JSON document, or null.
export function numberAt(document, path) {
  let value = document;
  for (const key of path.split(".")) {
    if (value === null || typeof value !== "object") return null;
    value = value[key];
  }
  if (typeof value === "string" && value.trim() !== "") value = Number(value);
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

// messages -> [{label, points: [[ts, value]]}] per (topic, field); and how many had no number.
export function seriesOf(messages, fields) {
  const byKey = new Map();
  let missing = 0;
  for (const message of messages) {
    let document = null;
    try {
      document = JSON.parse(message.payload ?? "null");
    } catch (_) {
      document = null;
    }
    for (const field of fields) {
      const value = document === null ? null : numberAt(document, field);
      if (value === null) {
        missing += 1;
        continue;
      }
      const key = `${message.topic} · ${field}`;
      if (!byKey.has(key)) {
        if (byKey.size >= MAX_SERIES) continue;
        byKey.set(key, { label: key, points: [] });
      }
      byKey.get(key).points.push([message.ts, value]);
    }
  }
  const series = [...byKey.values()];
  for (const s of series) s.points.sort((a, b) => a[0] - b[0]);
  return { series, missing };
}

function niceStep(range, count) {
  const raw = range / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

function format(value, step) {
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return value.toFixed(Math.min(decimals, 6));
}

function timeLabel(ts, span) {
  const date = new Date(ts * 1000);
  if (span > 86400) return date.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + date.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit" });
  const clock = date.toLocaleTimeString(undefined, { hour12: false });
  return span < 30 ? `${clock}.${Math.floor(date.getMilliseconds() / 100)}` : clock;
}

// The chart as an <svg>: axes with ticks, one line and its points per series.
// `width` follows the space on screen so that labels stay readable on a phone.
export function renderChart(series, from, to, width = WIDTH) {
  const xTickCount = width < 500 ? 2 : 4;
  const all = series.flatMap((s) => s.points);
  let low = Math.min(...all.map((p) => p[1]));
  let high = Math.max(...all.map((p) => p[1]));
  if (low === high) {
    low -= 1;
    high += 1;
  }
  const step = niceStep(high - low, 5);
  low = Math.floor(low / step) * step;
  high = Math.ceil(high / step) * step;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (ts) => MARGIN.left + ((ts - from) / Math.max(to - from, 1e-9)) * plotW;
  const y = (v) => MARGIN.top + plotH - ((v - low) / (high - low)) * plotH;
  const yTicks = [];
  for (let v = low; v <= high + step / 2; v += step) {
    yTicks.push(
      svg("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "tick", x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v, step)),
    );
  }
  const xTicks = [];
  for (let i = 0; i <= xTickCount; i++) {
    const ts = from + ((to - from) * i) / xTickCount;
    const anchor = i === 0 ? "start" : i === xTickCount ? "end" : "middle";
    xTicks.push(
      svg("line", { class: "grid", x1: x(ts), x2: x(ts), y1: MARGIN.top, y2: MARGIN.top + plotH }),
      svg("text", { class: "tick", x: x(ts), y: HEIGHT - MARGIN.bottom + 18, "text-anchor": anchor }, timeLabel(ts, to - from)),
    );
  }
  const dots = all.length <= MAX_DOTS;
  const lines = series.map((s, index) =>
    svg(
      "g",
      { class: `series series-${index}`, "data-label": s.label },
      svg("polyline", { class: "line", points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }),
      dots
        ? s.points.map(([t, v]) =>
            svg("circle", { class: "point", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3 }, svg("title", {}, `${s.label}: ${v} at ${formatTime(new Date(t * 1000).toISOString())}`)),
          )
        : null,
    ),
  );
  const summary = series
    .map((s) => {
      const values = s.points.map((p) => p[1]);
      return `${s.label}: ${values.length} points from ${Math.min(...values)} to ${Math.max(...values)}, last ${values[values.length - 1]}`;
    })
    .join("; ");
  return svg(
    "svg",
    { class: "chart", viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": `Chart. ${summary}` },
    svg("rect", { class: "plot", x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }),
    yTicks,
    xTicks,
    lines,
  );
}

export function legend(series) {
  return h(
    "ul",
    { class: "legend", "aria-label": "Series" },
    series.map((s, i) => h("li", { class: `series-${i}` }, h("span", { class: "swatch", "aria-hidden": "true" }), `${s.label} (${s.points.length})`)),
  );
}

function dataTable(series) {
  return h(
    "details",
    {},
    h("summary", {}, "Data as a table"),
    series.map((s) =>
      h(
        "div",
        { class: "table-wrap", tabindex: "0", role: "region", "aria-label": s.label },
        h(
          "table",
          {},
          h("caption", {}, `${s.label} (last 100 points)`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Value"))),
          h("tbody", {}, s.points.slice(-100).map(([t, v]) => h("tr", {}, h("td", { "data-label": "Time" }, formatTime(new Date(t * 1000).toISOString())), h("td", { "data-label": "Value" }, String(v))))),
        ),
      ),
    ),
  );
}

export async function chartsPage(ctx) {
  const result = h("div", { class: "chart-area", "aria-live": "polite" });
  let current = null;
  let drawn = null;
  const chartFor = (series, first, last) =>
    renderChart(series, first, last, Math.round(Math.min(WIDTH, Math.max(320, result.clientWidth - 20))));
  // a rotated phone or a resized window gets a chart drawn for its width
  const resized = () => {
    if (drawn) drawn.figure.firstElementChild.replaceWith(chartFor(drawn.series, drawn.first, drawn.last));
  };
  window.addEventListener("resize", resized);
  ctx.onLeave(() => window.removeEventListener("resize", resized));

  async function draw(v) {
    const fields = v.fields.split(",").map((f) => f.trim()).filter(Boolean);
    const to = Date.now() / 1000;
    const from = to - Number(v.window);
    const found = await get(query("/api/v1/messages", { filter: v.filter, since: from.toFixed(3), limit: MAX_MESSAGES, order: "desc" }));
    if (!ctx.alive()) return;
    const messages = found.items.reverse();
    const { series, missing } = seriesOf(messages, fields);
    clear(result);
    drawn = null;
    if (!series.length) {
      put(result,
        h("p", { class: "empty", id: "chart-empty" }, `No numeric ${fields.join(" or ")} in ${messages.length} messages on ${v.filter} in this window.`),
      );
      return;
    }
    const points = series.reduce((n, s) => n + s.points.length, 0);
    // the time axis fits the data found in the window
    const times = series.flatMap((s) => s.points.map((p) => p[0]));
    const first = Math.min(...times);
    const last = Math.max(...times, first + 1);
    const figure = h("figure", { class: "chart-figure" }, chartFor(series, first, last), h("figcaption", {}, legend(series)));
    drawn = { figure, series, first, last };
    put(result,
      figure,
      h(
        "p",
        { class: "muted", id: "chart-summary" },
        `${points} points from ${messages.length} messages` +
          (missing ? `; ${missing} values were missing or not numbers` : "") +
          (found.count >= MAX_MESSAGES ? `; only the newest ${MAX_MESSAGES} messages are drawn` : "") +
          `. Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}.`,
      ),
      dataTable(series),
    );
  }

  const chartForm = form({
    label: "Chart a numeric field",
    submit: "Show chart",
    defaultField: "filter",
    errorFields: { topic: "filter", since: "window" },
    fields: [
      { name: "filter", label: "Topic filter", required: true, value: ctx.params.get("filter") || "sensors/#", hint: "e.g. sensors/bme680-1 or corrected/#" },
      { name: "fields", label: "Fields", required: true, value: ctx.params.get("fields") || "temperature", hint: "comma-separated JSON fields, e.g. temperature, raw_temperature" },
      { name: "window", label: "Time window", type: "select", value: ctx.params.get("window") || "900", options: WINDOWS },
      { name: "auto", label: "Refresh every 5 s", type: "checkbox", value: true },
    ],
    validate: (v) => ({
      filter: checkTopicFilter(v.filter),
      fields: v.fields.split(",").some((f) => f.trim()) ? null : "name at least one field",
    }),
    onSubmit: async (v) => {
      current = v;
      await draw(v);
      history.replaceState(null, "", query("#/charts", { filter: v.filter, fields: v.fields, window: v.window }));
    },
  });

  put(ctx.main,
    h("h1", {}, "Charts"),
    h("p", { class: "muted" }, "A numeric field of the stored telemetry over time, e.g. raw vs corrected temperature."),
    chartForm.element,
    result,
  );
  ctx.every(5000, () => {
    if (current && chartForm.values().auto) draw(current).catch(() => {});
  });
  if (ctx.params.get("filter")) chartForm.element.requestSubmit();
}
