// The console: one collection (filtered or not) watched from the browser over SSE and kept as a
// table that follows every change (table.js).
//
// A watch starts with `initial=true`: the server sends the current state, a BOOKMARK that ends
// it, then every later change. After a dropped connection EventSource reconnects by itself and
// sends `Last-Event-ID`, so the server resumes after the last change seen and the table stays as
// it is. When a watch cannot resume (the history horizon has passed it: 410 Expired) the page
// lists again: a fresh watch with `initial=true`, whose state replaces the table once complete.
// A connection can also die without a word (a network that drops it silently, a laptop that
// slept): the server sends a BOOKMARK after every `heartbeat` seconds of silence, so when nothing
// at all has come for two of them and a second, the page drops the connection and resumes from
// its revision on a new one, as the Python client does.
// Paused, the page holds no connection; it resumes from the table's revision (or from one the
// visitor names: the changes after it are replayed over the table, which ends up current).

import { closeEditor, confirmed, noticeChange, openEditor, wireEditor, write } from "./editor.js";
import { loadCollections, startPanels } from "./panels.js";
import { $, api, authHeaders, credential, log, readProblem, setToken, showProblem } from "./shared.js";
import * as table from "./table.js";

const RETRY_MS = 2000; // the first wait before a reconnection the page makes itself
const RETRY_MAX_MS = 30000; // doubling up to this, with jitter
// The server's default and bounds (watch/params.py; tests/test_ui.py checks they agree); `?heartbeat=S`
// on the page's address sets another.
const HEARTBEAT_S = 15;
const HEARTBEAT_MIN_S = 1;
const HEARTBEAT_MAX_S = 300;

let watch = null; // {collection, filter} of the current watch
let source = null; // its EventSource
let incoming = null; // the initial state being received, until the BOOKMARK that ends it
let revision = null; // the revision the table is current to
let retry = null; // the timer of a reconnection the page makes itself
let backoff = RETRY_MS;
let paused = false;
let connected = false; // the current EventSource is open (to log its losses and returns once)
let eventsThisSecond = 0;
let heartbeat = HEARTBEAT_S;
let heardAt = 0; // when the current connection last gave a sign of life (or was asked for)

function setState(state) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
}

// -- the watch ------------------------------------------------------------------------------

function start(collection, filter) {
  watch = { collection, filter };
  revision = null;
  paused = false;
  table.clear();
  showProblem(null);
  closeEditor();
  $("events").replaceChildren();
  $("pause").textContent = "Pause";
  open(null);
  loadCollections(collection, choose);
}

// Opens the watch: from `since`, or with the initial state when `since` is null.
function open(since, state = since === null ? "syncing" : "connecting") {
  clearTimeout(retry);
  if (source) source.close();
  const url = api(encodeURIComponent(watch.collection));
  url.searchParams.set("watch", "true");
  if (since === null) url.searchParams.set("initial", "true");
  else url.searchParams.set("since", since);
  if (watch.filter) url.searchParams.set("filter", watch.filter);
  url.searchParams.set("heartbeat", heartbeat);
  if (credential.token) url.searchParams.set("access_token", credential.token); // EventSource cannot send headers
  incoming = since === null ? new Map() : null;
  setState(state);
  heardAt = Date.now();
  connected = false;
  const es = (source = new EventSource(url));
  es.onopen = () => {
    if (es !== source) return;
    heardAt = Date.now();
    backoff = RETRY_MS;
    log(incoming ? "connected: receiving the initial state" : `connected: resuming after @${revision ?? since}`, "connection");
    connected = true;
    // A connection lost before the initial state was complete starts it over (its events
    // carry no id, so there is nothing to resume from).
    if (incoming) {
      incoming = new Map();
      setState("syncing");
    } else setState("live");
  };
  es.onmessage = (e) => {
    if (es !== source) return;
    heardAt = Date.now();
    receive(JSON.parse(e.data));
  };
  es.onerror = () => {
    if (es !== source) return;
    if (connected) log(`disconnected @${revision ?? "-"}`, "connection");
    connected = false;
    if (es.readyState === EventSource.CONNECTING) setState("reconnecting");
    else diagnose(); // the server refused the request; EventSource does not say why
  };
}

function receive(event) {
  switch (event.type) {
    case "ADDED":
    case "MODIFIED":
      if (incoming) incoming.set(event.object.id, event.object);
      break;
    case "DELETED":
      if (incoming) incoming.delete(event.object.id);
      break;
    case "BOOKMARK":
      if (event.initial_events_end && incoming) {
        table.replace(incoming, event.revision);
        incoming = null;
        setState("live");
        log(`initial state: ${table.size()} @${event.revision}`);
      }
      break;
    case "ERROR":
      source.close();
      if (event.error.status === 410) relist();
      else stop(event.error);
      return;
  }
  if (incoming) return; // the initial state is shown once complete
  revision = event.revision;
  if (event.type === "BOOKMARK") table.reached(revision);
  else {
    eventsThisSecond += 1;
    table.apply(event.object, event.type === "DELETED", revision);
    noticeChange(watch.collection, event.object, event.type === "DELETED");
    log(`${event.type} ${event.object.id} @${event.revision}`);
  }
}

// Checked every second. Also while EventSource is still connecting: a request that went into a
// dead connection gets no answer and no error either.
function checkAlive() {
  if (paused || !source || source.readyState === EventSource.CLOSED) return;
  const silent = Date.now() - heardAt;
  if (silent <= (2 * heartbeat + 1) * 1000) return;
  log(`nothing heard for ${Math.round(silent / 1000)} s: reconnecting`, "connection");
  // Before the initial state is complete there is nothing to resume from.
  open(incoming ? null : revision, incoming ? "syncing" : "reconnecting");
}

function relist() {
  log("the history horizon has passed the table: listing again", "connection");
  revision = null; // expired: nothing can resume from it any more
  open(null, "relisting");
}

function stop(problem) {
  clearTimeout(retry);
  if (source) source.close();
  setState("stopped");
  showProblem(problem);
}

function pause() {
  paused = true;
  clearTimeout(retry);
  if (source) source.close();
  connected = false;
  setState("paused");
  $("pause").textContent = "Resume";
  log(`paused @${revision ?? "-"}`, "connection");
}

// Resumes the paused (or live) watch from `since`: the table's revision, or an older one whose
// changes are then replayed over it.
function resume(since) {
  paused = false;
  $("pause").textContent = "Pause";
  log(since === null ? "resumed: listing again" : `resumed from @${since}`, "connection");
  open(since);
}

// Asks the refused question again as a request whose answer can be read: a long-poll watch
// of the same collection and filter, from the table's revision when there is one, so that the
// same grants and limits apply to it.
async function diagnose() {
  const current = watch;
  const url = api(encodeURIComponent(current.collection));
  url.searchParams.set("watch", "longpoll");
  url.searchParams.set("timeout", "1");
  if (revision !== null) url.searchParams.set("since", revision);
  if (current.filter) url.searchParams.set("filter", current.filter);
  let status = 0;
  let problem = null;
  let wait = backoff * (0.5 + Math.random()); // jittered, so that many pages do not come back at once
  try {
    const response = await fetch(url, { headers: authHeaders() });
    status = response.status;
    if (!response.ok) problem = await readProblem(response);
    wait = Math.max(wait, 1000 * Number(response.headers.get("Retry-After") || 0));
  } catch {
    // not reachable: try again below
  }
  if (current !== watch || paused) return; // another watch started meanwhile, or a pause
  backoff = Math.min(2 * backoff, RETRY_MAX_MS);
  // Expired, or a revision the server has never had (its database was replaced): list again.
  if (status === 410 || (problem && problem.reason === "FutureRevision")) relist();
  else if (status >= 400 && status < 500 && status !== 429) stop(problem);
  else {
    // Refused for now (a limit, an overloaded server) or not reachable: again from where the
    // table is, once the server says it may be and never in a tight loop.
    setState("reconnecting");
    log(`refused (${status || "unreachable"}): trying again in ${Math.round(wait / 1000)} s`, "connection");
    retry = setTimeout(() => open(revision), wait);
  }
}

// -- wiring -----------------------------------------------------------------------------------

function choose(collection) {
  const form = $("watch").elements;
  form.collection.value = collection;
  form.filter.value = "";
  $("watch").requestSubmit();
}

$("watch").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const collection = form.get("collection").trim();
  const filter = form.get("filter").trim();
  setToken(form.get("token").trim());
  const query = new URLSearchParams({ collection });
  if (filter) query.set("filter", filter);
  if (heartbeat !== HEARTBEAT_S) query.set("heartbeat", heartbeat);
  if (table.pageSize() !== table.PAGE_ROWS) query.set("page", table.pageSize());
  history.replaceState(null, "", `?${query}`);
  start(collection, filter);
});

$("write").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!watch) return;
  const form = new FormData(e.target);
  const text = form.get("data");
  try {
    const data = JSON.parse(text);
    if (data === null || typeof data !== "object" || Array.isArray(data)) throw new Error();
  } catch {
    showProblem({ status: 400, title: "Bad Request", detail: "data must be a JSON object" });
    return;
  }
  write("PUT", watch.collection, form.get("id").trim(), text);
});

table.wireTable(
  (resource) => openEditor(watch.collection, resource),
  (id) => write("DELETE", watch.collection, id),
  confirmed,
);

$("pause").addEventListener("click", () => {
  if (!watch) return;
  if (paused) resume(incoming ? null : revision);
  else pause();
});

$("replay").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!watch) return;
  const since = Number(new FormData(e.target).get("since"));
  if (!Number.isInteger(since) || since < 0 || revision === null || since > revision) {
    const upto = revision === null ? "once the table has one" : `up to the table's, ${revision}`;
    showProblem({ status: 400, title: "Bad Request", detail: `resume from a revision ${upto}` });
    return;
  }
  showProblem(null);
  resume(since);
});

wireEditor();

setInterval(() => {
  $("rate").textContent = eventsThisSecond;
  eventsThisSecond = 0;
  checkAlive();
}, 1000);

{
  const params = new URLSearchParams(location.search);
  const asked = Number(params.get("heartbeat"));
  if (Number.isInteger(asked) && asked >= HEARTBEAT_MIN_S && asked <= HEARTBEAT_MAX_S) heartbeat = asked;
  const page = Number(params.get("page"));
  if (Number.isInteger(page) && page >= 1 && page <= 5000) table.setPageRows(page);
  const form = $("watch").elements;
  form.collection.value = params.get("collection") || "";
  form.filter.value = params.get("filter") || "";
  form.token.value = credential.token;
  if (form.collection.value) start(form.collection.value, form.filter.value);
  else loadCollections(null, choose);
  startPanels(() => watch?.collection ?? null, choose);
}
