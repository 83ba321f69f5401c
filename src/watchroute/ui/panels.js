// The console's two side panels: the collections (from /v1/_collections, with the visitor's
// credential: only what it may read) and the server's status (from ui/status.json, the figures
// /metrics shows), both read now and then, never per event.

import { $, api, authHeaders } from "./shared.js";

const STATUS_EVERY_MS = 2000;
const COLLECTIONS_EVERY = 5; // status readings between two readings of the collections

let previous = null; // the last status reading and when it was taken: rates come from two

export async function loadCollections(current, choose) {
  let listed;
  try {
    const response = await fetch(api("_collections"), { headers: authHeaders() });
    if (!response.ok) return;
    listed = await response.json();
  } catch {
    return; // the list is a convenience: the form works without it
  }
  const options = [];
  const entries = [];
  for (const c of listed.items) {
    const option = document.createElement("option");
    option.value = c.name;
    if (c.count !== undefined) option.label = `${c.name} (${c.count})`;
    options.push(option);
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.collection = c.name;
    if (c.name === current) button.setAttribute("aria-current", "true");
    const name = document.createElement("span");
    name.textContent = c.name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = c.count ?? "";
    button.append(name, count);
    button.addEventListener("click", () => choose(c.name));
    const li = document.createElement("li");
    li.append(button);
    entries.push(li);
  }
  $("collections").replaceChildren(...options);
  $("collection-list").replaceChildren(...entries);
  $("collections-revision").textContent = listed.revision;
}

function perSecond(now, name) {
  if (!previous || now[name] === undefined || previous.figures[name] === undefined) return "-";
  const seconds = (now.at - previous.at) / 1000;
  // A counter that went back is a restarted server: no rate across it.
  const delta = now[name] - previous.figures[name];
  return delta < 0 || seconds <= 0 ? "-" : (delta / seconds).toFixed(1);
}

export async function loadStatus() {
  let figures;
  try {
    const response = await fetch(new URL("ui/status.json", document.baseURI), { headers: authHeaders() });
    if (!response.ok) return;
    figures = await response.json();
  } catch {
    return;
  }
  figures.at = Date.now();
  $("st-revision").textContent = figures.revision;
  $("st-horizon").textContent = figures.horizon;
  $("st-watchers").textContent = figures.watchers;
  $("st-transports").textContent =
    Object.entries(figures.watchers_by_transport)
      .map(([transport, count]) => `${transport} ${count}`)
      .join(" · ") || "none";
  $("st-writes").textContent = perSecond(figures, "changes");
  $("st-deliveries").textContent = perSecond(figures, "deliveries");
  $("st-instances").textContent = figures.instances;
  $("st-instances-row").hidden = figures.instances < 2;
  showBridges(figures.bridges || []);
  previous = { at: figures.at, figures };
}

// One row per bridge (/v1/_bridges has the rest: position, last error, deliveries).
function showBridges(bridges) {
  $("bridges").hidden = bridges.length === 0;
  const rows = bridges.map((bridge) => {
    const row = document.createElement("tr");
    for (const value of [bridge.name, bridge.state, bridge.lag, bridge.published, bridge.errors]) {
      const cell = document.createElement("td");
      cell.textContent = value === undefined ? "-" : String(value);
      row.append(cell);
    }
    row.className = `bridge-${bridge.state}`;
    return row;
  });
  $("bridges-rows").replaceChildren(...rows);
}

export function startPanels(current, choose) {
  let ticks = 0;
  loadStatus();
  setInterval(() => {
    if (document.hidden) return;
    loadStatus();
    ticks += 1;
    if (ticks % COLLECTIONS_EVERY === 0) loadCollections(current(), choose);
  }, STATUS_EVERY_MS);
}
