// The llmux web chat: wires the page to the conversations API. The open
// conversation's id lives in the URL hash (#<id>), so a reload or a bookmark
// comes back to it.

import { api } from "./api.js";
import { ChatView } from "./chat.js";
import { fillIcons } from "./dom.js";
import { Sidebar } from "./sidebar.js";

const $ = (id) => document.getElementById(id);

const ui = {
  title: $("chat-title"),
  model: $("model-select"),
  prompt: $("prompt"),
  composer: $("composer"),
  send: $("send"),
  stop: $("stop"),
  error: $("error"),
  errorText: $("error-text"),
  exportMenu: $("export-menu"),
};

const state = {
  conversation: null, // the open conversation (without messages), null for a new chat
  controller: null, // AbortController of the reply being streamed
  models: [],
  loading: null, // id of the conversation being fetched
};

fillIcons();
const view = new ChatView($("messages"), $("thread"), $("welcome"));
const sidebar = new Sidebar({
  onOpen: (id) => openConversation(id),
  onDeleted: (id) => {
    if (state.conversation?.id === id) newChat();
  },
  onRenamed: (conversation) => {
    if (state.conversation?.id === conversation.id) setConversation(conversation);
  },
  onError: (err) => showError(err),
});

// ---- errors ---------------------------------------------------------------

function showError(err) {
  ui.errorText.textContent = typeof err === "string" ? err : err.message || String(err);
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

$("error-close").addEventListener("click", () => {
  hideError();
  ui.prompt.focus();
});

// ---- models ---------------------------------------------------------------

async function loadModels() {
  try {
    state.models = (await api.models()).map((m) => m.name ?? m.model).sort();
  } catch (err) {
    showError(err);
    state.models = [];
  }
  const saved = localStorage.getItem("llmux.model");
  fillModels(state.models.includes(saved) ? saved : state.models[0]);
  if (!state.models.length)
    showError("no models are installed; pull one with `llmux pull <model>` and reload this page");
}

function fillModels(selected) {
  const names = [...state.models];
  if (selected && !names.includes(selected)) names.push(selected);
  ui.model.replaceChildren(
    ...names.map((name) => {
      const label = state.models.includes(name) ? name : `${name} (not installed)`;
      const option = new Option(label, name, false, name === selected);
      return option;
    }),
  );
  ui.model.disabled = names.length === 0;
  updatePlaceholder();
}

function updatePlaceholder() {
  ui.prompt.placeholder = ui.model.value ? `Message ${ui.model.value}` : "Message the model";
}

ui.model.addEventListener("change", () => {
  localStorage.setItem("llmux.model", ui.model.value);
  updatePlaceholder();
});

// ---- conversations --------------------------------------------------------

function setConversation(conversation) {
  state.conversation = conversation;
  const title = conversation?.title || "New chat";
  ui.title.textContent = title;
  document.title = conversation ? `${title} · llmux` : "llmux chat";
  ui.exportMenu.hidden = !conversation;
  sidebar.setActive(conversation?.id ?? null);
}

function stopReply() {
  state.controller?.abort();
}

function newChat({ focus = true } = {}) {
  state.loading = null;
  stopReply();
  hideError();
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  setConversation(null);
  view.clear();
  sidebar.close();
  if (focus) ui.prompt.focus();
}

async function openConversation(id) {
  if (state.conversation?.id === id && !state.controller) {
    sidebar.close();
    return;
  }
  if (state.loading === id) return;
  state.loading = id;
  stopReply();
  hideError();
  try {
    const conversation = await api.get(id);
    if (state.loading !== id) return; // another conversation was opened meanwhile
    const { messages = [], ...rest } = conversation;
    setConversation(rest);
    if (rest.model) fillModels(rest.model);
    view.show(messages);
    view.updateActions(false);
    sidebar.close();
    ui.prompt.focus();
  } catch (err) {
    if (err.status === 404) newChat({ focus: false }); // (it clears errors: first)
    showError(err);
  } finally {
    if (state.loading === id) state.loading = null;
  }
}

function routeFromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) openConversation(id);
  else if (state.conversation) newChat({ focus: false });
}

window.addEventListener("hashchange", routeFromHash);
window.addEventListener("popstate", routeFromHash);

// ---- sending and streaming ------------------------------------------------

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.composer.classList.toggle("busy", busy);
  view.updateActions(busy);
  updateSend();
}

function updateSend() {
  ui.send.disabled = !ui.prompt.value.trim() || !ui.model.value;
}

async function send() {
  const text = ui.prompt.value;
  if (!text.trim() || state.controller || !ui.model.value) return;
  hideError();
  const model = ui.model.value;
  let created = null;
  if (!state.conversation) {
    try {
      created = await api.create({ model });
      setConversation(created);
      history.pushState(null, "", `#${encodeURIComponent(created.id)}`);
    } catch (err) {
      showError(err);
      return;
    }
  }
  ui.prompt.value = "";
  autosize();
  view.addUser(text);
  const id = state.conversation.id;
  const rejected = await stream((signal) => api.send(id, { content: text, model }, signal), model);
  if (!rejected) return;
  // The server refused the message (bad model, bad input): it stored nothing, so give
  // the text back and show what the server holds.
  if (!ui.prompt.value) {
    ui.prompt.value = text;
    autosize();
  }
  if (created) {
    await api.remove(created.id).catch(() => {});
    newChat();
    showError(rejected);
    await sidebar.refresh();
  } else {
    await resync(id);
  }
}

async function regenerate() {
  if (!state.conversation || state.controller || !ui.model.value) return;
  hideError();
  const model = ui.model.value;
  const id = state.conversation.id;
  view.dropLastReply();
  if (await stream((signal) => api.regenerate(id, { model }, signal), model)) await resync(id);
}

/** Redraw the open conversation from the server, keeping any error on screen. */
async function resync(id) {
  try {
    const { messages = [] } = await api.get(id);
    if (state.conversation?.id !== id || state.controller) return;
    view.show(messages);
    view.updateActions(false);
  } catch {
    // keep what is on screen; the error banner already says what went wrong
  }
}

view.onRegenerate = regenerate;

/**
 * Stream one reply into the view. Returns the error when the server refused the
 * request outright (an HTTP error status, nothing was generated), else null.
 */
async function stream(start, model) {
  const controller = new AbortController();
  state.controller = controller;
  const reply = view.startReply(model);
  setBusy(true);
  let ended = false;
  let rejected = null;
  try {
    for await (const chunk of start(controller.signal)) {
      if (chunk.message) reply.append(chunk.message);
      if (chunk.done) ended = true;
    }
    reply.finish();
  } catch (err) {
    if (reply.empty) view.dropReply(reply);
    if (err.name === "AbortError") {
      if (!reply.empty) reply.finish({ stopped: true });
    } else {
      if (!reply.empty) reply.finish({ error: err.message });
      if (err.status) rejected = err;
      showError(err);
    }
  } finally {
    if (state.controller === controller) state.controller = null;
    view.endReply();
    setBusy(false);
  }
  if (ended || controller.signal.aborted) await refreshAfterReply();
  if (!controller.signal.aborted || document.activeElement === document.body) ui.prompt.focus();
  return rejected;
}

async function refreshAfterReply() {
  await sidebar.refresh();
  const fresh = sidebar.find(state.conversation?.id);
  if (fresh) setConversation({ ...state.conversation, ...fresh });
}

// ---- composer -------------------------------------------------------------

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, window.innerHeight * 0.4)}px`;
  updateSend();
}

const coarse = window.matchMedia("(pointer: coarse)");

ui.prompt.addEventListener("input", autosize);
ui.prompt.addEventListener("keydown", (event) => {
  // On touch screens Enter adds a line; the send button sends.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || coarse.matches) return;
  event.preventDefault();
  send();
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.stop.addEventListener("click", () => {
  stopReply();
  ui.prompt.focus();
});

for (const button of $("suggestions").querySelectorAll("button")) {
  button.addEventListener("click", () => {
    ui.prompt.value = button.textContent;
    autosize();
    ui.prompt.focus();
  });
}

// ---- export ---------------------------------------------------------------

for (const button of ui.exportMenu.querySelectorAll("button[data-format]")) {
  button.addEventListener("click", async () => {
    ui.exportMenu.open = false;
    if (!state.conversation) return;
    const format = button.dataset.format;
    try {
      const { blob, filename } = await api.export(state.conversation.id, format);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filename || `${slug(state.conversation.title)}.${format === "json" ? "json" : "md"}`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (err) {
      showError(err);
    }
  });
}

function slug(text) {
  return (text || "conversation").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60) || "conversation";
}

document.addEventListener("click", (event) => {
  if (ui.exportMenu.open && !ui.exportMenu.contains(event.target)) ui.exportMenu.open = false;
});

// ---- keyboard -------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (document.querySelector("dialog[open]")) return; // the dialog handles its own keys
  const mod = event.ctrlKey || event.metaKey;
  if (mod && !event.shiftKey && event.key.toLowerCase() === "k") {
    event.preventDefault();
    sidebar.focusSearch();
  } else if (mod && event.shiftKey && event.key.toLowerCase() === "o") {
    event.preventDefault();
    newChat();
  } else if (event.key === "Escape" && !event.defaultPrevented) {
    if (ui.exportMenu.open) {
      ui.exportMenu.open = false;
      ui.exportMenu.querySelector("summary").focus();
    } else if (state.controller) {
      stopReply();
      ui.prompt.focus();
    } else if (sidebar.isOpen()) {
      sidebar.close({ restoreFocus: true });
    }
  }
});

$("new-chat").addEventListener("click", () => newChat());

// ---- start ----------------------------------------------------------------

setConversation(null);
api.version().then(
  (version) => ($("server-version").textContent = `llmux ${version}`),
  () => {},
);
showAccount();

/** Signed in (access control on): who, a link to the API keys page, and log out. */
async function showAccount() {
  let me;
  try {
    me = await api.me();
  } catch {
    return; // a 401 already went to the login page
  }
  if (!me || me.kind === "anonymous") return; // access control is off
  $("account-name").textContent = me.name;
  $("account").hidden = false;
}

$("logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } finally {
    location.assign("login.html");
  }
});
await Promise.all([loadModels(), sidebar.refresh()]);
routeFromHash();
if (!location.hash) ui.prompt.focus();
