// A watch of a collection or of one resource, kept as a local copy: what every demo page shares.
//
// It does what the watch contract asks of a client, as the dashboard does. It starts with
// `initial=true` and hands the page the whole state once the BOOKMARK that ends it has come.
// After a dropped connection EventSource reconnects by itself with `Last-Event-ID` and the watch
// resumes after the last change seen. A watch that cannot resume (410 Expired, or a revision the
// server never had) lists again. A connection that died without a word is noticed by the
// heartbeats that stop coming, and resumed on a new one. With `format=patch` a MODIFIED may carry
// a merge patch instead of the object: it is applied here to the state held, so that the page
// always gets whole resources.

const RETRY_MS = 2000; // the first wait before a reconnection made here
const RETRY_MAX_MS = 30000; // doubling up to this, with jitter
const HEARTBEAT_S = 5;

// A URL of the API: the pages are at `<root>/demos/<name>`, the API at `<root>/v1/`.
export function api(path) {
  return new URL(`../v1/${path}`, document.baseURI);
}

export async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return { status: response.status, title: response.statusText, detail: "no problem details" };
  }
}

export function describe(problem) {
  return `${problem.status} ${problem.title}: ${problem.detail}`;
}

// RFC 7386: a null member removes, an object merges, anything else replaces.
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const base = target !== null && typeof target === "object" && !Array.isArray(target) ? target : {};
  const merged = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else merged[key] = mergePatch(merged[key], value);
  }
  return merged;
}

// `path` is `<collection>` or `<collection>/<id>` (encoded); `query` holds the watch's other
// parameters (filter, conflate, format). The page is told through:
//   onReset(items)             the whole state, a Map id -> resource (first, and after a relist)
//   onChange(type, resource)   a change after it: ADDED, MODIFIED or DELETED (the last state)
//   onState(state, problem)    syncing, live, reconnecting, relisting, stopped (with why)
export class Watch {
  constructor(path, query, { onReset, onChange, onState }) {
    Object.assign(this, { path, query, onReset, onChange, onState });
    this.items = new Map();
    this.revision = null; // the revision the copy is current to
    this.source = null;
    this.incoming = null; // the initial state being received
    this.backoff = RETRY_MS;
    this.retry = null;
    this.heardAt = 0;
    setInterval(() => this.checkAlive(), 1000);
  }

  start() {
    this.open(null);
  }

  setState(state, problem = null) {
    this.state = state;
    this.onState(state, problem);
  }

  // From `since`, or with the initial state when `since` is null.
  open(since, state = since === null ? "syncing" : "reconnecting") {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    const url = api(this.path);
    for (const [key, value] of Object.entries(this.query)) url.searchParams.set(key, value);
    url.searchParams.set("watch", "true");
    url.searchParams.set("heartbeat", HEARTBEAT_S);
    if (since === null) url.searchParams.set("initial", "true");
    else url.searchParams.set("since", since);
    this.incoming = since === null ? new Map() : null;
    this.setState(state);
    this.heardAt = Date.now();
    const es = (this.source = new EventSource(url));
    es.onopen = () => {
      if (es !== this.source) return;
      this.heardAt = Date.now();
      this.backoff = RETRY_MS;
      // Cut before the initial state was complete: it starts over (its events carry no id).
      if (this.incoming) this.incoming = new Map();
      else this.setState("live");
    };
    es.onmessage = (e) => {
      if (es !== this.source) return;
      this.heardAt = Date.now();
      this.receive(JSON.parse(e.data));
    };
    es.onerror = () => {
      if (es !== this.source) return;
      if (es.readyState === EventSource.CONNECTING) this.setState("reconnecting");
      else this.diagnose(); // refused: EventSource does not say why
    };
  }

  receive(event) {
    if (event.type === "ERROR") {
      this.source.close();
      if (event.error.status === 410) this.relist();
      else this.stop(event.error);
      return;
    }
    if (event.type === "BOOKMARK") {
      if (event.initial_events_end && this.incoming) {
        this.items = this.incoming;
        this.incoming = null;
        this.revision = event.revision;
        this.onReset(this.items);
        this.setState("live");
      } else if (!this.incoming) this.revision = event.revision;
      return;
    }
    const held = this.incoming || this.items;
    let resource = event.object;
    if (!resource) {
      // A merge patch from the state held (format=patch); created_revision is unchanged.
      const before = held.get(event.id);
      if (!before) return this.relist(); // a patch of nothing held: the copy cannot be trusted
      resource = { ...before, revision: event.revision, data: mergePatch(before.data, event.patch) };
    }
    if (event.type === "DELETED") held.delete(resource.id);
    else held.set(resource.id, resource);
    if (this.incoming) return;
    this.revision = event.revision;
    this.onChange(event.type, resource);
  }

  relist() {
    this.revision = null; // expired: nothing can resume from it any more
    this.open(null, "relisting");
  }

  stop(problem) {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.setState("stopped", problem);
  }

  // Nothing at all for two heartbeats and a second: the connection is dead, resume on another.
  checkAlive() {
    if (!this.source || this.source.readyState === EventSource.CLOSED) return;
    if (Date.now() - this.heardAt <= (2 * HEARTBEAT_S + 1) * 1000) return;
    if (this.incoming) this.open(null);
    else this.open(this.revision);
  }

  // Asks the refused question again where the answer can be read: a long-poll of the same watch.
  async diagnose() {
    const url = api(this.path);
    for (const [key, value] of Object.entries(this.query)) url.searchParams.set(key, value);
    url.searchParams.set("watch", "longpoll");
    url.searchParams.set("timeout", "1");
    if (this.revision !== null) url.searchParams.set("since", this.revision);
    let status = 0;
    let problem = null;
    let wait = this.backoff * (0.5 + Math.random());
    try {
      const response = await fetch(url);
      status = response.status;
      if (!response.ok) problem = await readProblem(response);
      wait = Math.max(wait, 1000 * Number(response.headers.get("Retry-After") || 0));
    } catch {
      // not reachable: try again below
    }
    this.backoff = Math.min(2 * this.backoff, RETRY_MAX_MS);
    if (status === 410 || problem?.reason === "FutureRevision") this.relist();
    else if (status >= 400 && status < 500 && status !== 429) this.stop(problem);
    else {
      this.setState("reconnecting");
      this.retry = setTimeout(() => this.open(this.revision), wait);
    }
  }
}

// Shows the watch's state in `#state` (its colour from `data-state`) and a problem in `#problem`.
export function showState(state, problem) {
  const el = document.getElementById("state");
  el.textContent = state;
  el.dataset.state = state;
  if (state !== "stopped") return;
  showProblem(problem);
}

export function showProblem(problem) {
  const el = document.getElementById("problem");
  el.hidden = !problem;
  el.textContent = problem ? describe(problem) : "";
}
