// Markdown for assistant replies: marked parses, DOMPurify sanitises, highlight.js
// colours code blocks, and each block gets a header with its language and a copy
// button. Raw HTML in a reply is shown as text, and images become links: a reply
// must never make the browser fetch anything (no tracking pixels, no data leaks).

import { Marked } from "./vendor/marked.esm.js";
import hljs from "./vendor/highlight.min.js";

const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    image({ href, text }) {
      const label = escapeHtml(text || href);
      return `<a href="${escapeHtml(href)}">${label}</a>`;
    },
  },
});

let purifyReady = false;

function purify() {
  const DOMPurify = globalThis.DOMPurify;
  if (!DOMPurify) throw new Error("DOMPurify failed to load");
  if (!purifyReady) {
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    purifyReady = true;
  }
  return DOMPurify;
}

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "img", "video", "audio", "source", "picture", "form", "input", "button", "iframe"],
  FORBID_ATTR: ["style"],
  ADD_ATTR: ["target"],
};

/** Render Markdown `text` into `el`, replacing its content. */
export function renderMarkdown(el, text) {
  const html = marked.parse(text ?? "", { async: false });
  el.innerHTML = purify().sanitize(html, SANITIZE);
  for (const code of el.querySelectorAll("pre > code")) decorateCode(code);
}

function decorateCode(code) {
  const pre = code.parentElement;
  const match = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
  const lang = match ? match[1].toLowerCase() : "";
  const source = code.textContent;
  const known = lang && hljs.getLanguage(lang);
  const result = known
    ? hljs.highlight(source, { language: lang, ignoreIllegals: true })
    : source.length < 20000
      ? hljs.highlightAuto(source)
      : null;
  if (result) {
    code.innerHTML = result.value; // highlight.js escapes the source it returns
    code.classList.add("hljs");
  }
  const block = document.createElement("div");
  block.className = "code-block";
  const head = document.createElement("div");
  head.className = "code-head";
  const name = document.createElement("span");
  name.className = "code-lang";
  name.textContent = lang || result?.language || "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy-code";
  copy.dataset.testid = "copy-code";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${name.textContent} code`);
  copy.addEventListener("click", async () => {
    const ok = await copyText(source);
    copy.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  head.append(name, copy);
  pre.replaceWith(block);
  block.append(head, pre);
}

/** Copy `text` to the clipboard; works outside secure contexts too. */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the legacy path
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}
