// The REST API from the browser: the token in sessionStorage, JSON errors as ApiError,
// and the live telemetry stream read with fetch() (EventSource cannot send a header).
// The token goes only in the Authorization header: the cloud refuses it in a URL, which
// proxies and browser history keep (EventSource clients use a single-use stream ticket).

const TOKEN_KEY = "hedgerow.token";

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized = () => {};

export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function headers(token, extra) {
  return { authorization: `Bearer ${token}`, ...extra };
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let field = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      field = body.error.field || null;
    }
  } catch (_) {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, field);
}

// One API call. `body` is sent as JSON unless it is a Blob (uploaded as is).
export async function api(method, path, body, options = {}) {
  const token = options.token ?? getToken();
  if (!token) {
    onUnauthorized("log in first");
    throw new ApiError(401, "not logged in");
  }
  const init = { method, headers: headers(token), signal: options.signal };
  if (body instanceof Blob) {
    init.body = body;
    init.headers["content-type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, `cannot reach the cloud: ${exc.message}`);
  }
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && !options.token) onUnauthorized(error.message);
    throw error;
  }
  return response.json();
}

export const get = (path, options) => api("GET", path, undefined, options);
export const post = (path, body, options) => api("POST", path, body ?? {}, options);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

export function query(path, params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

export const enc = encodeURIComponent;

// Read the server-sent events of /api/v1/messages/stream until `signal` aborts.
// Calls onOpen() once the stream answered, onMessage(json) per message.
export function streamMessages(filter, afterId, handlers) {
  return streamEvents("/api/v1/messages/stream", { filter, after_id: afterId }, handlers);
}

// Any of the cloud's live views (telemetry, logs) read the same way.
export async function streamEvents(path, params, { signal, onOpen, onMessage }) {
  const token = getToken();
  const response = await fetch(query(path, params), {
    headers: headers(token, { accept: "text/event-stream" }),
    signal,
  });
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401) onUnauthorized(error.message);
    throw error;
  }
  onOpen();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) onMessage(JSON.parse(data));
    }
  }
}
