// Shared helpers for the LiveVote pages: join codes, the JSON API, storage,
// vote ids, the reconnecting WebSocket, results versions and bar charts.

export const SUBPROTOCOL = "livevote.v1";

// Reconnect delays grow from RECONNECT_BASE_MS and double per failed
// attempt up to RECONNECT_MAX_MS; each delay is then drawn at random from
// its upper half (jitter), so phones that lost the server together do not
// come back in one burst.
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_MAX_MS = 10000;

const JOIN_CODE_PATTERN = /^[A-Z0-9]{6}$/;

// Sentences shown for each error code of the wire contract. Each one
// completes "Refused: " on the audience page and reads as a complete
// sentence elsewhere.
const ERROR_SENTENCES = {
  invalid_message: "The server could not read the request. Reload the page and try again.",
  unknown_option: "That option is not part of this poll. Reload the page to get the current options.",
  too_large: "The request was too large for the server.",
  unknown_event: "No event has this join code. Check the code with the presenter.",
  unknown_poll: "This poll does not exist any more.",
  poll_not_open: "This poll is not open for voting yet.",
  poll_closed: "Voting on this poll has closed.",
  already_voted: "You have already voted in this poll, and it does not allow changing a vote.",
  invalid_session: "Your voting session is not valid any more. Reload the page to start a new one.",
  unauthorized: "The presenter token was not accepted. Open the presenter link you got when you created the event.",
  rate_limited: "Too many requests in a short time. Wait a few seconds and try again.",
  overloaded: "The server is busy. Try again in a few seconds.",
  network_error: "The server could not be reached. Check your connection and try again.",
};

// normalizeJoinCode removes spaces and dashes and upper-cases the rest,
// because join codes are case-insensitive and people type them in groups.
export function normalizeJoinCode(input) {
  return String(input ?? "").replace(/[\s-]+/g, "").toUpperCase();
}

// isJoinCode reports whether code is six upper-case letters or digits.
export function isJoinCode(code) {
  return JOIN_CODE_PATTERN.test(code);
}

// joinCodeFromPath returns the normalized join code that follows prefix in
// pathname ("/e/abc123" gives "ABC123"), or "" when there is none.
export function joinCodeFromPath(prefix, pathname = window.location.pathname) {
  if (!pathname.startsWith(prefix)) {
    return "";
  }

  const segment = pathname.slice(prefix.length).split("/")[0];
  let decoded;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    return "";
  }

  const code = normalizeJoinCode(decoded);
  return isJoinCode(code) ? code : "";
}

// describeError returns a plain English sentence for an error code, or the
// server's message when the code is not one of the wire contract's codes.
export function describeError(code, message) {
  if (Object.hasOwn(ERROR_SENTENCES, code)) {
    return ERROR_SENTENCES[code];
  }
  if (message) {
    return message;
  }
  return `The server rejected the request (${code || "no error code"}).`;
}

// ApiError is a failed API request: the HTTP status (0 when the server
// was not reached), the machine code and the server's message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

// apiRequest sends a JSON request to the LiveVote API and returns the
// decoded body. It throws ApiError with the body's error code and message
// when the status is not 2xx, and with code "network_error" when the
// request could not be sent.
export async function apiRequest(method, path, { body, token, session } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  if (session) {
    headers["X-LiveVote-Session"] = session;
  }

  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network_error", ERROR_SENTENCES.network_error);
  }

  const data = await readJSONBody(response);
  if (!response.ok) {
    throw errorFromResponse(response, data);
  }
  return data;
}

async function readJSONBody(response) {
  let text;
  try {
    text = await response.text();
  } catch {
    return null;
  }

  if (!text) {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function errorFromResponse(response, data) {
  const error = data && typeof data.error === "object" ? data.error : null;
  const code = error && typeof error.code === "string" ? error.code : `http_${response.status}`;
  let message = error && typeof error.message === "string" ? error.message : "";
  if (!message) {
    message = `The server returned HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}.`;
  }
  return new ApiError(response.status, code, message);
}

// JsonStore keeps JSON values in a Web Storage area. When the area is
// missing or rejects writes (private browsing, storage full), it keeps
// them in memory for the life of the page instead.
export class JsonStore {
  #area;
  #memory = new Map();

  constructor(areaName) {
    this.#area = openStorageArea(areaName);
  }

  get(key) {
    let raw = this.#memory.has(key) ? this.#memory.get(key) : null;
    if (raw === null && this.#area) {
      try {
        raw = this.#area.getItem(key);
      } catch {
        raw = null;
      }
    }
    if (raw === null) {
      return null;
    }

    try {
      return JSON.parse(raw);
    } catch {
      return null;
    }
  }

  set(key, value) {
    const raw = JSON.stringify(value);
    try {
      this.#area.setItem(key, raw);
      this.#memory.delete(key);
    } catch {
      this.#memory.set(key, raw);
    }
  }

  remove(key) {
    this.#memory.delete(key);
    try {
      this.#area?.removeItem(key);
    } catch {
      // The value is gone from memory, and a storage area that rejects
      // writes cannot contain a newer value either.
    }
  }
}

function openStorageArea(name) {
  try {
    const area = window[name];
    const probe = "livevote.probe";
    area.setItem(probe, "1");
    area.removeItem(probe);
    return area;
  } catch {
    return null;
  }
}

export const localStore = new JsonStore("localStorage");
export const sessionStore = new JsonStore("sessionStorage");

// newVoteId returns a random UUID version 4. Browsers offer
// crypto.randomUUID only on HTTPS and localhost, so a phone that opened the
// page over plain HTTP on a local network gets one built from
// crypto.getRandomValues.
export function newVoteId() {
  if (typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }

  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// backoffDelay returns the wait in milliseconds before reconnect attempt
// number attempt (0 for the first): a random value between half and all
// of min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2^attempt).
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

// socketURL returns the WebSocket URL of an event on this page's host,
// with wss: for pages loaded over HTTPS. A role of "presenter" asks for a
// presenter socket, which must send {"type":"auth","token"} first; the
// token itself never goes into the URL.
export function socketURL(code, session, role) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams({ event: code });
  if (session) {
    params.set("session", session);
  }
  if (role) {
    params.set("role", role);
  }
  return `${scheme}//${window.location.host}/ws?${params}`;
}

// LiveSocket keeps one WebSocket to the server open, reconnecting with
// backoffDelay after every close until stop is called. It reconnects at
// once when the browser comes back online or the page becomes visible.
//
// onMessage receives every decoded JSON object that has a string "type".
// onStatus receives {state: "connecting"}, {state: "open"} and
// {state: "closed", code, reason, delay} where delay is the wait in
// milliseconds before the next attempt.
export class LiveSocket {
  #url;
  #onMessage;
  #onStatus;
  #socket = null;
  #timer = 0;
  #attempt = 0;
  #stopped = true;

  constructor({ url, onMessage, onStatus }) {
    this.#url = url;
    this.#onMessage = onMessage;
    this.#onStatus = onStatus;
  }

  get isOpen() {
    return this.#socket !== null && this.#socket.readyState === WebSocket.OPEN;
  }

  start() {
    if (!this.#stopped) {
      return;
    }
    this.#stopped = false;
    window.addEventListener("online", this.#wake);
    document.addEventListener("visibilitychange", this.#wake);
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    window.removeEventListener("online", this.#wake);
    document.removeEventListener("visibilitychange", this.#wake);

    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000, "page stopped");
  }

  // send encodes message as JSON and sends it. It returns false when the
  // socket is not open, so the caller keeps the message to send later.
  send(message) {
    if (!this.isOpen) {
      return false;
    }
    this.#socket.send(JSON.stringify(message));
    return true;
  }

  // resetBackoff starts the delays over from RECONNECT_BASE_MS. Pages call
  // it on the server's welcome, not on open, so a server that accepts and
  // then closes at once still gets growing delays.
  resetBackoff() {
    this.#attempt = 0;
  }

  // connectNow skips the wait when no socket is open or opening.
  connectNow() {
    if (this.#stopped || this.#socket !== null) {
      return;
    }
    clearTimeout(this.#timer);
    this.#connect();
  }

  // restart closes the current socket and opens a new one at once, so the
  // next URL (a changed session, say) takes effect.
  restart() {
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000, "reconnecting");
    this.connectNow();
  }

  #wake = (event) => {
    if (event.type === "visibilitychange" && document.visibilityState !== "visible") {
      return;
    }
    this.connectNow();
  };

  #connect() {
    let socket;
    try {
      socket = new WebSocket(this.#url(), SUBPROTOCOL);
    } catch (error) {
      console.warn("LiveVote: opening the WebSocket failed:", error);
      this.#closed(null, { code: 0, reason: "" });
      return;
    }

    this.#socket = socket;
    this.#onStatus({ state: "connecting" });
    socket.addEventListener("open", () => {
      if (socket === this.#socket) {
        this.#onStatus({ state: "open" });
      }
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.#socket) {
        this.#deliver(event.data);
      }
    });
    socket.addEventListener("close", (event) => this.#closed(socket, event));
  }

  #deliver(data) {
    if (typeof data !== "string") {
      return;
    }

    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("LiveVote: ignored a WebSocket frame that is not JSON.");
      return;
    }

    if (message && typeof message.type === "string") {
      this.#onMessage(message);
    }
  }

  #closed(socket, event) {
    if (socket !== null && socket !== this.#socket) {
      return;
    }
    this.#socket = null;
    if (this.#stopped) {
      return;
    }

    const delay = backoffDelay(this.#attempt);
    this.#attempt += 1;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#connect(), delay);
    this.#onStatus({ state: "closed", code: event.code, reason: event.reason, delay });
  }
}

// ResultsStore keeps the newest results document of each poll and drops
// any document whose version is not greater than the one it holds.
export class ResultsStore {
  #documents = new Map();

  // accept stores doc and returns true when it is newer than the stored one.
  accept(doc) {
    if (!doc || typeof doc.poll !== "string" || !Number.isFinite(doc.version)) {
      return false;
    }

    const current = this.#documents.get(doc.poll);
    if (current && doc.version <= current.version) {
      return false;
    }
    this.#documents.set(doc.poll, doc);
    return true;
  }

  get(pollId) {
    return this.#documents.get(pollId) ?? null;
  }
}

// resultsFromMessage returns the results document carried by a "results"
// WebSocket message, which is the document's fields beside "type".
export function resultsFromMessage(message) {
  const { type: _type, ...doc } = message;
  return doc;
}

// isPoll reports whether value has the fields the pages use from a poll.
export function isPoll(value) {
  return Boolean(value) &&
    typeof value.id === "string" &&
    typeof value.question === "string" &&
    Array.isArray(value.options) &&
    value.options.every((option) => option && typeof option.id === "string" && typeof option.label === "string");
}

// countOf returns value as a vote count, treating anything that is not a
// finite non-negative number as 0.
export function countOf(value) {
  return Number.isFinite(value) && value > 0 ? value : 0;
}

// shareBase returns the number that option counts are divided by to get
// their share: the sum of the counts for a single-choice poll, and the
// number of voters for a multiple-choice poll, where one voter can count
// for several options.
export function shareBase(poll, doc) {
  const counts = doc && doc.counts && typeof doc.counts === "object" ? doc.counts : {};
  const sum = Object.values(counts).reduce((total, value) => total + countOf(value), 0);
  if (poll.kind === "multiple" && countOf(doc?.voters) > 0) {
    return doc.voters;
  }
  return sum;
}

const numberFormat = new Intl.NumberFormat("en");

// formatCount formats n with thousands separators.
export function formatCount(n) {
  return numberFormat.format(n);
}

// formatPercent formats a share between 0 and 1 as a whole percentage,
// showing "<1%" for a share that is above zero but rounds to 0.
export function formatPercent(share) {
  if (share > 0 && share < 0.005) {
    return "<1%";
  }
  return `${Math.round(share * 100)}%`;
}

// plural returns "1 vote" or "3 votes" style text.
export function plural(n, singular, pluralWord = `${singular}s`) {
  return `${formatCount(n)} ${n === 1 ? singular : pluralWord}`;
}

// createElement makes an element with attributes, where "text" sets the
// text content, and appends children. It never sets inline styles.
export function createElement(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name === "text") {
      element.textContent = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children);
  return element;
}

// COUNT_ANIMATION_MS is how long a bar's number takes to count up or down
// to a new value. Users who ask for reduced motion see the value at once.
const COUNT_ANIMATION_MS = 700;

const reducedMotion = typeof window.matchMedia === "function"
  ? window.matchMedia("(prefers-reduced-motion: reduce)")
  : { matches: true };

// BarChart draws a poll's counts as one bar per option in a list element.
// Bar widths are the option's share of shareBase, and a CSS transition on
// the width animates each change while the numbers count to their new
// value, so the chart moves smoothly between broadcasts.
export class BarChart {
  #list;
  #rows = new Map();
  #layout = "";

  constructor(list) {
    this.#list = list;
  }

  render(poll, doc) {
    const layout = `${poll.id}\n${poll.options.map((option) => `${option.id}\t${option.label}`).join("\n")}`;
    if (layout !== this.#layout) {
      this.#build(poll);
      this.#layout = layout;
    }

    const counts = doc && doc.counts && typeof doc.counts === "object" ? doc.counts : {};
    const base = shareBase(poll, doc);
    for (const option of poll.options) {
      const count = countOf(counts[option.id]);
      const share = base > 0 ? Math.min(1, count / base) : 0;
      this.#update(this.#rows.get(option.id), count, share);
    }
  }

  clear() {
    this.#list.replaceChildren();
    this.#rows.clear();
    this.#layout = "";
  }

  #build(poll) {
    this.clear();
    for (const option of poll.options) {
      const row = createBarRow(option.label);
      this.#rows.set(option.id, row);
      this.#list.append(row.item);
    }

    // Reading a layout property commits the zero widths, so the first
    // counts grow from the left instead of appearing at once.
    void this.#list.offsetWidth;
  }

  #update(row, count, share) {
    row.fill.style.width = `${(share * 100).toFixed(2)}%`;
    row.unit.textContent = count === 1 ? " vote, " : " votes, ";
    row.percent.textContent = formatPercent(share);
    row.item.dataset.count = String(count);
    animateCount(row, count);
  }
}

// animateCount moves the number shown in row.count from its current value
// to target over COUNT_ANIMATION_MS, ending exactly on target. Browsers do
// not run animation frames in background tabs, so a timer sets the final
// value in any case.
function animateCount(row, target) {
  cancelAnimationFrame(row.frame ?? 0);
  clearTimeout(row.finish ?? 0);
  const from = row.shown ?? 0;
  const finish = () => {
    cancelAnimationFrame(row.frame ?? 0);
    row.shown = target;
    row.count.textContent = formatCount(target);
  };
  if (from === target || reducedMotion.matches || document.hidden) {
    finish();
    return;
  }

  const started = performance.now();
  const step = (now) => {
    const progress = Math.min(1, (now - started) / COUNT_ANIMATION_MS);
    const eased = 1 - (1 - progress) ** 3;
    row.shown = progress >= 1 ? target : Math.round(from + (target - from) * eased);
    row.count.textContent = formatCount(row.shown);
    if (progress < 1) {
      row.frame = requestAnimationFrame(step);
    }
  };
  row.frame = requestAnimationFrame(step);
  row.finish = setTimeout(finish, COUNT_ANIMATION_MS + 100);
}

function createBarRow(label) {
  const count = createElement("span", { class: "bar-count" });
  const unit = createElement("span", { class: "visually-hidden" });
  const percent = createElement("span", { class: "bar-percent" });
  const fill = createElement("div", { class: "bar-fill" });
  const item = createElement(
    "li",
    { class: "bar-row" },
    createElement(
      "div",
      { class: "bar-text" },
      createElement("span", { class: "bar-label", text: label }),
      createElement("span", { class: "bar-numbers" }, count, unit, percent),
    ),
    createElement("div", { class: "bar-track", "aria-hidden": "true" }, fill),
  );
  return { item, count, unit, percent, fill };
}
