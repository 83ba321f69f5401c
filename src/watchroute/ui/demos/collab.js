// A list several people edit at once, each page holding a copy kept by a `format=patch` watch.
//
// An edit is a JSON patch (RFC 6902) sent with `If-Match: "<revision>"` of the copy it was made
// from: it applies only to that state. When someone else's edit landed first the server answers
// 412 and the page makes the same edit again (the same intent, its indexes found again by item id)
// on the newer state, until it holds. So concurrent edits all land, one after the other, and
// every page converges on the same list: the one the watch delivers, in revision order. The
// watch sends each change as the merge patch from the previous state, applied to the copy held.
// Items are anyone's data: they reach the page as text only.

import { Watch, api, readProblem, showProblem, showState } from "./watch.js";

const ATTEMPTS = 10; // a 412 is someone else's edit: this many in a row, and the edit gives up
const LOG_KEPT = 30;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const collection = params.get("collection") || "lists";
const listId = params.get("list") || "groceries";
const path = `${encodeURIComponent(collection)}/${encodeURIComponent(listId)}`;

let retried = 0;
let written = null; // the state this page's last write left, newer than the watch's for a moment
let edits = Promise.resolve(); // this page's edits, one at a time: none races its own page

const watch = new Watch(path, { format: "patch" }, {
  onReset() {
    forgetWritten();
    render();
  },
  onChange(type, resource) {
    forgetWritten();
    log(`${type} @${resource.revision}`);
    render();
  },
  onState: showState,
});

// The watch has caught up with this page's own write: its copy is the newest again.
function forgetWritten() {
  if (written && watch.revision >= written.revision) written = null;
}

// The newest state known: the watch's copy, or the answer to this page's own last write.
function current() {
  const seen = watch.items.get(listId) || null;
  if (written && (!seen || written.revision > seen.revision)) return written;
  return seen;
}

function items(resource) {
  return Array.isArray(resource?.data?.items) ? resource.data.items : [];
}

// The JSON patch that does `intent` to `resource`; null when there is nothing left to do (the
// item is gone, or already as asked).
function patchFor(intent, resource) {
  const list = items(resource);
  if (intent.op === "add") {
    // Already there: an earlier attempt committed, though its answer was lost.
    if (list.some((item) => item.id === intent.item.id)) return null;
    if (!Array.isArray(resource.data.items)) return [{ op: "add", path: "/items", value: [intent.item] }];
    return [{ op: "add", path: "/items/-", value: intent.item }];
  }
  const index = list.findIndex((item) => item.id === intent.id);
  if (index < 0) return null;
  if (intent.op === "remove") return [{ op: "remove", path: `/items/${index}` }];
  if (list[index].done === intent.done) return null;
  return [{ op: "replace", path: `/items/${index}/done`, value: intent.done }];
}

// The request that does `intent` to `resource`: a JSON patch of that revision, or, when there is
// no list yet, one made with the item (only if there is still none: If-None-Match). Null when
// there is nothing left to do.
function requestFor(intent, resource) {
  if (!resource) {
    if (intent.op !== "add") return null;
    const data = { title: listId, items: [intent.item] };
    return { method: "PUT", headers: { "Content-Type": "application/json", "If-None-Match": "*" }, body: data };
  }
  const patch = patchFor(intent, resource);
  if (!patch) return null;
  const headers = { "Content-Type": "application/json-patch+json", "If-Match": `"${resource.revision}"` };
  return { method: "PATCH", headers, body: patch };
}

async function edit(intent) {
  let resource = current();
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const request = requestFor(intent, resource);
    if (!request) return;
    let response;
    try {
      response = await fetch(api(path), { ...request, body: JSON.stringify(request.body) });
    } catch {
      showProblem({ status: 0, title: "Unreachable", detail: "the server did not answer the edit" });
      return;
    }
    if (response.ok) {
      written = await response.json();
      showProblem(null);
      return;
    }
    if (response.status !== 412) {
      showProblem(await readProblem(response));
      return;
    }
    // Someone else's edit came first: the same edit again, on the state that holds now.
    retried += 1;
    $("retried").textContent = retried;
    const fresh = await fetch(api(path));
    resource = fresh.ok ? await fresh.json() : null;
  }
}

function enqueue(intent) {
  edits = edits.then(() => edit(intent));
}

function newId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function render() {
  const resource = watch.items.get(listId);
  $("revision").textContent = watch.revision ?? "-";
  $("title").textContent = resource?.data?.title || `Shared list: ${listId}`;
  const rows = items(resource).map((item) => {
    const li = document.createElement("li");
    li.dataset.id = item.id;
    li.classList.toggle("done", !!item.done);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !!item.done;
    box.dataset.toggle = item.id;
    const text = document.createElement("span");
    text.textContent = item.text;
    const remove = document.createElement("button");
    remove.textContent = "remove";
    remove.dataset.remove = item.id;
    li.append(box, text, remove);
    return li;
  });
  $("items").replaceChildren(...rows);
  $("count").textContent = rows.length;
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 19)} ${text}`;
  $("log").prepend(li);
  while ($("log").children.length > LOG_KEPT) $("log").lastChild.remove();
}

$("add").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = e.target.elements.text;
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  enqueue({ op: "add", item: { id: newId(), text, done: false } });
});

$("items").addEventListener("click", (e) => {
  if (e.target.dataset.remove) enqueue({ op: "remove", id: e.target.dataset.remove });
});

$("items").addEventListener("change", (e) => {
  if (e.target.dataset.toggle) enqueue({ op: "done", id: e.target.dataset.toggle, done: e.target.checked });
});

watch.start();
