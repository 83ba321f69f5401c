// Writing from the console: the JSON editor of one document, saved as a merge patch or a whole
// replacement, either way with `If-Match` on the revision it was opened at, so that a change
// made meanwhile by someone else is never overwritten unseen: the server answers 412 and the
// editor shows the newer version beside the edit. Deletes ask to be confirmed first.
// The table changes when the watch reports a write, not from a write's answer.

import { $, api, authHeaders, readProblem, showProblem } from "./shared.js";

const MERGE_PATCH = "application/merge-patch+json";
const CONFIRM_MS = 4000; // how long a pressed delete button waits for the second press

let editing = null; // {collection, id, revision, data}: the document as the editor opened it

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

function path(collection, id) {
  return `${encodeURIComponent(collection)}/${encodeURIComponent(id)}`;
}

// A write; true when it succeeded. A failure is shown in the banner, a success clears it.
export async function write(method, collection, id, body, headers = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] ??= "application/json";
    init.body = body;
  }
  try {
    const response = await fetch(api(path(collection, id)), init);
    if (!response.ok) {
      const problem = await readProblem(response);
      if (response.status !== 412 || !editing) showProblem(problem);
      return { ok: false, status: response.status, problem };
    }
    showProblem(null);
    return { ok: true, status: response.status, written: await response.json().catch(() => null) };
  } catch {
    showProblem({ status: 0, title: "Unreachable", detail: `the server did not answer the ${method}` });
    return { ok: false, status: 0 };
  }
}

// True on the second press of `button` within CONFIRM_MS; the first one only asks.
export function confirmed(button) {
  if (button.dataset.armed) {
    clearTimeout(button.disarm);
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
    return true;
  }
  button.dataset.label = button.textContent;
  button.dataset.armed = "true";
  button.textContent = "confirm delete";
  button.disarm = setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
  }, CONFIRM_MS);
  return false;
}

// The merge patch (RFC 7396) that turns `from` into `to`; null where `to` holds a null, which
// a merge patch cannot write (it would delete the member): such an edit is saved as a PUT.
export function mergePatch(from, to) {
  const patch = {};
  for (const key of Object.keys(from)) if (!(key in to)) patch[key] = null;
  for (const [key, value] of Object.entries(to)) {
    const before = from[key];
    if (value === null && before !== null) return null;
    if (isObject(value) && isObject(before)) {
      const inner = mergePatch(before, value);
      if (inner === null) return null;
      if (Object.keys(inner).length) patch[key] = inner;
    } else if (JSON.stringify(before) !== JSON.stringify(value)) patch[key] = value;
  }
  return patch;
}

export function openEditor(collection, resource) {
  editing = { collection, id: resource.id, revision: resource.revision, data: resource.data };
  $("editor").hidden = false;
  $("editor-id").textContent = resource.id;
  $("editor-revision").textContent = resource.revision;
  $("editor-text").value = JSON.stringify(resource.data, null, 2);
  $("editor-note").textContent = "";
  $("conflict").hidden = true;
  $("editor-delete").textContent = "Delete";
  $("editor-text").focus();
}

export function closeEditor() {
  editing = null;
  $("editor").hidden = true;
}

// Told by the table of every change to a shown document: one that changed since the editor
// opened it is said to have, before a save meets the 412.
export function noticeChange(collection, resource, deleted) {
  if (!editing || editing.id !== resource.id || editing.collection !== collection) return;
  if (deleted) $("editor-note").textContent = `deleted on the server @${resource.revision}`;
  else if (resource.revision !== editing.revision) {
    $("editor-note").textContent = `changed on the server since it was opened: now @${resource.revision}`;
  }
}

function edited() {
  let data;
  try {
    data = JSON.parse($("editor-text").value);
  } catch (error) {
    showProblem({ status: 400, title: "Bad Request", detail: `not JSON: ${error.message}` });
    return undefined;
  }
  if (!isObject(data)) {
    showProblem({ status: 400, title: "Bad Request", detail: "a document must be a JSON object" });
    return undefined;
  }
  return data;
}

async function save(method) {
  const data = edited();
  if (!editing || data === undefined) return;
  const base = editing;
  let body = JSON.stringify(data);
  const headers = { "If-Match": `"${base.revision}"` };
  if (method === "PATCH") {
    const patch = mergePatch(base.data, data);
    if (patch === null) {
      showProblem({ status: 400, title: "Bad Request", detail: "a merge patch cannot set a null: save as PUT" });
      return;
    }
    body = JSON.stringify(patch);
    headers["Content-Type"] = MERGE_PATCH;
  }
  const result = await write(method, base.collection, base.id, body, headers);
  if (editing !== base) return; // another document was opened meanwhile
  if (result.ok) {
    const written = result.written;
    if (written?.data) editing = { ...base, revision: written.revision, data: written.data };
    else editing = { ...base, revision: written?.revision ?? base.revision, data };
    $("editor-revision").textContent = editing.revision;
    $("editor-note").textContent = `saved as ${method} @${editing.revision}`;
    $("conflict").hidden = true;
  } else if (result.status === 412) await showConflict(base);
}

// The 412: someone else wrote the document since it was opened. The edit stays in the editor,
// the newer version is shown beside it, to be taken up (and the edit made again) or overwritten.
async function showConflict(base) {
  let newer = null;
  try {
    const response = await fetch(api(path(base.collection, base.id)), { headers: authHeaders() });
    if (response.ok) newer = await response.json();
  } catch {
    // shown as unknown below
  }
  if (editing !== base) return;
  editing.newer = newer;
  $("conflict").hidden = false;
  $("conflict-text").textContent = newer
    ? `412 conflict: ${base.id} changed on the server (now @${newer.revision}, opened @${base.revision}); ` +
      "not saved. The newer version:"
    : `412 conflict: ${base.id} changed on the server since @${base.revision} (deleted, or not readable); not saved.`;
  $("conflict-newer").textContent = newer ? JSON.stringify(newer.data, null, 2) : "";
  $("conflict-load").hidden = !newer;
}

export function wireEditor() {
  $("save-patch").addEventListener("click", () => save("PATCH"));
  $("save-put").addEventListener("click", () => save("PUT"));
  $("editor-close").addEventListener("click", closeEditor);
  $("conflict-load").addEventListener("click", () => {
    if (editing?.newer) openEditor(editing.collection, editing.newer);
  });
  $("editor-delete").addEventListener("click", async (e) => {
    if (!editing || !confirmed(e.target)) return;
    const { collection, id } = editing;
    if ((await write("DELETE", collection, id)).ok && editing?.id === id) closeEditor();
  });
  $("editor").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeEditor();
    else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) save("PATCH");
  });
}
