// The console's table: the resources a watch reports, one row each, one column per field of
// their documents (the commonest, when there are many), in the order of a column the visitor
// picks, a page of them shown at a time. The watch tells it what changed; it repaints once per
// frame, only the rows that changed, and one resource more in a long table is one row put in
// its place, not the table rebuilt. Documents are anyone's data: shown as text, never as markup.

import { $, cellText } from "./shared.js";

const MAX_COLUMNS = 24; // field columns at most: the commonest first
const FLASH = [{ backgroundColor: "#fff3b0" }, { backgroundColor: "transparent" }];
export const PAGE_ROWS = 500; // rows a page shows; `?page=N` on the page's address sets another

let items = new Map(); // id -> resource: what the table shows
let order = []; // the ids of `items`, in the table's order, kept as they come, change and go
let revision = null; // the revision the table is current to, as its status line shows it
const rows = new Map(); // id -> <tr> shown
const changed = new Set(); // ids to repaint
let reshape = false; // rows came, went or moved: the shown set is rebuilt
let refill = false; // the items were replaced: every shown row is filled again
let paintDue = false;
let pageRows = PAGE_ROWS;
let pageStart = 0; // the index in `order` of the first row shown
let sort = { key: "id", descending: false }; // key: "id", "revision" or a field's name
const fieldCounts = new Map(); // field -> how many documents have it: the columns come from it
let columns = []; // the fields shown as columns, in order
let headed = ""; // the columns and order the table's header shows

export const find = (id) => items.get(id);
export const size = () => items.size;

export const pageSize = () => pageRows;

export function setPageRows(count) {
  pageRows = count;
}

// Empty, for another watch.
export function clear() {
  items = new Map();
  order = [];
  revision = null;
  pageStart = 0;
  fieldCounts.clear();
  for (const tr of rows.values()) tr.remove();
  rows.clear();
  reshape = true;
  schedulePaint();
}

// The initial state of a watch (or of a relist) in place of what the table held.
export function replace(resources, at) {
  items = resources;
  revision = at;
  fieldCounts.clear();
  for (const resource of items.values()) countFields(resource.data, 1);
  resort();
  refill = true;
  schedulePaint();
}

// A change the watch reported at `at`: ADDED or MODIFIED (`gone` false) or DELETED.
export function apply(object, gone, at) {
  const id = object.id;
  const before = items.get(id);
  if (gone) {
    if (before) {
      unplace(id);
      countFields(before.data, -1);
      items.delete(id);
      reshape = true;
    }
  } else {
    if (before && sort.key !== "id") unplace(id);
    countFields(before?.data, -1);
    countFields(object.data, 1);
    items.set(id, object);
    if (!before || sort.key !== "id") {
      place(id);
      reshape = true;
    }
  }
  changed.add(id);
  revision = at;
  schedulePaint();
}

// A BOOKMARK: the table is current to `at`, with no change.
export function reached(at) {
  revision = at;
  schedulePaint();
}

export function turnPage(step) {
  const start = pageStart + step * pageRows;
  if (start >= 0 && start < items.size) pageStart = start;
  reshape = true;
  schedulePaint();
}

// Where `id` goes in `order`: ADDED and MODIFIED put it there, after taking it out from where
// its previous state had it when the table is sorted by something that may change.
function place(id) {
  order.splice(bisect(id), 0, id);
}

function unplace(id) {
  order.splice(bisect(id), 1);
}

function countFields(data, step) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return;
  for (const field of Object.keys(data)) {
    const count = (fieldCounts.get(field) || 0) + step;
    if (count) fieldCounts.set(field, count);
    else fieldCounts.delete(field);
  }
}


const KIND_ORDER = { number: 0, string: 1, boolean: 2, object: 3, undefined: 4 };

// Field values compare as the filter's do: numbers by value, strings by code point; different
// kinds by kind, and a missing field last.
function compareValues(a, b) {
  const ka = a === null ? "object" : typeof a;
  const kb = b === null ? "object" : typeof b;
  if (ka !== kb) return KIND_ORDER[ka] - KIND_ORDER[kb];
  if (ka === "object") {
    const [sa, sb] = [JSON.stringify(a), JSON.stringify(b)];
    return sa < sb ? -1 : sa > sb ? 1 : 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

// The table's order: by the sort key, then by id, so that every id has one place.
function compare(a, b) {
  let c = 0;
  if (sort.key === "revision") c = items.get(a).revision - items.get(b).revision;
  else if (sort.key !== "id") c = compareValues(items.get(a).data?.[sort.key], items.get(b).data?.[sort.key]);
  if (c === 0) c = a < b ? -1 : a > b ? 1 : 0;
  return sort.descending ? -c : c;
}

// Where `id` is, or would go, in `order`.
function bisect(id) {
  let low = 0;
  let high = order.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (compare(order[middle], id) < 0) low = middle + 1;
    else high = middle;
  }
  return low;
}

function resort() {
  order = [...items.keys()].sort(compare);
  reshape = true;
}

export function sortBy(key) {
  sort = { key, descending: sort.key === key && !sort.descending };
  pageStart = 0;
  resort();
  schedulePaint();
}

// The fields most documents have, up to MAX_COLUMNS, in name order.
function wantedColumns() {
  let fields = [...fieldCounts.keys()];
  if (fields.length > MAX_COLUMNS) {
    fields = fields.sort((a, b) => fieldCounts.get(b) - fieldCounts.get(a)).slice(0, MAX_COLUMNS);
  }
  return fields.sort();
}

function header() {
  const tr = document.createElement("tr");
  for (const key of ["id", "revision", ...columns]) {
    const th = document.createElement("th");
    th.scope = "col";
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.sort = key;
    button.textContent = key;
    th.append(button);
    if (sort.key === key) th.setAttribute("aria-sort", sort.descending ? "descending" : "ascending");
    tr.append(th);
  }
  const actions = document.createElement("th");
  actions.className = "actions";
  tr.append(actions);
  const table = $("resources");
  table.tHead.replaceChildren(tr);
  table.style.minWidth = `${22.5 + 6 * columns.length}em`; // the widths of dashboard.css
}

export function schedulePaint() {
  if (!paintDue) {
    paintDue = true;
    requestAnimationFrame(paint);
  }
}

function paint() {
  paintDue = false;
  $("count").textContent = items.size;
  $("revision").textContent = revision ?? "-";
  const wanted = wantedColumns();
  if (wanted.join("\n") !== columns.join("\n")) {
    columns = wanted;
    reshape = refill = true; // every row has other cells now
  }
  const heading = JSON.stringify([columns, sort]);
  if (heading !== headed) {
    headed = heading;
    header();
  }
  const refilled = refill; // every shown row is filled below
  const made = new Set(); // and every new one, as it is made
  if (reshape) {
    if (pageStart >= order.length) pageStart = Math.max(0, order.length - pageRows);
    const ids = order.slice(pageStart, pageStart + pageRows);
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
    const paged = items.size > pageRows;
    $("pager").hidden = !paged;
    $("more").textContent = paged
      ? `showing ${pageStart + 1} to ${pageStart + ids.length} of ${items.size} by ${sort.key}`
      : "";
    $("previous-page").disabled = pageStart === 0;
    $("next-page").disabled = pageStart + pageRows >= items.size;
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
  tr.tabIndex = 0; // reached with Tab, opened with Enter
  fill(tr, items.get(id));
  rows.set(id, tr);
  return tr;
}

function fill(tr, resource) {
  if (tr.cells.length !== columns.length + 3) {
    const cells = [];
    for (let i = 0; i < columns.length + 2; i++) cells.push(document.createElement("td"));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "delete";
    remove.dataset.delete = resource.id;
    const actions = document.createElement("td");
    actions.append(remove);
    tr.replaceChildren(...cells, actions);
  }
  const cells = tr.cells;
  cells[0].textContent = resource.id;
  cells[1].textContent = resource.revision;
  const data = resource.data;
  const isObject = data !== null && typeof data === "object";
  for (let i = 0; i < columns.length; i++) cells[i + 2].textContent = cellText(isObject ? data[columns[i]] : undefined);
  return tr;
}


// Sorting by a header, paging, and a row opened (click, or Enter on it) or deleted: `edit` and
// `remove` do the writing.
export function wireTable(edit, remove, confirmed) {
  $("resources").addEventListener("click", (e) => {
    const sortKey = e.target.closest("[data-sort]")?.dataset.sort;
    if (sortKey !== undefined) return sortBy(sortKey);
    const id = e.target.dataset.delete;
    if (id !== undefined) {
      if (confirmed(e.target)) remove(id);
      return;
    }
    const tr = e.target.closest("tbody tr");
    if (tr && items.has(tr.dataset.id)) edit(items.get(tr.dataset.id));
  });
  $("resources").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.tagName === "TR" && items.has(e.target.dataset.id)) {
      edit(items.get(e.target.dataset.id));
    }
  });
  $("previous-page").addEventListener("click", () => turnPage(-1));
  $("next-page").addEventListener("click", () => turnPage(1));
}
