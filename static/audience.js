// Audience page (/e/{code}): the event's open and closed polls as large
// buttons, the state of each vote, and live results over one WebSocket.
//
// Votes go through an outbox kept in localStorage: a vote stays there,
// with its vote_id, until the server acknowledges it, and is sent again
// with the same vote_id after every reconnect, so a retry never counts
// twice. The session from the server's welcome is kept in localStorage per
// event and sent back on reconnect, so a reload is the same voter.

import {
  BarChart,
  LiveSocket,
  ResultsStore,
  apiRequest,
  backoffDelay,
  createElement,
  describeError,
  isPoll,
  joinCodeFromPath,
  localStore,
  newVoteId,
  plural,
  resultsFromMessage,
  socketURL,
} from "./common.js";

// ACK_TIMEOUT_MS is how long a sent vote waits for its ack before it is
// sent again on the open socket with the same vote_id.
const ACK_TIMEOUT_MS = 15000;

// MAX_BUSY_RETRIES bounds the automatic retries of a vote that the server
// rejected as overloaded or rate_limited. After that the page shows the
// vote as refused.
const MAX_BUSY_RETRIES = 6;

// OUTBOX_MAX_AGE_MS drops queued votes older than a day when the page
// loads, so a phone that comes back to an old event sends nothing stale.
const OUTBOX_MAX_AGE_MS = 24 * 60 * 60 * 1000;

// EVENT_CHECK_INTERVAL_MS limits how often a failing connection requests
// the event from the HTTP API to learn whether it exists.
const EVENT_CHECK_INTERVAL_MS = 10000;

// BUSY_REASONS maps the error codes that the page retries by itself to
// the reason it shows while it waits.
const BUSY_REASONS = {
  overloaded: "The server is busy.",
  rate_limited: "The server is limiting how fast votes arrive.",
};

const code = joinCodeFromPath("/e/");
const storageKeys = {
  session: `livevote.session.${code}`,
  outbox: `livevote.outbox.${code}`,
  votes: `livevote.votes.${code}`,
};

const dom = {
  title: document.getElementById("event-title"),
  code: document.getElementById("event-code"),
  connection: document.getElementById("connection-text"),
  reconnect: document.getElementById("reconnect"),
  notice: document.getElementById("notice"),
  empty: document.getElementById("empty"),
  polls: document.getElementById("polls"),
  announcer: document.getElementById("announcer"),
};

const state = {
  event: null,
  polls: new Map(),
  welcomed: false,
  lastEventCheck: 0,
  outboxTimer: 0,
};
const results = new ResultsStore();
const views = new Map();
const selections = new Map();
let outbox = [];
let voteStates = {};
let socket = null;
let nextViewId = 0;

start();

function start() {
  if (!code) {
    showFatal("This address has no valid join code.", "A join code is six letters or digits.");
    return;
  }

  if (window.location.pathname !== `/e/${code}`) {
    window.history.replaceState(null, "", `/e/${code}${window.location.search}`);
  }
  dom.code.textContent = code;
  outbox = loadOutbox();
  voteStates = localStore.get(storageKeys.votes) ?? {};

  socket = new LiveSocket({
    url: () => socketURL(code, localStore.get(storageKeys.session)),
    onMessage: handleMessage,
    onStatus: handleStatus,
  });
  dom.reconnect.addEventListener("click", () => socket.connectNow());
  socket.start();
  loadEventOverHttp();
}

// Connection and messages.

function handleStatus(status) {
  if (status.state === "connecting") {
    state.welcomed = false;
    setConnection("connecting", "Connecting…");
  } else if (status.state === "open") {
    setConnection("connecting", "Connected. Loading the event…");
  } else if (status.state === "closed") {
    state.welcomed = false;
    const seconds = Math.max(1, Math.round(status.delay / 1000));
    const reason = status.reason ? ` (${status.reason})` : "";
    setConnection("offline", `Connection lost${reason}. Reconnecting in ${seconds} s…`);
    maybeCheckEvent();
    refreshAllViews();
  }
}

function setConnection(kind, text) {
  dom.connection.dataset.state = kind;
  dom.connection.textContent = text;
  dom.reconnect.hidden = kind !== "offline";
}

function handleMessage(message) {
  switch (message.type) {
    case "welcome":
      handleWelcome(message);
      break;
    case "ack":
      handleAck(message);
      break;
    case "results":
      handleResults(resultsFromMessage(message));
      break;
    case "poll":
      handlePollMessage(message.poll);
      break;
    case "error":
      handleServerError(message.error);
      break;
    default:
      break;
  }
}

function handleWelcome(message) {
  if (typeof message.session === "string" && message.session) {
    localStore.set(storageKeys.session, message.session);
  }
  state.welcomed = true;
  socket.resetBackoff();
  setConnection("online", "Connected");

  setEvent(message.event);
  for (const doc of Array.isArray(message.results) ? message.results : []) {
    results.accept(doc);
  }
  renderPolls();

  for (const vote of outbox) {
    vote.due = 0;
  }
  flushOutbox();
}

function handleResults(doc) {
  if (results.accept(doc)) {
    refreshView(doc.poll);
  }
}

function handlePollMessage(poll) {
  if (!isPoll(poll)) {
    return;
  }
  if (state.event && poll.event && poll.event !== state.event.id) {
    return;
  }

  const previous = state.polls.get(poll.id);
  state.polls.set(poll.id, poll);
  if (poll.state === "open" && previous?.state !== "open") {
    announce(`Poll open: ${poll.question}`);
  } else if (poll.state === "closed" && previous?.state === "open") {
    announce(`Voting closed: ${poll.question}`);
  } else if (poll.results_visible !== false && previous?.results_visible === false) {
    announce(`Results shown: ${poll.question}`);
  }
  renderPolls();
}

function handleServerError(error) {
  const errorCode = error?.code ?? "";
  if (errorCode === "unknown_event") {
    showEventNotFound();
    return;
  }
  if (errorCode === "invalid_session") {
    localStore.remove(storageKeys.session);
    showNotice("Your voting session was not valid any more, so this page started a new one.");
    socket.restart();
    return;
  }
  showNotice(describeError(errorCode, error?.message));
}

// The event.

function setEvent(event) {
  if (!event || typeof event !== "object") {
    return;
  }

  state.event = { id: event.id, code: event.code, title: String(event.title ?? "") };
  dom.title.textContent = state.event.title || `Event ${code}`;
  document.title = `${state.event.title || code} · LiveVote`;

  state.polls = new Map();
  for (const poll of Array.isArray(event.polls) ? event.polls : []) {
    if (isPoll(poll)) {
      state.polls.set(poll.id, poll);
    }
  }
}

// loadEventOverHttp shows the event before the WebSocket's welcome arrives,
// and shows at once when the join code matches no event.
async function loadEventOverHttp() {
  try {
    const body = await apiRequest("GET", `/api/events/${encodeURIComponent(code)}`);
    if (!state.welcomed) {
      setEvent(body?.event && typeof body.event === "object" ? body.event : body);
      renderPolls();
    }
  } catch (error) {
    if (error.status === 404) {
      showEventNotFound();
    }
  }
}

// maybeCheckEvent requests the event from the HTTP API when the socket
// closes before a welcome, because a browser does not show the
// HTTP status of a refused WebSocket handshake.
function maybeCheckEvent() {
  const now = Date.now();
  if (state.event || now - state.lastEventCheck < EVENT_CHECK_INTERVAL_MS) {
    return;
  }
  state.lastEventCheck = now;
  loadEventOverHttp();
}

function showEventNotFound() {
  showFatal(`No event has the join code ${code}.`, "Check the code with the presenter and try again.");
}

function showFatal(heading, detail) {
  socket?.stop();
  dom.title.textContent = heading;
  dom.connection.hidden = true;
  dom.reconnect.hidden = true;
  dom.empty.hidden = true;
  dom.polls.replaceChildren();
  views.clear();
  dom.notice.replaceChildren(
    createElement("p", { text: detail }),
    createElement("p", {}, createElement("a", { href: "/", text: "Enter another join code" })),
  );
  dom.notice.hidden = false;
}

function showNotice(text) {
  dom.notice.replaceChildren(createElement("p", { text }));
  dom.notice.hidden = false;
}

function announce(text) {
  dom.announcer.textContent = text;
}

// The outbox.

function loadOutbox() {
  const stored = localStore.get(storageKeys.outbox);
  const now = Date.now();
  const fresh = (Array.isArray(stored) ? stored : []).filter(
    (vote) => vote && typeof vote.vote_id === "string" && now - (vote.created ?? 0) < OUTBOX_MAX_AGE_MS,
  );
  return fresh.map((vote) => ({ ...vote, due: 0 }));
}

function saveOutbox() {
  if (outbox.length === 0) {
    localStore.remove(storageKeys.outbox);
    return;
  }
  localStore.set(storageKeys.outbox, outbox);
}

function castVote(poll, options) {
  const vote = {
    vote_id: newVoteId(),
    poll: poll.id,
    options,
    created: Date.now(),
    due: 0,
    busyRetries: 0,
  };
  outbox.push(vote);
  saveOutbox();

  setVoteState(poll.id, { vote_id: vote.vote_id, options, state: "sending" });
  flushOutbox();
}

// flushOutbox sends every queued vote whose time has come and plans the
// next run. It sends nothing before the welcome, which confirms the
// session, and the next welcome makes every queued vote due again.
function flushOutbox() {
  clearTimeout(state.outboxTimer);
  if (!state.welcomed || !socket.isOpen) {
    return;
  }

  const now = Date.now();
  let next = Infinity;
  for (const vote of outbox) {
    if (vote.due <= now) {
      socket.send({ type: "vote", vote_id: vote.vote_id, poll: vote.poll, options: vote.options });
      vote.due = now + ACK_TIMEOUT_MS;
    }
    next = Math.min(next, vote.due);
  }
  saveOutbox();

  if (next !== Infinity) {
    state.outboxTimer = setTimeout(flushOutbox, Math.max(0, next - Date.now()));
  }
}

function handleAck(message) {
  const index = outbox.findIndex((vote) => vote.vote_id === message.vote_id);
  const vote = index >= 0 ? outbox[index] : null;
  const pollId = vote?.poll ?? pollOfVote(message.vote_id);
  if (!pollId) {
    return;
  }

  const errorCode = message.error?.code ?? "";
  if (message.status === "rejected" && vote && Object.hasOwn(BUSY_REASONS, errorCode) && vote.busyRetries < MAX_BUSY_RETRIES) {
    vote.busyRetries += 1;
    vote.due = Date.now() + backoffDelay(vote.busyRetries);
    saveOutbox();
    updateVoteState(pollId, message.vote_id, { state: "retrying", code: errorCode });
    flushOutbox();
    return;
  }

  if (message.status !== "accepted" && message.status !== "duplicate" && message.status !== "rejected") {
    console.warn("LiveVote: ignored an ack with an unknown status:", message.status);
    return;
  }
  if (index >= 0) {
    outbox.splice(index, 1);
    saveOutbox();
  }
  applyAck(pollId, message, errorCode);
}

function applyAck(pollId, message, errorCode) {
  if (message.status === "rejected") {
    updateVoteState(pollId, message.vote_id, {
      state: "refused",
      code: errorCode,
      message: message.error?.message ?? "",
    });
    markClosedOnRejection(pollId, errorCode);
    return;
  }
  updateVoteState(pollId, message.vote_id, { state: "counted", receipt: message.receipt ?? null });
}

// markClosedOnRejection shows a poll as closed when the server rejected a vote
// for that reason, in case the "poll" message about it was missed.
function markClosedOnRejection(pollId, errorCode) {
  const poll = state.polls.get(pollId);
  if (errorCode === "poll_closed" && poll && poll.state === "open") {
    state.polls.set(pollId, { ...poll, state: "closed" });
    renderPolls();
  }
}

function pollOfVote(voteId) {
  for (const [pollId, vote] of Object.entries(voteStates)) {
    if (vote?.vote_id === voteId) {
      return pollId;
    }
  }
  return "";
}

// Vote states: the newest vote per poll and what happened to it.

// setVoteState shows vote as the poll's newest vote and stores it for the
// next visit. Other tabs of the same event share the storage, so only this
// poll's entry is written, and a vote that another tab got counted stays
// stored until a newer vote is counted: a vote on its way keeps the counted
// one beside it ("replaces"), and a refusal puts it back.
function setVoteState(pollId, vote) {
  voteStates[pollId] = vote;

  const stored = localStore.get(storageKeys.votes) ?? {};
  const previous = stored[pollId];
  let next = vote;
  if (vote.state === "refused" && previous?.vote_id === vote.vote_id && previous.replaces) {
    next = previous.replaces;
  } else if (vote.state !== "counted" && vote.state !== "refused" && previous?.state === "counted" && previous.vote_id !== vote.vote_id) {
    next = { ...vote, replaces: previous };
  } else if (previous?.vote_id === vote.vote_id && previous.replaces && vote.state !== "counted") {
    next = { ...vote, replaces: previous.replaces };
  }
  stored[pollId] = next;
  localStore.set(storageKeys.votes, stored);
  refreshView(pollId);
}

// updateVoteState changes the state of a poll's newest vote. An ack for an
// older vote of the same poll changes nothing on screen.
function updateVoteState(pollId, voteId, patch) {
  const current = voteStates[pollId];
  if (!current || current.vote_id !== voteId) {
    return;
  }
  setVoteState(pollId, { ...current, ...patch });
}

// isLocked reports whether the poll takes no further vote from this voter.
function isLocked(poll) {
  const vote = voteStates[poll.id];
  if (!vote) {
    return false;
  }
  if (vote.state === "refused") {
    return vote.code === "already_voted";
  }
  return !poll.allow_change;
}

function voteStatusText(vote) {
  if (!vote) {
    return "";
  }
  switch (vote.state) {
    case "sending":
      return socket.isOpen ? "Sending…" : "Sending… The vote is saved and goes out when the connection is back.";
    case "retrying":
      return `Sending… ${BUSY_REASONS[vote.code] ?? ""} This page sends the vote again in a moment.`;
    case "counted":
      return countedText(vote.receipt);
    case "refused":
      return `Refused: ${describeError(vote.code, vote.message)}`;
    default:
      return "";
  }
}

function countedText(receipt) {
  if (!receipt || receipt.shard === undefined || receipt.seq === undefined) {
    return "Counted.";
  }
  return `Counted. Receipt: shard ${receipt.shard}, sequence ${receipt.seq}.`;
}

// Choosing options.

function chooseOption(pollId, optionId) {
  const poll = state.polls.get(pollId);
  if (!poll || poll.state !== "open" || isLocked(poll)) {
    return;
  }

  if (poll.kind === "multiple") {
    const selection = selectionOf(poll);
    if (selection.has(optionId)) {
      selection.delete(optionId);
    } else {
      selection.add(optionId);
    }
    refreshView(pollId);
    return;
  }

  const vote = voteStates[pollId];
  const pending = vote && (vote.state === "sending" || vote.state === "retrying" || vote.state === "counted");
  if (pending && vote.options.length === 1 && vote.options[0] === optionId) {
    return;
  }
  castVote(poll, [optionId]);
}

function submitSelection(pollId) {
  const poll = state.polls.get(pollId);
  if (!poll || poll.state !== "open" || isLocked(poll)) {
    return;
  }

  const selection = selectionOf(poll);
  const options = poll.options.map((option) => option.id).filter((id) => selection.has(id));
  if (options.length > 0) {
    castVote(poll, options);
  }
}

// selectionOf returns the options ticked in a multiple-choice poll, which
// start as the options of this voter's newest vote.
function selectionOf(poll) {
  if (!selections.has(poll.id)) {
    selections.set(poll.id, new Set(voteStates[poll.id]?.options ?? []));
  }
  return selections.get(poll.id);
}

// Rendering.

// visiblePolls returns the open polls, then the closed ones, each newest
// first by the server's creation order; drafts stay hidden.
function visiblePolls() {
  const newestFirst = [...state.polls.values()].reverse();
  return [
    ...newestFirst.filter((poll) => poll.state === "open"),
    ...newestFirst.filter((poll) => poll.state === "closed"),
  ];
}

function renderPolls() {
  const polls = visiblePolls();
  const ids = new Set(polls.map((poll) => poll.id));
  for (const [pollId, view] of views) {
    if (!ids.has(pollId)) {
      view.root.remove();
      views.delete(pollId);
    }
  }

  polls.forEach((poll, index) => {
    let view = views.get(poll.id);
    if (!view || view.layout !== optionLayout(poll)) {
      view?.root.remove();
      view = createPollView(poll);
      views.set(poll.id, view);
    }
    if (dom.polls.children[index] !== view.root) {
      dom.polls.insertBefore(view.root, dom.polls.children[index] ?? null);
    }
    updatePollView(view, poll);
  });

  dom.empty.hidden = !state.event || polls.some((poll) => poll.state === "open");
}

function refreshView(pollId) {
  const view = views.get(pollId);
  const poll = state.polls.get(pollId);
  if (view && poll) {
    updatePollView(view, poll);
  }
}

function refreshAllViews() {
  for (const pollId of views.keys()) {
    refreshView(pollId);
  }
}

function optionLayout(poll) {
  return `${poll.kind}\n${poll.options.map((option) => `${option.id}\t${option.label}`).join("\n")}`;
}

function createPollView(poll) {
  nextViewId += 1;
  const headingId = `poll-${nextViewId}`;
  const heading = createElement("h2", { id: headingId, class: "poll-question" });
  const hint = createElement("p", { class: "hint" });
  const group = createElement("div", { class: "options", role: "group", "aria-labelledby": headingId, "data-kind": poll.kind });

  const buttons = new Map();
  for (const option of poll.options) {
    const button = createElement("button", { type: "button", class: "option", "aria-pressed": "false", text: option.label });
    button.addEventListener("click", () => chooseOption(poll.id, option.id));
    buttons.set(option.id, button);
    group.append(button);
  }

  const submit = createElement("button", { type: "button", class: "primary submit", text: "Submit vote" });
  submit.addEventListener("click", () => submitSelection(poll.id));

  const status = createElement("p", { class: "vote-status", "aria-live": "polite" });
  const closed = createElement("p", { class: "closed-note", text: "Voting closed" });
  const bars = createElement("ol", { class: "bars", "aria-label": "Results" });
  const totals = createElement("p", { class: "totals" });
  const root = createElement("section", { class: "card poll", "aria-labelledby": headingId },
    heading, hint, closed, group, submit, status, bars, totals);

  return {
    root, layout: optionLayout(poll), heading, hint, group, buttons, submit, status, closed, bars, totals,
    chart: new BarChart(bars),
  };
}

function updatePollView(view, poll) {
  const open = poll.state === "open";
  const locked = isLocked(poll);
  const vote = voteStates[poll.id];
  const chosen = poll.kind === "multiple" ? selectionOf(poll) : new Set(vote?.options ?? []);

  view.heading.textContent = poll.question;
  view.hint.textContent = open ? hintText(poll) : "";
  view.hint.hidden = !open;
  view.closed.hidden = poll.state !== "closed";
  view.root.dataset.state = poll.state;

  for (const [optionId, button] of view.buttons) {
    button.setAttribute("aria-pressed", chosen.has(optionId) ? "true" : "false");
    button.disabled = !open || locked;
  }
  view.group.hidden = !open;
  view.submit.hidden = !open || poll.kind !== "multiple";
  view.submit.disabled = locked || chosen.size === 0 || isSameAsNewestVote(vote, chosen);

  const statusText = voteStatusText(vote);
  if (view.status.textContent !== statusText) {
    view.status.textContent = statusText;
  }
  view.status.dataset.state = vote?.state ?? "";
  updateResults(view, poll);
}

// isSameAsNewestVote reports whether chosen matches the options of a vote
// that is on its way or counted, so submitting it again would change
// nothing.
function isSameAsNewestVote(vote, chosen) {
  if (!vote || vote.state === "refused") {
    return false;
  }
  return vote.options.length === chosen.size && vote.options.every((id) => chosen.has(id));
}

function hintText(poll) {
  const instruction = poll.kind === "multiple" ? "Choose one or more options, then Submit vote." : "Tap one option to vote.";
  const change = poll.allow_change ? "You can change your vote while voting is open." : "Your first vote is final.";
  return `${instruction} ${change}`;
}

function updateResults(view, poll) {
  const doc = results.get(poll.id);
  if (poll.results_visible === false) {
    view.bars.hidden = true;
    view.totals.textContent = "The presenter is not showing the results right now.";
    return;
  }
  view.bars.hidden = !doc;
  if (!doc) {
    view.totals.textContent = "";
    return;
  }

  view.chart.render(poll, doc);
  const final = doc.final ? " Final results." : "";
  view.totals.textContent = `${plural(doc.total_votes ?? 0, "vote")} from ${plural(doc.voters ?? 0, "voter")}.${final}`;
}
