// The live topic view: subscribe to a filter, watch messages arrive (server-sent events
// read with fetch), pause, clear, copy. Rendering is rate-limited: at most MAX_PER_FRAME
// messages are drawn per animation frame and frames are at least MIN_FRAME_MS apart;
// what is not drawn is counted as skipped, so a busy topic never freezes the page.

import { ApiError, query, streamMessages } from "./api.js";
import { announce, badge, clear, copyText, fill, h, put } from "./dom.js";
import { checkTopicFilter, form } from "./forms.js";

export const MAX_ROWS = 200;
export const MAX_PER_FRAME = 20;
export const MIN_FRAME_MS = 100;
const MAX_PAYLOAD_SHOWN = 4000;
const RETRY_MAX_MS = 10000;

function payloadText(message) {
  if (message.payload === undefined) {
    const size = Math.floor((message.payload_base64.length * 3) / 4);
    return `(binary, about ${size} bytes)`;
  }
  const text = message.payload;
  if (text.length <= MAX_PAYLOAD_SHOWN) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return text;
    }
  }
  return `${text.slice(0, MAX_PAYLOAD_SHOWN)}… (${text.length} characters)`;
}

function clock(ts) {
  const date = new Date(ts * 1000);
  return `${date.toLocaleTimeString(undefined, { hour12: false })}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

function row(message) {
  return h(
    "li",
    { class: "message", "data-id": String(message.id) },
    h(
      "div",
      { class: "meta" },
      h("time", { datetime: message.time }, clock(message.ts)),
      " ",
      h("code", { class: "topic" }, message.topic),
      message.core ? h("span", { class: "muted" }, ` from ${message.core}`) : null,
    ),
    h("pre", { class: "payload" }, payloadText(message)),
  );
}

export async function livePage(ctx) {
  const state = {
    pending: [],
    shown: [],
    received: 0,
    skipped: 0,
    paused: false,
    lastId: null,
    frame: 0,
    lastFrame: 0,
    controller: null,
  };
  const counter = (id, label) => {
    const value = h("span", { id, class: "counter-value" }, "0");
    return [value, h("div", { class: "counter" }, value, h("span", { class: "counter-label" }, label))];
  };
  const [received, receivedBox] = counter("live-received", "received");
  const [shownCount, shownBox] = counter("live-shown", "shown");
  const [skipped, skippedBox] = counter("live-skipped", "skipped (too fast to draw)");
  const [waiting, waitingBox] = counter("live-waiting", "waiting (paused)");
  const streamState = h("span", { id: "live-state" }, badge("not subscribed", "idle"));
  const list = h("ol", { id: "live-messages", class: "messages", reversed: true });
  const listBox = h(
    "div",
    { class: "messages-box", tabindex: "0", role: "region", "aria-label": "Messages, newest first" },
    list,
  );

  function updateCounters() {
    received.textContent = String(state.received);
    shownCount.textContent = String(state.shown.length);
    skipped.textContent = String(state.skipped);
    waiting.textContent = String(state.paused ? state.pending.length : 0);
  }

  function setState(text, kind) {
    fill(streamState, badge(text, kind));
  }

  function draw(now) {
    state.frame = 0;
    if (state.paused || !ctx.alive()) return;
    if (now - state.lastFrame < MIN_FRAME_MS) {
      state.frame = requestAnimationFrame(draw);
      return;
    }
    state.lastFrame = now;
    let batch = state.pending.splice(0);
    if (batch.length > MAX_PER_FRAME) {
      state.skipped += batch.length - MAX_PER_FRAME;
      batch = batch.slice(-MAX_PER_FRAME);
    }
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(row(batch[i]));
    list.prepend(fragment);
    state.shown.push(...batch);
    while (state.shown.length > MAX_ROWS) {
      state.shown.shift();
      list.lastElementChild.remove();
    }
    updateCounters();
  }

  function schedule() {
    if (!state.paused && !state.frame) state.frame = requestAnimationFrame(draw);
  }

  function onMessage(message) {
    state.received += 1;
    state.lastId = message.id;
    state.pending.push(message);
    if (state.pending.length > MAX_ROWS) {
      state.skipped += state.pending.length - MAX_ROWS;
      state.pending.splice(0, state.pending.length - MAX_ROWS);
    }
    if (state.paused) updateCounters();
    schedule();
  }

  async function run(filter, controller, subscribe) {
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        setState("connecting", "pending");
        await streamMessages(filter, state.lastId, {
          signal: controller.signal,
          onOpen: () => {
            delay = 500;
            setState(`live: ${filter}`, "live");
          },
          // a message of the previous filter still in flight is not this filter's
          onMessage: (message) => {
            if (!controller.signal.aborted) onMessage(message);
          },
        });
      } catch (exc) {
        if (controller.signal.aborted) return;
        if (exc instanceof ApiError && exc.status >= 400 && exc.status < 500) {
          setState("stopped", "failure");
          if (exc.status !== 401) subscribe.setError("filter", exc.message);
          return;
        }
        setState(`reconnecting: ${exc.message}`, "pending");
      }
      if (controller.signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
    state.controller = null;
  }

  // What a filter showed and counted: gone when another filter is subscribed.
  function reset() {
    state.pending.length = 0;
    state.shown.length = 0;
    state.received = 0;
    state.skipped = 0;
    clear(list);
    updateCounters();
  }

  const subscribe = form({
    label: "Subscribe to a topic filter",
    submit: "Subscribe",
    defaultField: "filter",
    errorFields: { topic: "filter" },
    fields: [
      {
        name: "filter",
        label: "Topic filter",
        required: true,
        value: ctx.params.get("filter") || "",
        hint: "MQTT wildcards: + one level, # the rest; e.g. sensors/# or corrected/+",
        attrs: { placeholder: "sensors/#" },
      },
    ],
    validate: (v) => ({ filter: checkTopicFilter(v.filter) }),
    onSubmit: async (v) => {
      stop();
      reset();
      state.lastId = null;
      const controller = new AbortController();
      state.controller = controller;
      run(v.filter, controller, subscribe);
      announce(`Subscribed to ${v.filter}.`);
    },
  });

  const pause = h("button", { type: "button", id: "live-pause", "aria-pressed": "false" }, "Pause");
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.textContent = state.paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(state.paused));
    announce(state.paused ? "Paused: new messages wait." : "Resumed.");
    updateCounters();
    schedule();
  });
  const clearButton = h("button", {
    type: "button",
    id: "live-clear",
    onclick: () => {
      reset();
      announce("Cleared.");
    },
  }, "Clear");
  const copyButton = h("button", {
    type: "button",
    id: "live-copy",
    onclick: async () => {
      const text = state.shown.map((m) => JSON.stringify(m)).join("\n");
      const ok = await copyText(text);
      announce(ok ? `Copied ${state.shown.length} messages.` : "Copying failed: select the messages instead.", ok ? "info" : "error");
    },
  }, "Copy");
  const stopButton = h("button", {
    type: "button",
    onclick: () => {
      stop();
      setState("not subscribed", "idle");
    },
  }, "Unsubscribe");

  put(ctx.main,
    h("h1", {}, "Live topic view"),
    h("p", { class: "muted" }, "Messages stored by the cloud as they arrive from cores."),
    subscribe.element,
    h("div", { class: "toolbar" }, pause, clearButton, copyButton, stopButton, streamState),
    h("div", { class: "counters", "aria-label": "Counters" }, receivedBox, shownBox, skippedBox, waitingBox),
    listBox,
  );
  ctx.onLeave(() => {
    stop();
    if (state.frame) cancelAnimationFrame(state.frame);
  });
  if (ctx.params.get("filter")) subscribe.element.requestSubmit();
  // the page's address follows the filter, so it can be bookmarked
  subscribe.element.addEventListener("submit", () => {
    const filter = subscribe.values().filter;
    if (!checkTopicFilter(filter)) history.replaceState(null, "", query("#/live", { filter }));
  });
}
