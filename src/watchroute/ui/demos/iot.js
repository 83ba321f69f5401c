// The sensors dashboard: every sensor as a tile, and the alerts of those above a threshold.
//
// Two watches, both `conflate=true`: sensors report far more often than anyone reads, and a page
// that falls behind (a background tab, a slow network) needs each sensor's newest temperature,
// not every one in between. The alerts are a filtered watch (`temperature>30`): a sensor that
// crosses the threshold enters it (ADDED), one that cools down leaves it (DELETED, with the
// temperature it left at), so the page keeps no rule of its own about what an alert is.
// Readings are anyone's data: they reach the page as text only.

import { Watch, showState } from "./watch.js";

const LOG_KEPT = 30;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const collection = params.get("collection") || "sensors";
const asked = Number(params.get("threshold") || "30");
const threshold = Number.isFinite(asked) ? asked : 30;
$("threshold").textContent = threshold;

const tiles = new Map(); // id -> tile shown
const dirty = new Set(); // ids to repaint
let paintDue = false;

const sensors = new Watch(encodeURIComponent(collection), { conflate: "true" }, {
  onReset(items) {
    for (const tile of tiles.values()) tile.remove();
    tiles.clear();
    for (const id of items.keys()) dirty.add(id);
    schedulePaint();
  },
  onChange(_type, resource) {
    dirty.add(resource.id);
    schedulePaint();
  },
  onState: showState,
});

const alerts = new Watch(
  encodeURIComponent(collection),
  { conflate: "true", filter: `temperature>${threshold}` },
  {
    onReset(items) {
      $("alerts").replaceChildren(...[...items.values()].map(alertItem));
      sortAlerts();
    },
    onChange(type, resource) {
      $("alerts").querySelector(`li[data-id="${CSS.escape(resource.id)}"]`)?.remove();
      if (type !== "DELETED") $("alerts").append(alertItem(resource));
      sortAlerts();
      if (type === "ADDED") log(`ALERT ${resource.id} ${degrees(resource)}`);
      if (type === "DELETED") log(`clear ${resource.id} ${degrees(resource)}`);
    },
    onState(state, problem) {
      if (state === "stopped") showState(state, problem);
    },
  },
);

function degrees(resource) {
  const t = resource.data.temperature;
  return typeof t === "number" ? `${t.toFixed(1)} °C` : "? °C";
}

function alertItem(resource) {
  const li = document.createElement("li");
  li.dataset.id = resource.id;
  li.dataset.temperature = resource.data.temperature;
  const room = resource.data.room ? ` · ${resource.data.room}` : "";
  li.textContent = `${resource.id}${room} · ${degrees(resource)}`;
  return li;
}

// Hottest first.
function sortAlerts() {
  const list = $("alerts");
  const items = [...list.children].sort((a, b) => b.dataset.temperature - a.dataset.temperature);
  list.replaceChildren(...items);
  $("alert-count").textContent = items.length;
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 19)} ${text}`;
  $("log").prepend(li);
  while ($("log").children.length > LOG_KEPT) $("log").lastChild.remove();
}

function schedulePaint() {
  if (!paintDue) {
    paintDue = true;
    requestAnimationFrame(paint);
  }
}

// Once a frame, whatever came meanwhile: a burst of readings is one repaint per sensor.
function paint() {
  paintDue = false;
  let added = false;
  for (const id of dirty) {
    const resource = sensors.items.get(id);
    let tile = tiles.get(id);
    if (!resource) {
      tile?.remove();
      tiles.delete(id);
      continue;
    }
    if (!tile) {
      tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.id = id;
      tile.append(document.createElement("b"), document.createElement("span"));
      tiles.set(id, tile);
      added = true;
    }
    const t = resource.data.temperature;
    tile.firstChild.textContent = typeof t === "number" ? t.toFixed(1) : "?";
    tile.lastChild.textContent = id;
    tile.classList.toggle("hot", t > threshold);
    tile.classList.toggle("warm", t <= threshold && t > threshold - 3);
  }
  dirty.clear();
  if (added) {
    const ids = [...tiles.keys()].sort();
    $("grid").replaceChildren(...ids.map((id) => tiles.get(id)));
  }
  $("count").textContent = sensors.items.size;
  $("revision").textContent = sensors.revision ?? "-";
}

sensors.start();
alerts.start();
