// The message list: user messages as plain text, assistant replies as Markdown,
// a collapsible thinking panel, and per-reply actions (copy, regenerate).

import { copyText, renderMarkdown } from "./markdown.js";
import { el, icon } from "./dom.js";

/** One assistant reply on screen; `append` takes the `message` of each NDJSON line. */
class Reply {
  constructor(view, { model = "", content = "", thinking = "", partial = false } = {}) {
    this.view = view;
    this.text = content;
    this.thought = thinking;
    this.thinkingOpenedByUser = false;
    this.thinkingBody = el("div", { class: "thinking-body" });
    this.thinkingLabel = el("span", {}, "Thinking");
    this.thinking = el(
      "details",
      { class: "thinking", hidden: !thinking },
      el("summary", {}, icon("spark"), this.thinkingLabel),
      this.thinkingBody,
    );
    this.thinking.addEventListener("toggle", () => {
      if (this.view.busyReply === this) this.thinkingOpenedByUser = this.thinking.open;
    });
    this.content = el("div", { class: "content markdown" });
    this.status = el("div", { class: "status", role: "status" });
    this.meta = el("span", { class: "meta" }, model);
    this.copyButton = el(
      "button",
      { type: "button", class: "icon-button", "aria-label": "Copy reply", title: "Copy reply" },
      icon("copy"),
    );
    this.copyButton.addEventListener("click", async () => {
      const ok = await copyText(this.text);
      this.flash(ok ? "Copied" : "Copy failed");
    });
    this.regenButton = el(
      "button",
      {
        type: "button",
        class: "icon-button",
        "aria-label": "Regenerate reply",
        title: "Regenerate reply",
        "data-testid": "regenerate-button",
        hidden: true,
      },
      icon("refresh"),
    );
    this.regenButton.addEventListener("click", () => view.onRegenerate?.());
    this.actions = el("div", { class: "message-actions" }, this.meta, this.copyButton, this.regenButton);
    this.element = el(
      "article",
      { class: "message assistant", "data-testid": "message-assistant", "aria-label": "Assistant" },
      el("div", { class: "avatar", "aria-hidden": "true" }, el("img", { src: "icon.svg", alt: "", width: 28, height: 28 })),
      el("div", { class: "bubble" }, this.thinking, this.content, this.status, this.actions),
    );
    this.pending = false;
    this.draw();
    if (partial) this.setNote("Stopped: this reply is incomplete", "note");
  }

  append(message) {
    if (message.thinking) {
      this.thought += message.thinking;
      if (this.thinking.hidden) {
        this.thinking.hidden = false;
        this.thinking.open = true;
      }
    }
    if (message.content) {
      // the answer has begun: fold the thinking away unless the user opened it
      if (!this.text && this.thought && !this.thinkingOpenedByUser) this.thinking.open = false;
      this.text += message.content;
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const stick = this.view.nearBottom();
    if (this.thought) this.thinkingBody.textContent = this.thought;
    renderMarkdown(this.content, this.text);
    this.element.classList.toggle("waiting", !this.text && !this.thought);
    if (stick) this.view.scrollToEnd();
  }

  finish({ stopped = false, error = "" } = {}) {
    this.pending = false;
    this.draw();
    this.thinkingLabel.textContent = "Thoughts";
    this.element.classList.remove("streaming");
    this.element.removeAttribute("aria-busy");
    if (stopped) this.setNote("Stopped: the partial reply was saved", "note");
    else if (error) this.setNote(`The reply failed: ${error}`, "error");
  }

  setNote(text, kind) {
    this.status.textContent = text;
    this.status.className = `status ${kind}`;
  }

  flash(text) {
    this.copyButton.setAttribute("aria-label", text);
    this.copyButton.title = text;
    this.copyButton.classList.add("done");
    setTimeout(() => {
      this.copyButton.setAttribute("aria-label", "Copy reply");
      this.copyButton.title = "Copy reply";
      this.copyButton.classList.remove("done");
    }, 1500);
  }

  get empty() {
    return !this.text && !this.thought;
  }
}

export class ChatView {
  constructor(scroller, list, empty) {
    this.scroller = scroller;
    this.list = list;
    this.empty = empty;
    this.replies = [];
    this.busyReply = null;
    this.retryButton = el(
      "button",
      { type: "button", class: "retry", "data-testid": "retry-button" },
      icon("refresh"),
      "Answer again",
    );
    this.retryButton.addEventListener("click", () => this.onRegenerate?.());
    this.onRegenerate = null;
  }

  clear() {
    this.list.replaceChildren();
    this.replies = [];
    this.busyReply = null;
    this.empty.hidden = false;
  }

  show(messages) {
    this.clear();
    for (const m of messages) {
      if (m.role === "user") this.addUser(m.content);
      else if (m.role === "assistant") this.addReply(m);
    }
    this.scrollToEnd();
  }

  addUser(text) {
    this.empty.hidden = true;
    const node = el(
      "article",
      { class: "message user", "data-testid": "message-user", "aria-label": "You" },
      el("div", { class: "bubble" }, el("div", { class: "content" }, text)),
    );
    this.list.append(node);
    this.scrollToEnd();
    return node;
  }

  addReply(message = {}) {
    this.empty.hidden = true;
    const reply = new Reply(this, message);
    this.replies.push(reply);
    this.list.append(reply.element);
    return reply;
  }

  startReply(model) {
    const reply = this.addReply({ model });
    reply.element.classList.add("streaming");
    reply.element.setAttribute("aria-busy", "true");
    this.busyReply = reply;
    this.scrollToEnd();
    return reply;
  }

  endReply() {
    this.busyReply = null;
  }

  dropReply(reply) {
    reply.element.remove();
    this.replies = this.replies.filter((r) => r !== reply);
    if (!this.list.children.length) this.empty.hidden = false;
  }

  /** Remove the last reply from the screen (before regenerating it). */
  dropLastReply() {
    const last = this.list.lastElementChild;
    const reply = this.replies.at(-1);
    if (reply && last === reply.element) this.dropReply(reply);
  }

  /** Show regenerate on the last reply, or "answer again" after an unanswered message. */
  updateActions(busy) {
    for (const r of this.replies) r.regenButton.hidden = true;
    this.retryButton.remove();
    if (busy) return;
    const last = this.list.lastElementChild;
    const reply = this.replies.at(-1);
    if (reply && last === reply.element) reply.regenButton.hidden = false;
    else if (last?.classList.contains("user")) this.list.append(this.retryButton);
  }

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
