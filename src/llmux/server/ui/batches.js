// Batches: the caller's batches (the server shows each user only their own), newest
// first, with their status, progress, counts, files to download and a Cancel button
// while they run. Everything goes through /v1/batches and /v1/files with the page's
// session. While any batch has not ended, the list is read again every few seconds.

import { api } from "./api.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);
const CANCELLABLE = new Set(["validating", "in_progress"]);
const REFRESH_MS = 3000;
const MAX_ERRORS = 20;
const when = (t) => (t ? new Date(t * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }) : "–");

let pages = 1; // pages of 100 shown; "Show older batches" adds one
let timer = 0;
let generation = 0; // a slower, older load must not draw over a newer one

function showError(err) {
  $("error").textContent = err.message || String(err);
  $("error").hidden = false;
}

async function fetchPages() {
  const batches = [];
  let after = "";
  let more = false;
  for (let i = 0; i < pages; i += 1) {
    const page = await api.batches(after);
    batches.push(...page.data);
    more = Boolean(page.has_more && page.last_id);
    if (!more) break;
    after = page.last_id;
  }
  return { batches, more };
}

// the server names the download (batch_..._output.jsonl, batch_..._errors.jsonl)
function fileLink(id, testid, label) {
  return el("a", { href: api.fileUrl(id), download: true, "data-testid": testid }, label);
}

/** The validation errors of a failed batch, one line each (the first few). */
function errorList(batch) {
  const problems = batch.errors?.data ?? [];
  if (!problems.length) return null;
  const items = problems.slice(0, MAX_ERRORS).map((e) =>
    el("li", {}, `${e.line ? `line ${e.line}: ` : ""}${e.message ?? e.code ?? ""}`));
  if (problems.length > MAX_ERRORS) items.push(el("li", {}, `… and ${problems.length - MAX_ERRORS} more`));
  const label = `${problems.length} error${problems.length === 1 ? "" : "s"}`;
  return el("details", { class: "batch-errors", "data-testid": "batch-errors" }, el("summary", {}, label), el("ul", {}, ...items));
}

function cancelButton(batch) {
  if (!CANCELLABLE.has(batch.status)) return null;
  const button = el("button", { type: "button", class: "secondary", "data-testid": "batch-cancel" }, "Cancel");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api.cancelBatch(batch.id);
      await load();
    } catch (err) {
      button.disabled = false;
      showError(err);
    }
  });
  return button;
}

function row(batch) {
  const c = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
  const done = c.completed + c.failed;
  const bar = el("progress", { max: Math.max(c.total, 1), value: c.total ? done : 0,
    "data-testid": "batch-progress", "aria-label": `${done} of ${c.total} requests done` });
  const meta = Object.entries(batch.metadata ?? {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const output = batch.output_file_id && fileLink(batch.output_file_id, "batch-output", "Output");
  const errors = batch.error_file_id && fileLink(batch.error_file_id, "batch-error-file", "Errors");
  return el("tr", { "data-batch-id": batch.id, "data-status": batch.status },
    el("td", {}, el("code", {}, batch.id), el("div", { class: "muted" }, batch.endpoint),
      meta ? el("div", { class: "muted" }, meta) : null),
    el("td", { "data-testid": "batch-status" }, el("span", { class: `batch-status ${batch.status}` }, batch.status), errorList(batch)),
    el("td", { class: "batch-progress" }, bar, " ", el("span", { "data-testid": "batch-done" }, `${done}/${c.total}`),
      el("div", { class: "muted" }, el("span", { "data-testid": "batch-completed" }, String(c.completed)), " completed · ",
        el("span", { "data-testid": "batch-failed" }, String(c.failed)), " failed")),
    el("td", { class: "batch-created" }, when(batch.created_at)),
    el("td", { class: "batch-files" }, output || null, output && errors ? " · " : null, errors || null),
    el("td", {}, cancelButton(batch)));
}

async function load() {
  clearTimeout(timer);
  const mine = (generation += 1);
  try {
    const { batches, more } = await fetchPages();
    if (mine !== generation) return;
    $("error").hidden = true;
    $("batches").replaceChildren(...batches.map(row));
    $("more").hidden = !more;
    const running = batches.filter((b) => !TERMINAL.has(b.status)).length;
    const count = `${batches.length} batch${batches.length === 1 ? "" : "es"}`;
    $("summary").textContent = batches.length ? `${count}${running ? `, ${running} running` : ""}` : "No batches yet.";
    if (running) timer = setTimeout(load, REFRESH_MS);
  } catch (err) {
    if (mine !== generation) return;
    showError(err);
    if (!err.status) timer = setTimeout(load, REFRESH_MS * 3); // the server is unreachable: try again
  }
}

$("more").addEventListener("click", () => {
  pages += 1;
  load();
});

try {
  const me = await api.me();
  $("who").textContent = me.kind === "anonymous" ? "access control is off" : `signed in as ${me.name}`;
  await load();
} catch (err) {
  if (err.status === 401) location.assign("login.html?next=" + encodeURIComponent(location.pathname));
  else showError(err);
}
