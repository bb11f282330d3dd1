// Operator dashboard (/dashboard): requests GET /api/dashboard once a second
// and shows sockets, vote rates, ack latency, participation per event and,
// per shard, votes per second, batch sizes and queue depth as bars.
//
// When the server has an operator key, the page takes it from the URL
// fragment (#key=...), which the browser never sends to the server, or from
// a form, keeps it in sessionStorage and sends it as a bearer token.

import { apiRequest, createElement, formatCount, formatPercent, sessionStore } from "./common.js";

// REFRESH_MS is the time between two requests for the figures.
const REFRESH_MS = 1000;

// HOT_FACTOR marks a shard as hot when its vote rate exceeds this multiple
// of the mean rate over all shards.
const HOT_FACTOR = 2;

// HOT_MIN_RATE is the vote rate, in votes per second, below which no shard
// counts as hot: among idle shards a few stray votes exceed twice the mean,
// and the rate column would then show "0.0" beside the mark.
const HOT_MIN_RATE = 1;

const keyStorage = "livevote.operator-key";

const dom = {
  connection: document.getElementById("connection-text"),
  keyForm: document.getElementById("key-form"),
  keyInput: document.getElementById("operator-key"),
  keyError: document.getElementById("key-error"),
  sockets: document.getElementById("fig-sockets"),
  votes: document.getElementById("fig-votes"),
  answers: document.getElementById("fig-answers"),
  p50: document.getElementById("fig-p50"),
  p99: document.getElementById("fig-p99"),
  total: document.getElementById("fig-total"),
  window: document.getElementById("window-text"),
  eventsEmpty: document.getElementById("events-empty"),
  eventsTable: document.getElementById("events-table"),
  eventsBody: document.getElementById("events-body"),
  ringText: document.getElementById("ring-text"),
  shardsBody: document.getElementById("shards-body"),
};

const shardRows = [];
let key = "";
let timer = 0;

start();

function start() {
  const fromFragment = new URLSearchParams(window.location.hash.slice(1)).get("key");
  if (fromFragment) {
    sessionStore.set(keyStorage, fromFragment);
    window.history.replaceState(null, "", window.location.pathname);
  }
  key = sessionStore.get(keyStorage) ?? "";

  dom.keyForm.addEventListener("submit", submitKey);
  refresh();
}

function submitKey(event) {
  event.preventDefault();
  const value = dom.keyInput.value.trim();
  if (!value) {
    dom.keyError.textContent = "Enter the operator key.";
    return;
  }
  key = value;
  sessionStore.set(keyStorage, key);
  dom.keyError.textContent = "";
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  try {
    const doc = await apiRequest("GET", "/api/dashboard", { token: key });
    dom.keyForm.hidden = true;
    render(doc);
    setConnection("online", `Live, updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error.status === 401) {
      showKeyForm(error.message);
      return;
    }
    setConnection("offline", `Not updated: ${error.message} Retrying…`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showKeyForm(message) {
  dom.keyForm.hidden = false;
  dom.keyError.textContent = key ? message : "";
  if (key) {
    sessionStore.remove(keyStorage);
    key = "";
  }
  setConnection("offline", "Waiting for the operator key");
  dom.keyInput.focus();
}

function setConnection(kind, text) {
  dom.connection.dataset.state = kind;
  dom.connection.textContent = text;
}

function render(doc) {
  dom.sockets.textContent = formatCount(doc.sockets ?? 0);
  dom.votes.textContent = formatRate(doc.votes_per_second);
  dom.answers.textContent = formatRate(doc.answers_per_second);
  dom.p50.textContent = formatMs(doc.ack_p50_ms);
  dom.p99.textContent = formatMs(doc.ack_p99_ms);
  dom.total.textContent = formatCount(doc.votes_accepted_total ?? 0);
  dom.window.textContent = `Rates and latency over the last ${(doc.window_seconds ?? 0).toFixed(1)} s.`;

  renderEvents(Array.isArray(doc.events) ? doc.events : []);
  renderShards(Array.isArray(doc.shards) ? doc.shards : [], doc.ring ?? {});
  renderCluster(doc.cluster);
}

// renderCluster shows which part of a cluster the page covers: its figures
// are this hub's, and its shard table lists the shards this hub holds.
function renderCluster(cluster) {
  const text = document.getElementById("cluster-text");
  if (!cluster) {
    text.hidden = true;
    return;
  }
  text.hidden = false;
  text.textContent = `This hub is one of ${cluster.members} in its cluster and holds ${cluster.local_shards} of ` +
    `${cluster.total_shards} shards. Sockets, events and shards below are this hub's; open the dashboard on each hub to see the others.`;
}

function formatRate(value) {
  if (!Number.isFinite(value)) {
    return "–";
  }
  return value >= 100 ? formatCount(Math.round(value)) : value.toFixed(1);
}

function formatMs(value) {
  if (!Number.isFinite(value)) {
    return "no votes";
  }
  return value >= 10 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
}

function renderEvents(events) {
  dom.eventsEmpty.hidden = events.length > 0;
  dom.eventsTable.hidden = events.length === 0;
  dom.eventsBody.replaceChildren(...events.map((event) => {
    const poll = event.poll;
    const participation = poll && Number.isFinite(poll.participation) ? formatPercent(poll.participation) : "–";
    return createElement("tr", {},
      createElement("th", { scope: "row" },
        createElement("span", { class: "event-code", text: event.code }), " ",
        createElement("span", { text: event.title })),
      createElement("td", { class: "number", text: formatCount(event.audience ?? 0) }),
      createElement("td", { class: "number", text: formatCount(event.presenters ?? 0) }),
      createElement("td", { text: poll ? `${poll.question} (${poll.state})` : "no poll" }),
      createElement("td", { class: "number", text: poll ? formatCount(poll.voters ?? 0) : "–" }),
      createElement("td", { class: "number", text: participation }),
    );
  }));
}

function renderShards(shards, ring) {
  const maxRate = Math.max(0, ...shards.map((shard) => shard.votes_per_second ?? 0));
  const maxBatch = Math.max(0, ...shards.map((shard) => shard.avg_batch ?? 0));
  const maxQueue = Math.max(0, ...shards.map((shard) => shard.queue_depth ?? 0));
  const meanRate = shards.length ? shards.reduce((sum, shard) => sum + (shard.votes_per_second ?? 0), 0) / shards.length : 0;

  while (shardRows.length > shards.length) {
    shardRows.pop().row.remove();
  }
  shards.forEach((shard, index) => {
    if (!shardRows[index]) {
      shardRows[index] = createShardRow();
      dom.shardsBody.append(shardRows[index].row);
    }
    const rate = shard.votes_per_second ?? 0;
    const hot = rate >= HOT_MIN_RATE && rate > HOT_FACTOR * meanRate;
    const cells = shardRows[index];
    cells.row.dataset.hot = hot ? "true" : "false";
    cells.name.textContent = hot ? `${shard.shard} (hot)` : String(shard.shard);
    setBar(cells.rate, rate, maxRate, formatRate(rate));
    setBar(cells.batch, shard.avg_batch ?? 0, maxBatch, (shard.avg_batch ?? 0).toFixed(1));
    setBar(cells.queue, shard.queue_depth ?? 0, maxQueue, formatCount(shard.queue_depth ?? 0));
    cells.share.textContent = formatShare(shard.share ?? 0);
  });

  dom.ringText.textContent = ringText(ring);
}

function ringText(ring) {
  if (!ring.shards) {
    return "The shard actors report no figures.";
  }
  if (!(ring.busiest_over_mean > 0)) {
    return `${ring.shards} shards. No votes applied yet, so the ring's evenness is not known.`;
  }
  return `${ring.shards} shards. Ring evenness: the busiest shard has ${ring.busiest_over_mean.toFixed(2)} times the mean share of votes; shares range from ${formatShare(ring.min_share)} to ${formatShare(ring.max_share)}.`;
}

function formatShare(share) {
  return `${(share * 100).toFixed(1)}%`;
}

function createShardRow() {
  const name = createElement("th", { scope: "row" });
  const rate = createBarCell();
  const batch = createBarCell();
  const queue = createBarCell();
  const share = createElement("td", { class: "number" });
  const row = createElement("tr", {}, name, rate.cell, batch.cell, queue.cell, share);
  return { row, name, rate, batch, queue, share };
}

function createBarCell() {
  const fill = createElement("div", { class: "meter-fill" });
  const value = createElement("span", { class: "meter-value" });
  const cell = createElement("td", { class: "meter-cell" },
    value,
    createElement("div", { class: "meter", "aria-hidden": "true" }, fill));
  return { cell, fill, value };
}

function setBar(bar, value, max, text) {
  const share = max > 0 ? Math.min(1, value / max) : 0;
  bar.fill.style.width = `${(share * 100).toFixed(1)}%`;
  bar.value.textContent = text;
}
