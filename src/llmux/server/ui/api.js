// The server API the UI uses: the model list, the conversations extension
// (docs/conversations.md) and the Batch API (docs/batch.md). URLs are relative to the page (/ui/ -> ../api/...), so the
// UI also works behind a reverse proxy that adds a path prefix.

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const url = (path) => new URL(`../${path}`, document.baseURI).toString();

// With access control on, the page is signed in by an HttpOnly session cookie; every
// change also sends the session's CSRF token, which the server set in llmux_csrf.
function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("llmux_csrf="));
  return found ? decodeURIComponent(found.slice("llmux_csrf=".length)) : "";
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** Where the page goes when the server wants a login (401). */
export const LOGIN_PAGE = "login.html";

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    const err = body?.error;
    if (typeof err === "string") message = err;
    else if (err && typeof err.message === "string") message = err.message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(message, response.status);
}

async function request(method, path, { body, signal } = {}) {
  let response;
  try {
    const headers = body === undefined ? {} : { "Content-Type": "application/json" };
    if (!SAFE.has(method)) headers["X-CSRF-Token"] = csrfToken();
    response = await fetch(url(path), {
      method,
      signal,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("cannot reach the llmux server; is it still running?");
  }
  if (response.status === 401 && !path.startsWith("auth/")) {
    // signed out (or the session ended): to the login page, back here afterwards
    location.assign(`${LOGIN_PAGE}?next=${encodeURIComponent(location.pathname + location.hash)}`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function json(method, path, options) {
  const response = await request(method, path, options);
  return response.status === 204 ? null : response.json();
}

const conv = (id) => `api/conversations/${encodeURIComponent(id)}`;

export const api = {
  version: async () => (await json("GET", "api/version")).version ?? "",
  // access control (docs/security.md)
  me: () => json("GET", "auth/me"),
  login: (name, password) => json("POST", "auth/login", { body: { name, password } }),
  logout: () => json("POST", "auth/logout"),
  keys: async () => (await json("GET", "api/keys")).keys ?? [],
  createKey: (fields) => json("POST", "api/keys", { body: fields }),
  revokeKey: (id) => json("DELETE", `api/keys/${encodeURIComponent(id)}`),
  users: async () => (await json("GET", "admin/users")).users ?? [],
  allKeys: async () => (await json("GET", "admin/keys")).keys ?? [],
  models: async () => (await json("GET", "api/tags")).models ?? [],
  // quotas (docs/quotas.md): usage, and for admins limits and budgets
  usageUrl: (params, all) => url(`${all ? "admin" : "api"}/usage?${params}`),
  usage: (params, all) => json("GET", `${all ? "admin" : "api"}/usage?${params}`),
  limits: () => json("GET", "admin/limits"),
  setLimits: (scope, fields) => json("PUT", `admin/limits/${encodeURIComponent(scope)}`, { body: fields }),
  removeLimits: (scope) => json("DELETE", `admin/limits/${encodeURIComponent(scope)}`),
  budgets: () => json("GET", "admin/budgets"),
  setBudget: (fields) => json("POST", "admin/budgets", { body: fields }),
  removeBudget: (id) => json("DELETE", `admin/budgets/${encodeURIComponent(id)}`),
  // the Batch API (docs/batch.md): the caller's batches, newest first, and their files
  batches: (after = "") => {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after", after);
    return json("GET", `v1/batches?${query}`);
  },
  cancelBatch: (id) => json("POST", `v1/batches/${encodeURIComponent(id)}/cancel`),
  fileUrl: (id) => url(`v1/files/${encodeURIComponent(id)}/content`),
  list: async (q = "", { signal } = {}) => {
    const query = new URLSearchParams({ limit: "100" });
    if (q) query.set("q", q);
    return (await json("GET", `api/conversations?${query}`, { signal })).conversations ?? [];
  },
  create: (fields) => json("POST", "api/conversations", { body: fields }),
  get: (id) => json("GET", conv(id)),
  update: (id, fields) => json("PATCH", conv(id), { body: fields }),
  remove: (id) => json("DELETE", conv(id)),
  async export(id, format) {
    const response = await request("GET", `${conv(id)}/export?format=${format}`);
    const disposition = response.headers.get("Content-Disposition") ?? "";
    const name = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition)?.[1];
    return { blob: await response.blob(), filename: name ? decodeURIComponent(name) : null };
  },
  /** Stream a reply: yields the NDJSON objects of /api/chat, throws ApiError on an error line. */
  send: (id, body, signal) => stream(`${conv(id)}/messages`, body, signal),
  regenerate: (id, body, signal) => stream(`${conv(id)}/regenerate`, body, signal),
};

async function* stream(path, body, signal) {
  const response = await request("POST", path, { body: { ...body, stream: true }, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      finished = done;
      buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) yield parseLine(line);
      }
      if (done) break;
    }
    if (buffer.trim()) yield parseLine(buffer.trim());
  } finally {
    // the consumer stopped early or a line was an error: stop the download too
    if (!finished) reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

function parseLine(line) {
  let obj;
  try {
    obj = JSON.parse(line);
  } catch {
    throw new ApiError(`the server sent a line that is not JSON: ${line.slice(0, 80)}`);
  }
  if (obj && typeof obj.error === "string") throw new ApiError(obj.error);
  if (obj && obj.error && typeof obj.error.message === "string") throw new ApiError(obj.error.message);
  return obj;
}
