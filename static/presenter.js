// Presenter page (/present/{code}): the join code, link and QR code for the
// room, a form to create polls, Open, Close, Hide results and Show results
// buttons, CSV export, and a live bar chart of the selected poll with its
// participation (voters over connected audience).
//
// The presenter token arrives in the URL fragment (#token=...), which the
// browser never sends to the server. The page keeps it in sessionStorage,
// sends it only in the Authorization header and in the first message of
// its presenter socket, and removes the fragment from the address bar
// because the room may see it on the projector.

import {
  BarChart,
  LiveSocket,
  ResultsStore,
  apiRequest,
  createElement,
  describeError,
  formatPercent,
  isPoll,
  joinCodeFromPath,
  plural,
  resultsFromMessage,
  sessionStore,
  socketURL,
} from "./common.js";

// A poll has between MIN_OPTIONS and MAX_OPTIONS options.
const MIN_OPTIONS = 2;
const MAX_OPTIONS = 10;

const STATE_LABELS = { draft: "Draft", open: "Open", closed: "Closed" };

const code = joinCodeFromPath("/present/");
const tokenKey = `livevote.presenter.${code}`;

const dom = {
  title: document.getElementById("event-title"),
  connection: document.getElementById("connection-text"),
  notice: document.getElementById("notice"),
  stage: document.getElementById("stage"),
  joinLink: document.getElementById("join-link"),
  joinCode: document.getElementById("join-code"),
  qr: document.getElementById("qr"),
  chartQuestion: document.getElementById("chart-question"),
  chartState: document.getElementById("chart-state"),
  chartBars: document.getElementById("chart-bars"),
  chartTotals: document.getElementById("chart-totals"),
  chartFinal: document.getElementById("chart-final"),
  chartHidden: document.getElementById("chart-hidden"),
  chartParticipation: document.getElementById("chart-participation"),
  fullscreen: document.getElementById("fullscreen"),
  pollsError: document.getElementById("polls-error"),
  pollsEmpty: document.getElementById("polls-empty"),
  pollList: document.getElementById("poll-list"),
  createSection: document.getElementById("create-section"),
  pollForm: document.getElementById("poll-form"),
  question: document.getElementById("question"),
  optionInputs: document.getElementById("option-inputs"),
  addOption: document.getElementById("add-option"),
  allowChange: document.getElementById("allow-change"),
  resultsVisible: document.getElementById("results-visible"),
  pollFormError: document.getElementById("poll-form-error"),
  createPoll: document.getElementById("create-poll"),
  audienceLink: document.getElementById("audience-link"),
  copyAudience: document.getElementById("copy-audience"),
  presenterLinkBlock: document.getElementById("presenter-link-block"),
  presenterLink: document.getElementById("presenter-link"),
  copyPresenter: document.getElementById("copy-presenter"),
  copyStatus: document.getElementById("copy-status"),
  noToken: document.getElementById("no-token"),
};

const state = {
  event: null,
  polls: new Map(),
  selected: "",
  token: "",
  lastEventCheck: 0,
  audience: null,
};
const results = new ResultsStore();
const chart = new BarChart(dom.chartBars);
const pollItems = new Map();
let socket = null;
let nextInputId = 0;

start();

function start() {
  if (!code) {
    showFatal("This address has no valid join code.");
    return;
  }

  state.token = readToken();
  window.history.replaceState(null, "", `/present/${code}${window.location.search}`);

  showJoinDetails();
  setUpPollForm();
  setUpCopyButtons();
  setUpFullscreen();
  renderChart();

  socket = new LiveSocket({
    url: () => socketURL(code, "", state.token ? "presenter" : ""),
    onMessage: handleMessage,
    onStatus: handleStatus,
  });
  socket.start();
  loadEventOverHttp();
}

// readToken takes the token from the URL fragment and stores it for this
// tab, or returns the one stored earlier, or "" when there is none.
function readToken() {
  const fromFragment = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (fromFragment) {
    sessionStore.set(tokenKey, fromFragment);
    return fromFragment;
  }
  return sessionStore.get(tokenKey) ?? "";
}

function showJoinDetails() {
  const audienceURL = `${window.location.origin}/e/${code}`;
  // The line may break after the host, never inside the join code.
  dom.joinLink.replaceChildren(window.location.host, document.createElement("wbr"), `/e/${code}`);
  dom.joinCode.textContent = code;
  dom.audienceLink.value = audienceURL;

  // The server draws the QR code for the host this page was loaded from.
  dom.qr.alt = `QR code of the audience link ${audienceURL}`;
  dom.qr.src = `/api/events/${encodeURIComponent(code)}/qr.svg`;
  dom.qr.addEventListener("load", () => { dom.qr.hidden = false; });

  if (state.token) {
    dom.presenterLink.value = `${window.location.origin}/present/${code}#token=${encodeURIComponent(state.token)}`;
  } else {
    dom.presenterLinkBlock.hidden = true;
  }
}

// Connection and messages.

function handleStatus(status) {
  if (status.state === "connecting") {
    setConnection("connecting", "Connecting…");
  } else if (status.state === "open") {
    setConnection("connecting", "Connected. Loading the event…");
    if (state.token) {
      socket.send({ type: "auth", token: state.token });
    }
  } else if (status.state === "closed") {
    const seconds = Math.max(1, Math.round(status.delay / 1000));
    setConnection("offline", `Connection lost. Reconnecting in ${seconds} s…`);
    maybeCheckEvent();
  }
}

function setConnection(kind, text) {
  dom.connection.dataset.state = kind;
  dom.connection.textContent = text;
}

function handleMessage(message) {
  switch (message.type) {
    case "welcome":
      handleWelcome(message);
      break;
    case "results":
      handleResults(resultsFromMessage(message));
      break;
    case "poll":
      upsertPoll(message.poll);
      break;
    case "presence":
      setAudience(message.audience);
      break;
    case "error":
      handleServerError(message.error);
      break;
    default:
      break;
  }
}

function handleWelcome(message) {
  socket.resetBackoff();
  setConnection("online", "Live");
  setEvent(message.event);
  for (const doc of Array.isArray(message.results) ? message.results : []) {
    results.accept(doc);
  }
  if (Number.isFinite(message.audience)) {
    state.audience = message.audience;
  }
  renderPollList();
  renderChart();
}

function setAudience(count) {
  if (Number.isFinite(count) && count >= 0) {
    state.audience = count;
    renderChart();
  }
}

function handleResults(doc) {
  if (results.accept(doc) && doc.poll === state.selected) {
    renderChart();
  }
}

function handleServerError(error) {
  if (error?.code === "unknown_event") {
    showFatal(`No event has the join code ${code}.`);
    return;
  }
  if (error?.code === "unauthorized" && state.token) {
    dropToken();
    return;
  }
  showNotice(describeError(error?.code, error?.message));
}

// dropToken turns the page into a results view after the server rejected
// the token, and reconnects as an audience socket.
function dropToken() {
  state.token = "";
  sessionStore.remove(tokenKey);
  dom.presenterLinkBlock.hidden = true;
  dom.createSection.hidden = true;
  dom.noToken.textContent = "The presenter token in this link was not accepted, so this page shows only the results the audience can see. Open the presenter link you got when you created the event to manage polls.";
  dom.noToken.hidden = false;
  showNotice(describeError("unauthorized"));
  renderPollList();
  renderChart();
  socket.restart();
}

// The event and its polls.

function setEvent(event) {
  if (!event || typeof event !== "object") {
    return;
  }

  state.event = { id: event.id, code: event.code, title: String(event.title ?? "") };
  dom.title.textContent = state.event.title || `Event ${code}`;
  document.title = `${state.event.title || code} · LiveVote presenter`;

  state.polls = new Map();
  for (const poll of Array.isArray(event.polls) ? event.polls : []) {
    if (isPoll(poll)) {
      state.polls.set(poll.id, poll);
    }
  }
  if (!state.polls.has(state.selected)) {
    state.selected = defaultSelection();
  }
}

// defaultSelection returns the newest open poll, or else the newest poll.
function defaultSelection() {
  const polls = [...state.polls.values()];
  const open = polls.filter((poll) => poll.state === "open");
  const pick = open.at(-1) ?? polls.at(-1);
  return pick ? pick.id : "";
}

async function loadEventOverHttp() {
  try {
    const body = await apiRequest("GET", `/api/events/${encodeURIComponent(code)}`);
    if (!state.event) {
      setEvent(body?.event && typeof body.event === "object" ? body.event : body);
      renderPollList();
      renderChart();
    }
  } catch (error) {
    if (error.status === 404) {
      showFatal(`No event has the join code ${code}.`);
    }
  }
}

// maybeCheckEvent requests the event from the HTTP API when the socket
// closes before the event is known, because a browser does not
// show the HTTP status of a refused WebSocket handshake.
function maybeCheckEvent() {
  const now = Date.now();
  if (state.event || now - state.lastEventCheck < 10000) {
    return;
  }
  state.lastEventCheck = now;
  loadEventOverHttp();
}

// upsertPoll stores a poll from the server, selects it when it has just
// opened, and fetches the final results when it has just closed.
function upsertPoll(poll) {
  if (!isPoll(poll) || (state.event && poll.event && poll.event !== state.event.id)) {
    return;
  }

  const previous = state.polls.get(poll.id);
  state.polls.set(poll.id, poll);
  if (poll.state === "open" && previous?.state !== "open") {
    state.selected = poll.id;
  }
  if (!state.selected) {
    state.selected = poll.id;
  }
  if (poll.state === "closed" && previous?.state !== "closed") {
    fetchResults(poll.id);
  }

  renderPollList();
  renderChart();
}

function selectPoll(pollId) {
  state.selected = pollId;
  renderPollList();
  renderChart();
  if (!results.get(pollId) && state.polls.get(pollId)?.state !== "draft") {
    fetchResults(pollId);
  }
}

async function fetchResults(pollId) {
  try {
    const doc = await apiRequest("GET", `/api/polls/${encodeURIComponent(pollId)}/results`, { token: state.token });
    handleResults(doc);
  } catch (error) {
    if (error.status !== 404 && error.status !== 401) {
      console.warn(`LiveVote: reading the results of poll ${pollId} failed:`, error.message);
    }
  }
}

async function changePollState(pollId) {
  const poll = state.polls.get(pollId);
  const action = nextAction(poll);
  if (!action) {
    return;
  }

  const entry = pollItems.get(pollId);
  entry.action.disabled = true;
  try {
    const body = await apiRequest("POST", `/api/polls/${encodeURIComponent(pollId)}/${action}`, { token: state.token });
    dom.pollsError.textContent = "";
    upsertPoll(isPoll(body) ? body : body?.poll);
  } catch (error) {
    dom.pollsError.textContent = `The poll "${poll.question}" was not ${action === "open" ? "opened" : "closed"}. ${error.message}`;
  } finally {
    entry.action.disabled = false;
  }
}

async function changeVisibility(pollId) {
  const poll = state.polls.get(pollId);
  if (!poll) {
    return;
  }

  const action = poll.results_visible === false ? "reveal" : "hide";
  const entry = pollItems.get(pollId);
  entry.visibility.disabled = true;
  try {
    const body = await apiRequest("POST", `/api/polls/${encodeURIComponent(pollId)}/${action}`, { token: state.token });
    dom.pollsError.textContent = "";
    upsertPoll(isPoll(body) ? body : body?.poll);
  } catch (error) {
    const verb = action === "hide" ? "hidden" : "shown";
    dom.pollsError.textContent = `The results of "${poll.question}" were not ${verb}. ${error.message}`;
  } finally {
    entry.visibility.disabled = false;
  }
}

// downloadCSV fetches the results as CSV with the token in a header, which a
// plain link cannot send, and saves them through a temporary object URL.
async function downloadCSV(pollId) {
  const poll = state.polls.get(pollId);
  try {
    const response = await fetch(`/api/polls/${encodeURIComponent(pollId)}/results.csv`, {
      headers: { Authorization: `Bearer ${state.token}` },
      cache: "no-store",
    });
    if (!response.ok) {
      throw new Error(`The server returned HTTP ${response.status}.`);
    }
    const url = URL.createObjectURL(await response.blob());
    const link = createElement("a", { href: url, download: `poll-${slug(poll?.question ?? pollId)}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    dom.pollsError.textContent = "";
  } catch (error) {
    dom.pollsError.textContent = `The results were not exported. ${error.message || describeError("network_error")}`;
  }
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "results";
}

function nextAction(poll) {
  if (poll?.state === "draft") {
    return "open";
  }
  if (poll?.state === "open") {
    return "close";
  }
  return "";
}

// Rendering.

function renderPollList() {
  const polls = [...state.polls.values()];
  dom.pollsEmpty.hidden = polls.length > 0;

  polls.forEach((poll, index) => {
    let entry = pollItems.get(poll.id);
    if (!entry) {
      entry = createPollItem(poll.id);
      pollItems.set(poll.id, entry);
    }
    if (dom.pollList.children[index] !== entry.item) {
      dom.pollList.insertBefore(entry.item, dom.pollList.children[index] ?? null);
    }
    updatePollItem(entry, poll);
  });
}

function createPollItem(pollId) {
  nextInputId += 1;
  const select = createElement("button", { type: "button", class: "poll-select", id: `poll-select-${nextInputId}` });
  const badge = createElement("span", { class: "state-badge" });
  const action = createElement("button", { type: "button", class: "poll-action", "aria-describedby": select.id });
  const visibility = createElement("button", { type: "button", class: "poll-action secondary", "aria-describedby": select.id });
  const csv = createElement("button", { type: "button", class: "poll-action secondary", "aria-describedby": select.id, text: "Export CSV" });
  select.addEventListener("click", () => selectPoll(pollId));
  action.addEventListener("click", () => changePollState(pollId));
  visibility.addEventListener("click", () => changeVisibility(pollId));
  csv.addEventListener("click", () => downloadCSV(pollId));

  const buttons = createElement("div", { class: "poll-buttons" }, badge, action, visibility, csv);
  const item = createElement("li", { class: "poll-item" }, select, buttons);
  return { item, select, badge, action, visibility, csv };
}

function updatePollItem(entry, poll) {
  entry.select.textContent = poll.question;
  if (poll.id === state.selected) {
    entry.select.setAttribute("aria-current", "true");
  } else {
    entry.select.removeAttribute("aria-current");
  }
  const hidden = poll.results_visible === false;
  entry.badge.textContent = `${STATE_LABELS[poll.state] ?? poll.state}${hidden ? ", results hidden" : ""}`;
  entry.badge.dataset.state = poll.state;
  entry.visibility.textContent = hidden ? "Show results" : "Hide results";
  entry.visibility.hidden = !state.token;
  entry.csv.hidden = !state.token || poll.state === "draft";

  const action = nextAction(poll);
  entry.action.hidden = !action || !state.token;
  entry.action.textContent = action === "open" ? "Open" : "Close";
  entry.action.className = action === "close" ? "poll-action danger" : "poll-action primary";
}

function renderChart() {
  const poll = state.polls.get(state.selected);
  if (!poll) {
    dom.chartQuestion.textContent = state.polls.size > 0 ? "Select a poll" : "No poll yet";
    dom.chartState.textContent = state.token ? "Create a poll, then open it to collect votes." : "";
    dom.chartTotals.textContent = "";
    dom.chartParticipation.textContent = "";
    dom.chartFinal.hidden = true;
    dom.chartHidden.hidden = true;
    chart.clear();
    return;
  }

  const doc = results.get(poll.id);
  dom.stage.dataset.state = poll.state;
  dom.chartQuestion.textContent = poll.question;
  dom.chartState.textContent = chartStateText(poll, doc);
  // The stage is on the projector, so hidden results stay off it too; the
  // totals and participation still show that votes are coming in.
  dom.chartBars.hidden = poll.results_visible === false;
  chart.render(poll, doc);
  dom.chartTotals.textContent = doc
    ? `${plural(doc.total_votes ?? 0, "vote")} from ${plural(doc.voters ?? 0, "voter")}`
    : "No votes yet";
  dom.chartFinal.hidden = !doc?.final;
  dom.chartHidden.hidden = poll.results_visible !== false;
  dom.stage.dataset.results = poll.results_visible === false ? "hidden" : "visible";
  dom.chartParticipation.textContent = participationText(doc);
}

// participationText returns "Participation: 12 of 40 connected (30%)" for
// presenters, who learn the audience count; views without a token do not.
function participationText(doc) {
  if (state.audience === null || !state.token) {
    return "";
  }
  const voters = doc?.voters ?? 0;
  const connected = plural(state.audience, "person connected", "people connected");
  if (state.audience === 0) {
    return `Participation: ${plural(voters, "voter")}, ${connected}`;
  }
  return `Participation: ${plural(voters, "voter")} of ${connected} (${formatPercent(voters / state.audience)})`;
}

function chartStateText(poll, doc) {
  const kind = poll.kind === "multiple" ? "Voters may pick several options." : "";
  if (poll.state === "draft") {
    return "Not open yet.";
  }
  if (poll.state === "open") {
    return `Voting open. ${kind}`.trim();
  }
  return doc?.final ? "Voting closed." : "Voting closed. Waiting for the final count…";
}

function showFatal(text) {
  socket?.stop();
  dom.title.textContent = text;
  dom.connection.hidden = true;
  dom.stage.hidden = true;
  document.querySelector(".controls").hidden = true;
  dom.notice.replaceChildren(
    createElement("p", { text: "Check the presenter link you got when you created the event." }),
    createElement("p", {}, createElement("a", { href: "/", text: "Go to the start page" })),
  );
  dom.notice.hidden = false;
}

function showNotice(text) {
  dom.notice.replaceChildren(createElement("p", { text }));
  dom.notice.hidden = false;
}

// The poll form.

function setUpPollForm() {
  if (!state.token) {
    dom.createSection.hidden = true;
    dom.noToken.hidden = false;
    return;
  }

  resetPollForm();
  dom.addOption.addEventListener("click", () => addOptionInput().focus());
  dom.pollForm.addEventListener("submit", createPoll);
}

function resetPollForm() {
  dom.pollForm.reset();
  dom.optionInputs.replaceChildren();
  for (let i = 0; i < MIN_OPTIONS; i++) {
    addOptionInput();
  }
  showFormError("");
}

function addOptionInput() {
  nextInputId += 1;
  const id = `option-input-${nextInputId}`;
  const input = createElement("input", { id, type: "text", maxlength: "100", autocomplete: "off", class: "option-input" });
  const label = createElement("label", { for: id, class: "option-label" });
  const remove = createElement("button", { type: "button", class: "secondary remove-option", text: "Remove" });
  const item = createElement("li", { class: "option-row" }, label, input, remove);
  remove.addEventListener("click", () => removeOptionInput(item));

  dom.optionInputs.append(item);
  renumberOptionInputs();
  return input;
}

function removeOptionInput(item) {
  const neighbour = item.previousElementSibling ?? item.nextElementSibling;
  item.remove();
  renumberOptionInputs();
  (neighbour?.querySelector("input") ?? dom.addOption).focus();
}

function renumberOptionInputs() {
  const items = [...dom.optionInputs.children];
  items.forEach((item, index) => {
    item.querySelector("label").textContent = `Option ${index + 1}`;
    const remove = item.querySelector(".remove-option");
    remove.setAttribute("aria-label", `Remove option ${index + 1}`);
    remove.disabled = items.length <= MIN_OPTIONS;
  });
  dom.addOption.disabled = items.length >= MAX_OPTIONS;
}

// readPollForm returns {body} for the create-poll request, or {error,
// field} naming the first field to fix.
function readPollForm() {
  const question = dom.question.value.trim();
  if (!question) {
    return { error: "Enter the question.", field: dom.question };
  }

  const labels = [];
  const inputs = [...dom.optionInputs.querySelectorAll("input")];
  for (const [index, input] of inputs.entries()) {
    const label = input.value.trim();
    if (!label) {
      return { error: `Option ${index + 1} is empty. Fill it in or remove it.`, field: input };
    }
    const twin = labels.findIndex((other) => other.toLowerCase() === label.toLowerCase());
    if (twin >= 0) {
      return { error: `Options ${twin + 1} and ${index + 1} are both "${label}". Give each option its own label.`, field: input };
    }
    labels.push(label);
  }

  const kind = dom.pollForm.elements.namedItem("kind").value === "multiple" ? "multiple" : "single";
  return {
    body: { question, options: labels, kind, allow_change: dom.allowChange.checked, results_visible: dom.resultsVisible.checked },
  };
}

async function createPoll(event) {
  event.preventDefault();

  const form = readPollForm();
  if (form.error) {
    showFormError(form.error, form.field);
    return;
  }

  dom.createPoll.disabled = true;
  dom.createPoll.textContent = "Creating…";
  try {
    const body = await apiRequest("POST", `/api/events/${encodeURIComponent(code)}/polls`, {
      body: form.body,
      token: state.token,
    });
    resetPollForm();
    // The chart keeps showing the selected poll, which the room may be
    // voting on. A new draft becomes the chart's poll when it opens.
    upsertPoll(isPoll(body) ? body : body?.poll);
    dom.question.focus();
  } catch (error) {
    showFormError(`The poll was not created. ${error.message}`);
  } finally {
    dom.createPoll.disabled = false;
    dom.createPoll.textContent = "Create poll";
  }
}

function showFormError(message, field) {
  dom.pollFormError.textContent = message;
  for (const input of dom.pollForm.querySelectorAll("input[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

// Links and full screen.

function setUpCopyButtons() {
  dom.copyAudience.addEventListener("click", () => copyField(dom.audienceLink, "Audience link"));
  dom.copyPresenter.addEventListener("click", () => copyField(dom.presenterLink, "Presenter link"));
}

async function copyField(input, name) {
  try {
    await navigator.clipboard.writeText(input.value);
    dom.copyStatus.textContent = `${name} copied.`;
  } catch {
    input.focus();
    input.select();
    dom.copyStatus.textContent = `This browser does not allow copying here. The ${name.toLowerCase()} is selected: copy it with the keyboard or the menu.`;
  }
}

function setUpFullscreen() {
  if (!document.fullscreenEnabled) {
    return;
  }

  dom.fullscreen.hidden = false;
  dom.fullscreen.addEventListener("click", () => {
    if (document.fullscreenElement) {
      document.exitFullscreen();
    } else {
      dom.stage.requestFullscreen().catch((error) => showNotice(`Full screen is not available: ${error.message}`));
    }
  });
  document.addEventListener("fullscreenchange", () => {
    dom.fullscreen.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
  });
}
