// The live dashboard: one collection (filtered or not) watched from the browser over SSE and
// kept as a table that follows every change.
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
// Documents are anyone's data: they reach the page only as text (textContent), never as markup.

const ROWS_SHOWN = 500; // longer tables are not read; the count says how many there are
const EVENTS_KEPT = 50;
const FLASH = [{ backgroundColor: "#fff3b0" }, { backgroundColor: "transparent" }];
const RETRY_MS = 2000; // the first wait before a reconnection the page makes itself
const RETRY_MAX_MS = 30000; // doubling up to this, with jitter
const TOKEN_KEY = "watchroute.token"; // kept for the tab only, never in the URL
const HEARTBEAT_S = 15; // the server's default; `?heartbeat=S` on the page's address sets another

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let watch = null; // {collection, filter} of the current watch
let source = null; // its EventSource
let items = new Map(); // id -> resource: what the table shows
let order = []; // the ids of `items`, sorted: the table's order, kept as they come and go
let incoming = null; // the initial state being received, until the BOOKMARK that ends it
let revision = null; // the revision the table is current to
let retry = null; // the timer of a reconnection the page makes itself
let backoff = RETRY_MS;
const rows = new Map(); // id -> <tr> shown
const changed = new Set(); // ids to repaint
let reshape = false; // rows came or went: the shown set is rebuilt
let refill = false; // the items were replaced: every shown row is filled again
let paintDue = false;
let eventsThisSecond = 0;
let heartbeat = HEARTBEAT_S;
let heardAt = 0; // when the current connection last gave a sign of life (or was asked for)

function api(path) {
  // Relative to the page, so that an app mounted under a prefix serves its own API.
  return new URL(`v1/${path}`, document.baseURI);
}

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function setState(state) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
}

function showProblem(problem) {
  const el = $("problem");
  el.hidden = !problem;
  el.textContent = problem ? `${problem.status} ${problem.title}: ${problem.detail}` : "";
}

async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return { status: response.status, title: response.statusText, detail: "no problem details" };
  }
}

// -- the watch ------------------------------------------------------------------------------

function start(collection, filter) {
  watch = { collection, filter };
  items = new Map();
  order = [];
  revision = null;
  for (const tr of rows.values()) tr.remove();
  rows.clear();
  reshape = true;
  showProblem(null);
  $("events").replaceChildren();
  schedulePaint();
  open(null);
  loadCollections();
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
  if (token) url.searchParams.set("access_token", token); // EventSource cannot send headers
  incoming = since === null ? new Map() : null;
  setState(state);
  heardAt = Date.now();
  const es = (source = new EventSource(url));
  es.onopen = () => {
    if (es !== source) return;
    heardAt = Date.now();
    backoff = RETRY_MS;
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
    if (es.readyState === EventSource.CONNECTING) setState("reconnecting");
    else diagnose(); // the server refused the request; EventSource does not say why
  };
}

function receive(event) {
  const target = incoming || items;
  switch (event.type) {
    case "ADDED":
    case "MODIFIED":
      if (target === items && !items.has(event.object.id)) {
        order.splice(bisect(order, event.object.id), 0, event.object.id);
        reshape = true;
      }
      target.set(event.object.id, event.object);
      break;
    case "DELETED":
      if (target === items && items.has(event.object.id)) {
        order.splice(bisect(order, event.object.id), 1);
        reshape = true;
      }
      target.delete(event.object.id);
      break;
    case "BOOKMARK":
      if (event.initial_events_end && incoming) {
        items = incoming;
        order = [...items.keys()].sort();
        incoming = null;
        reshape = refill = true;
        setState("live");
        log(`initial state: ${items.size} @${event.revision}`);
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
  if (event.type !== "BOOKMARK") {
    eventsThisSecond += 1;
    changed.add(event.object.id);
    log(`${event.type} ${event.object.id} @${event.revision}`);
  }
  schedulePaint();
}

// Checked every second. Also while EventSource is still connecting: a request that went into a
// dead connection gets no answer and no error either.
function checkAlive() {
  if (!source || source.readyState === EventSource.CLOSED) return;
  const silent = Date.now() - heardAt;
  if (silent <= (2 * heartbeat + 1) * 1000) return;
  log(`nothing heard for ${Math.round(silent / 1000)} s: reconnecting`);
  // Before the initial state is complete there is nothing to resume from.
  open(incoming ? null : revision, incoming ? "syncing" : "reconnecting");
}

function relist() {
  revision = null; // expired: nothing can resume from it any more
  open(null, "relisting");
}

function stop(problem) {
  clearTimeout(retry);
  if (source) source.close();
  setState("stopped");
  showProblem(problem);
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
  if (current !== watch) return; // another watch started meanwhile
  backoff = Math.min(2 * backoff, RETRY_MAX_MS);
  // Expired, or a revision the server has never had (its database was replaced): list again.
  if (status === 410 || (problem && problem.reason === "FutureRevision")) relist();
  else if (status >= 400 && status < 500 && status !== 429) stop(problem);
  else {
    // Refused for now (a limit, an overloaded server) or not reachable: again from where the
    // table is, once the server says it may be and never in a tight loop.
    setState("reconnecting");
    retry = setTimeout(() => open(revision), wait);
  }
}

// -- painting -------------------------------------------------------------------------------

function schedulePaint() {
  if (!paintDue) {
    paintDue = true;
    requestAnimationFrame(paint);
  }
}

// Where `id` is, or would go, in the sorted `ids`.
function bisect(ids, id) {
  let low = 0;
  let high = ids.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (ids[middle] < id) low = middle + 1;
    else high = middle;
  }
  return low;
}

function paint() {
  paintDue = false;
  $("count").textContent = items.size;
  $("revision").textContent = revision ?? "-";
  const refilled = refill; // every shown row is filled below
  const made = new Set(); // and every new one, as it is made
  if (reshape) {
    const ids = order.slice(0, ROWS_SHOWN);
    const body = $("resources").tBodies[0];
    const shown = new Set(ids);
    for (const [id, tr] of rows) {
      if (!shown.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    // The rows kept are in order already: only the new ones go in, each in its place, so that
    // one resource more in a long table is one row inserted, not the table rebuilt.
    let next = body.firstElementChild;
    for (const id of ids) {
      let tr = rows.get(id);
      if (!tr) made.add((tr = newRow(id)));
      else if (refill) fill(tr, items.get(id)); // after a relist any of them may have changed
      if (tr === next) next = next.nextElementSibling;
      else body.insertBefore(tr, next);
    }
    const more = $("more");
    more.hidden = items.size <= ROWS_SHOWN;
    more.textContent = `showing the first ${ROWS_SHOWN} of ${items.size} by id`;
    reshape = refill = false;
  }
  for (const id of changed) {
    const tr = rows.get(id);
    if (!tr) continue; // not shown
    if (!refilled && !made.has(tr)) fill(tr, items.get(id));
    light(tr);
  }
  changed.clear();
}

// Lights a changed row up and lets it fade, starting over when it changes again. An animation
// of its own (not a class put back) needs no layout to restart.
function light(tr) {
  tr.flash?.cancel();
  tr.flash = tr.animate(FLASH, { duration: 1200, easing: "ease-out" });
}

function newRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.id = id;
  for (let i = 0; i < 3; i++) tr.append(document.createElement("td"));
  const remove = document.createElement("button");
  remove.textContent = "delete";
  remove.dataset.delete = id;
  const cell = document.createElement("td");
  cell.append(remove);
  tr.append(cell);
  fill(tr, items.get(id));
  rows.set(id, tr);
  return tr;
}

function fill(tr, resource) {
  const [id, rev, data] = tr.cells;
  id.textContent = resource.id;
  rev.textContent = resource.revision;
  data.textContent = JSON.stringify(resource.data);
  return tr;
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

// -- writes and the list of collections ---------------------------------------------------

async function write(method, id, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = body;
  }
  const path = `${encodeURIComponent(watch.collection)}/${encodeURIComponent(id)}`;
  try {
    const response = await fetch(api(path), init);
    // The table changes when the watch reports the write, not from this answer.
    if (!response.ok) showProblem(await readProblem(response));
  } catch {
    showProblem({ status: 0, title: "Unreachable", detail: `the server did not answer the ${method}` });
  }
}

async function loadCollections() {
  try {
    const response = await fetch(api("_collections"), { headers: authHeaders() });
    if (!response.ok) return;
    const options = (await response.json()).items.map((c) => {
      const option = document.createElement("option");
      option.value = c.name;
      if (c.count !== undefined) option.label = `${c.name} (${c.count})`;
      return option;
    });
    $("collections").replaceChildren(...options);
  } catch {
    // the list is a convenience: the form works without it
  }
}

// -- wiring -----------------------------------------------------------------------------------

$("watch").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const collection = form.get("collection").trim();
  const filter = form.get("filter").trim();
  token = form.get("token").trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  const query = new URLSearchParams({ collection });
  if (filter) query.set("filter", filter);
  if (heartbeat !== HEARTBEAT_S) query.set("heartbeat", heartbeat);
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
  write("PUT", form.get("id").trim(), text);
});

$("resources").addEventListener("click", (e) => {
  const id = e.target.dataset.delete;
  if (id !== undefined) write("DELETE", id);
});

setInterval(() => {
  $("rate").textContent = eventsThisSecond;
  eventsThisSecond = 0;
  checkAlive();
}, 1000);

{
  const params = new URLSearchParams(location.search);
  const asked = Number(params.get("heartbeat"));
  if (Number.isInteger(asked) && asked >= 1 && asked <= 300) heartbeat = asked;
  const form = $("watch").elements;
  form.collection.value = params.get("collection") || "";
  form.filter.value = params.get("filter") || "";
  form.token.value = token;
  if (form.collection.value) start(form.collection.value, form.filter.value);
  else loadCollections();
}
