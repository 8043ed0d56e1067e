// The conversation list: search (debounced, server-side full text), rename and
// delete, and, on narrow screens, a drawer opened from the top bar.

import { api } from "./api.js";
import { ask } from "./dialog.js";
import { debounce, el, icon, shortDate } from "./dom.js";

const narrow = window.matchMedia("(max-width: 767px)");

export class Sidebar {
  constructor({ onOpen, onDeleted, onRenamed, onError }) {
    this.onOpen = onOpen;
    this.onDeleted = onDeleted;
    this.onRenamed = onRenamed;
    this.onError = onError;
    this.aside = document.getElementById("sidebar");
    this.list = document.getElementById("conversation-list");
    this.note = document.getElementById("list-note");
    this.search = document.getElementById("search");
    this.toggle = document.getElementById("sidebar-toggle");
    this.backdrop = document.getElementById("backdrop");
    this.main = document.getElementById("main");
    this.conversations = [];
    this.active = null;
    this.query = "";
    this.controller = null;

    const searchNow = debounce(() => this.refresh(), 250);
    this.search.addEventListener("input", searchNow);
    this.search.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.search.value) {
        event.preventDefault(); // clear the search first, close the drawer on the next Escape
        this.search.value = "";
        this.refresh();
      } else if (event.key === "ArrowDown") {
        event.preventDefault();
        this.list.querySelector("a")?.focus();
      }
    });
    this.list.addEventListener("keydown", (event) => this.arrowKeys(event));
    this.toggle.addEventListener("click", () => (this.isOpen() ? this.close({ restoreFocus: true }) : this.open()));
    document.getElementById("sidebar-close").addEventListener("click", () => this.close({ restoreFocus: true }));
    this.backdrop.addEventListener("click", () => this.close({ restoreFocus: true }));
    narrow.addEventListener("change", () => this.close());
  }

  // ---- data ---------------------------------------------------------------

  async refresh() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const query = this.search.value.trim();
    try {
      const conversations = await api.list(query, { signal: controller.signal });
      this.query = query;
      this.conversations = conversations;
      this.draw();
    } catch (err) {
      if (err.name !== "AbortError") this.onError(err);
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  find(id) {
    return this.conversations.find((c) => c.id === id);
  }

  setActive(id) {
    this.active = id;
    for (const item of this.list.children) {
      const link = item.querySelector("a");
      if (item.dataset.id === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // ---- drawing ------------------------------------------------------------

  draw() {
    this.list.replaceChildren(...this.conversations.map((c) => this.item(c)));
    if (this.conversations.length) this.note.textContent = "";
    else this.note.textContent = this.query ? `No conversations match “${this.query}”` : "No conversations yet";
  }

  item(conversation) {
    const title = conversation.title || "Untitled";
    const detail = this.query && conversation.snippet ? conversation.snippet : shortDate(conversation.updated_at);
    const link = el(
      "a",
      { href: `#${encodeURIComponent(conversation.id)}`, class: "conversation-open", title },
      el("span", { class: "conversation-title" }, title),
      el("span", { class: "conversation-detail" }, stripMarks(detail)),
    );
    if (conversation.id === this.active) link.setAttribute("aria-current", "page");
    link.addEventListener("click", (event) => {
      // the same hash does not navigate: open it anyway (and close the drawer)
      if (location.hash === link.getAttribute("href")) {
        event.preventDefault();
        this.onOpen(conversation.id);
      }
    });
    const rename = el(
      "button",
      { type: "button", class: "icon-button", "aria-label": `Rename “${title}”`, title: "Rename", "data-testid": "rename-conversation" },
      icon("pencil"),
    );
    rename.addEventListener("click", () => this.rename(conversation));
    const remove = el(
      "button",
      { type: "button", class: "icon-button", "aria-label": `Delete “${title}”`, title: "Delete", "data-testid": "delete-conversation" },
      icon("trash"),
    );
    remove.addEventListener("click", () => this.remove(conversation));
    return el(
      "li",
      { class: "conversation", "data-testid": "conversation-item", "data-id": conversation.id },
      link,
      el("div", { class: "conversation-actions" }, rename, remove),
    );
  }

  arrowKeys(event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const links = [...this.list.querySelectorAll("a")];
    const index = links.indexOf(document.activeElement);
    if (index < 0) return;
    event.preventDefault();
    const next = index + (event.key === "ArrowDown" ? 1 : -1);
    if (next < 0) this.search.focus();
    else links[Math.min(next, links.length - 1)].focus();
  }

  // ---- actions ------------------------------------------------------------

  async rename(conversation) {
    const title = await ask({
      title: "Rename conversation",
      value: conversation.title || "",
      inputLabel: "Title",
      confirm: "Rename",
    });
    if (!title || title === conversation.title) return;
    try {
      const updated = await api.update(conversation.id, { title });
      Object.assign(conversation, updated);
      this.onRenamed(updated);
      await this.refresh();
    } catch (err) {
      this.onError(err);
    }
  }

  async remove(conversation) {
    const yes = await ask({
      title: "Delete conversation?",
      message: `“${conversation.title || "Untitled"}” and all its messages will be deleted. This cannot be undone.`,
      confirm: "Delete",
      danger: true,
    });
    if (!yes) return;
    try {
      await api.remove(conversation.id);
      this.conversations = this.conversations.filter((c) => c.id !== conversation.id);
      this.draw();
      this.onDeleted(conversation.id);
      this.search.focus();
    } catch (err) {
      this.onError(err);
    }
  }

  // ---- drawer (narrow screens) -------------------------------------------

  isOpen() {
    return this.aside.classList.contains("open");
  }

  open() {
    this.aside.classList.add("open");
    this.backdrop.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.main.inert = true;
    this.search.focus();
  }

  close({ restoreFocus = false } = {}) {
    if (!this.isOpen()) return;
    this.aside.classList.remove("open");
    this.backdrop.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    this.main.inert = false;
    if (restoreFocus) this.toggle.focus();
  }

  focusSearch() {
    if (narrow.matches) this.open();
    this.search.focus();
    this.search.select();
  }
}

/** Snippets may mark matches with tags or brackets; the list shows plain text. */
function stripMarks(text) {
  return String(text ?? "").replace(/<\/?[a-z]+>/gi, "");
}
