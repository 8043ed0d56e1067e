// The login page: name and password to POST /auth/login, which sets the session
// cookie; then back to where the user was going (a path of this UI only).

import { api } from "./api.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

function nextPage() {
  const next = new URLSearchParams(location.search).get("next") ?? "";
  // only a page of this UI, never another site
  return next.startsWith("/") && !next.startsWith("//") && next.includes("/ui/") ? next : "./";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    await api.login(
      document.getElementById("login-name").value.trim(),
      document.getElementById("login-password").value,
    );
    location.assign(nextPage());
  } catch (err) {
    error.textContent = err.message || String(err);
    error.hidden = false;
    button.disabled = false;
  }
});

document.getElementById("login-name").focus();
