// A user's own API keys (create: shown once, with a copy button; revoke), and for
// admins the users and every key. The server decides who may see what.

import { api } from "./api.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");

function showError(err) {
  $("error").textContent = err.message || String(err);
  $("error").hidden = false;
}

async function loadOwn() {
  const keys = await api.keys();
  $("own-keys").replaceChildren(
    ...keys
      .filter((k) => !k.revoked)
      .map((k) => {
        const revoke = el("button", { type: "button", class: "secondary", "data-testid": "revoke" }, "Revoke");
        revoke.addEventListener("click", async () => {
          try {
            await api.revokeKey(k.id);
            await loadOwn();
            if (!$("admin").hidden) await loadAdmin();
          } catch (err) {
            showError(err);
          }
        });
        return el("tr", { "data-key-id": k.id },
          el("td", {}, k.name || "–"), el("td", {}, el("code", {}, k.id)),
          el("td", {}, k.scopes.join(" ")), el("td", {}, when(k.created_at)),
          el("td", {}, when(k.last_used_at)), el("td", {}, revoke));
      }),
  );
}

async function loadAdmin() {
  const [users, keys] = await Promise.all([api.users(), api.allKeys()]);
  const names = new Map(users.map((u) => [u.id, u.name]));
  $("users").replaceChildren(
    ...users.map((u) => el("tr", {}, el("td", {}, u.name), el("td", {}, u.role),
      el("td", {}, u.disabled ? "yes" : ""), el("td", {}, when(u.created_at)))),
  );
  $("all-keys").replaceChildren(
    ...keys.map((k) => el("tr", {}, el("td", {}, k.name || "–"), el("td", {}, el("code", {}, k.id)),
      el("td", {}, names.get(k.user_id) ?? k.user_id), el("td", {}, k.scopes.join(" ")),
      el("td", {}, k.models.join(" ") || "all"), el("td", {}, k.revoked ? "yes" : ""))),
  );
  $("admin").hidden = false;
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").hidden = true;
  try {
    const made = await api.createKey({ name: $("key-name").value.trim() });
    $("key-value").textContent = made.key;
    $("key-once").hidden = false;
    $("key-name").value = "";
    await loadOwn();
    if (!$("admin").hidden) await loadAdmin();
  } catch (err) {
    showError(err);
  }
});

$("key-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("key-value").textContent);
    $("key-copy").textContent = "Copied";
  } catch {
    // no clipboard permission: select the text so it can be copied by hand
    getSelection().selectAllChildren($("key-value"));
  }
});

try {
  const me = await api.me();
  if (me.kind === "anonymous") {
    showError("access control is off on this server, so there are no keys to manage");
  } else {
    $("who").textContent = `signed in as ${me.name}`;
    await loadOwn();
    if (me.scopes.includes("admin")) await loadAdmin();
  }
} catch (err) {
  if (err.status === 401) location.assign("login.html?next=" + encodeURIComponent(location.pathname));
  else showError(err);
}
