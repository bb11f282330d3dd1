// Entry page: join an event by its code, or create an event and go to its
// presenter page with the presenter token in the URL fragment.

import { apiRequest, describeError, isJoinCode, normalizeJoinCode } from "./common.js";

const joinForm = document.getElementById("join-form");
const joinInput = document.getElementById("join-code");
const joinError = document.getElementById("join-error");
const createForm = document.getElementById("create-form");
const titleInput = document.getElementById("event-title");
const createError = document.getElementById("create-error");
const createButton = document.getElementById("create-button");

joinForm.addEventListener("submit", joinEvent);
joinInput.addEventListener("input", () => showFieldError(joinInput, joinError, ""));
createForm.addEventListener("submit", createEvent);
titleInput.addEventListener("input", () => showFieldError(titleInput, createError, ""));
window.addEventListener("pageshow", resetCreateButton);

function joinEvent(event) {
  event.preventDefault();

  const code = normalizeJoinCode(joinInput.value);
  if (!code) {
    showFieldError(joinInput, joinError, "Enter the join code shown by the presenter.");
    return;
  }
  if (!isJoinCode(code)) {
    showFieldError(joinInput, joinError, `"${joinInput.value.trim()}" is not a join code: a join code is six letters or digits.`);
    return;
  }

  window.location.assign(`/e/${code}`);
}

async function createEvent(event) {
  event.preventDefault();

  const title = titleInput.value.trim();
  if (!title) {
    showFieldError(titleInput, createError, "Enter a title for the event.");
    return;
  }

  createButton.disabled = true;
  createButton.textContent = "Creating…";
  try {
    const created = await apiRequest("POST", "/api/events", { body: { title } });
    const code = created?.event?.code;
    const token = created?.presenter_token;
    if (typeof code !== "string" || typeof token !== "string") {
      throw new Error("The server's response has no event code or presenter token.");
    }
    window.location.assign(`/present/${encodeURIComponent(code)}#token=${encodeURIComponent(token)}`);
  } catch (error) {
    const message = error.message || describeError(error.code);
    showFieldError(titleInput, createError, `The event was not created. ${message}`);
    resetCreateButton();
  }
}

// resetCreateButton also runs when the browser shows this page again from
// its back-forward cache after the redirect to the presenter page.
function resetCreateButton() {
  createButton.disabled = false;
  createButton.textContent = "Create event";
}

function showFieldError(input, output, message) {
  output.textContent = message;
  if (message) {
    input.setAttribute("aria-invalid", "true");
  } else {
    input.removeAttribute("aria-invalid");
  }
}
