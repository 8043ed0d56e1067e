// One modal dialog for confirmations and text input, built on <dialog>: the browser
// traps focus, closes on Escape and returns focus to the opener.

const dialog = document.getElementById("dialog");
const heading = document.getElementById("dialog-title");
const text = document.getElementById("dialog-text");
const field = document.getElementById("dialog-field");
const label = document.getElementById("dialog-label");
const input = document.getElementById("dialog-input");
const ok = document.getElementById("dialog-ok");

document.getElementById("dialog-cancel").addEventListener("click", () => dialog.close("cancel"));

/**
 * Ask the user; resolves to the entered text (`value` given), `true` for a plain
 * confirmation, or `null` when cancelled.
 */
export function ask({ title, message = "", value = null, inputLabel = "", confirm = "OK", danger = false }) {
  heading.textContent = title;
  text.textContent = message;
  text.hidden = !message;
  field.hidden = value === null;
  label.textContent = inputLabel || title;
  input.value = value ?? "";
  input.required = value !== null;
  ok.textContent = confirm;
  ok.classList.toggle("danger", danger);
  dialog.returnValue = "";
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const accepted = dialog.returnValue === "ok";
        if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
        resolve(accepted ? (value === null ? true : input.value.trim()) : null);
      },
      { once: true },
    );
    dialog.showModal();
    if (value !== null) {
      input.focus();
      input.select();
    } else {
      ok.focus();
    }
  });
}
