// Usage: tokens and cost per day (charts, stacked by model) and per model (a table),
// the caller's own or, for admins, everyone's; admins also set limits and budgets.
// Charts are SVG drawn here, no library.

import { api } from "./api.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#a855f7", "#64748b", "#ec4899"];
const DAY = 86400;
let admin = false;

function showError(err) {
  $("error").textContent = err.message || String(err);
  $("error").hidden = false;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  node.append(...children);
  return node;
}

const number = (n) => Number(n).toLocaleString();

function days(start, end) {
  const out = [];
  for (let t = Math.floor(start / DAY) * DAY; t < end; t += DAY) out.push(new Date(t * 1000).toISOString().slice(0, 10));
  return out;
}

/** Stacked bars: one per day, one colour per model; a title on each part. */
function barChart(figure, labels, models, value, format) {
  const totals = labels.map((d) => models.reduce((sum, m) => sum + value(d, m), 0));
  const top = Math.max(...totals, 0);
  const width = 720, height = 200, left = 84, bottom = 22;
  const step = (width - left) / Math.max(labels.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + bottom}`, role: "img", "aria-label": figure.dataset.testid });
  chart.append(svg("line", { x1: left, y1: height, x2: width, y2: height, class: "axis" }));
  chart.append(svg("text", { x: left - 6, y: 12, "text-anchor": "end", class: "tick" }, format(top)));
  chart.append(svg("text", { x: left - 6, y: height, "text-anchor": "end", class: "tick" }, format(0)));
  labels.forEach((day, i) => {
    let y = height;
    models.forEach((model, j) => {
      const v = value(day, model);
      if (!v || !top) return;
      const h = (v / top) * (height - 8);
      y -= h;
      chart.append(svg("rect", { x: left + i * step + 1, y, width: Math.max(step - 2, 1), height: h,
        fill: COLOURS[j % COLOURS.length], "data-day": day, "data-model": model },
        svg("title", {}, `${day} · ${model}: ${format(v)}`)));
    });
    const every = Math.ceil(labels.length / 10);
    if (i % every === 0) {
      chart.append(svg("text", { x: left + i * step + step / 2, y: height + 16, "text-anchor": "middle", class: "tick" }, day.slice(5)));
    }
  });
  const legend = el("figcaption", { class: "legend" },
    ...models.map((m, j) => el("span", {},
      svg("svg", { viewBox: "0 0 10 10", width: 10, height: 10, "aria-hidden": "true" },
        svg("rect", { width: 10, height: 10, rx: 2, fill: COLOURS[j % COLOURS.length] })), ` ${m}`)));
  figure.replaceChildren(chart, legend);
  if (!top) figure.append(el("p", { class: "muted" }, "Nothing in this range yet."));
}

function query() {
  const end = Math.floor(Date.now() / 1000) + 1;
  const start = end - Number($("days").value) * DAY;
  return { start, end };
}

async function load() {
  $("error").hidden = true;
  const { start, end } = query();
  const all = admin && $("whose").value === "all";
  const params = new URLSearchParams({ group_by: "day,model", start: String(start), end: String(end) });
  const report = await api.usage(params, all);
  $("csv").href = api.usageUrl(new URLSearchParams({ ...Object.fromEntries(params), format: "csv" }), all);
  const models = [...new Set(report.data.map((r) => r.model))].sort();
  const cell = new Map(report.data.map((r) => [`${r.day}|${r.model}`, r]));
  const labels = days(start, end);
  const t = report.total;
  $("summary").textContent = `${number(t.requests)} requests · ${number(t.total_tokens)} tokens · ${t.cost} ${report.currency}`;
  barChart($("tokens-chart"), labels, models, (d, m) => { const r = cell.get(`${d}|${m}`); return r ? r.total_tokens : 0; }, number);
  barChart($("cost-chart"), labels, models, (d, m) => { const r = cell.get(`${d}|${m}`); return r ? r.cost_micros : 0; },
    (micros) => (micros / 1e6).toFixed(micros && micros < 10000 ? 6 : 2));
  $("cost-unit").textContent = report.currency ? `(${report.currency})` : "";
  const per = new Map();
  for (const r of report.data) {
    const m = per.get(r.model) ?? { requests: 0, prompt: 0, completion: 0, cost: 0 };
    m.requests += r.requests; m.prompt += r.prompt_tokens; m.completion += r.completion_tokens; m.cost += r.cost_micros;
    per.set(r.model, m);
  }
  $("per-model").replaceChildren(...[...per].map(([model, m]) => el("tr", {},
    el("td", {}, model), el("td", {}, number(m.requests)), el("td", {}, number(m.prompt)),
    el("td", {}, number(m.completion)), el("td", {}, `${(m.cost / 1e6).toFixed(6)} ${report.currency}`))));
}

function removeButton(action) {
  const b = el("button", { type: "button", class: "secondary", "data-testid": "remove" }, "Remove");
  b.addEventListener("click", async () => {
    try { await action(); await loadAdmin(); } catch (err) { showError(err); }
  });
  return b;
}

async function loadAdmin() {
  const [limits, budgets] = await Promise.all([api.limits(), api.budgets()]);
  const show = (v) => (v === null || v === undefined ? "–" : number(v));
  $("limits").replaceChildren(...limits.limits.map((q) => el("tr", { "data-scope": q.scope },
    el("td", {}, el("code", {}, q.scope)), el("td", {}, show(q.requests_per_minute)),
    el("td", {}, show(q.tokens_per_minute)), el("td", {}, show(q.concurrent_requests)),
    el("td", {}, removeButton(() => api.removeLimits(q.scope))))));
  $("budgets").replaceChildren(...budgets.budgets.map((b) => el("tr", { "data-scope": b.scope },
    el("td", {}, el("code", {}, b.scope)), el("td", {}, `${b.period} (${b.window})`),
    el("td", {}, `${b.amount} ${budgets.currency}`), el("td", {}, b.spent), el("td", {}, b.left),
    el("td", {}, removeButton(() => api.removeBudget(b.id))))));
}

const optional = (id) => ($(id).value ? Number($(id).value) : null);

$("limit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").hidden = true;
  try {
    await api.setLimits($("limit-scope").value.trim(), {
      requests_per_minute: optional("limit-rpm"), tokens_per_minute: optional("limit-tpm"),
      concurrent_requests: optional("limit-conc"),
    });
    $("limit-form").reset();
    await loadAdmin();
  } catch (err) {
    showError(err);
  }
});

$("budget-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").hidden = true;
  try {
    await api.setBudget({ scope: $("budget-scope").value.trim(), period: $("budget-period").value,
      amount: $("budget-amount").value.trim() });
    $("budget-form").reset();
    await loadAdmin();
  } catch (err) {
    showError(err);
  }
});

$("range-form").addEventListener("change", () => load().catch(showError));

try {
  const me = await api.me();
  admin = me.kind === "anonymous" || me.scopes.includes("admin");
  $("who").textContent = me.kind === "anonymous" ? "access control is off" : `signed in as ${me.name}`;
  $("whose-label").hidden = !admin;
  await load();
  if (admin) {
    $("admin").hidden = false;
    await loadAdmin();
  }
} catch (err) {
  showError(err);
}
