// What every part of the console uses: the API's address, the credential, the error banner and
// the event log. Documents are anyone's data: they reach the page only as text, never as markup.

const TOKEN_KEY = "watchroute.token"; // kept for the tab only, never in the URL
const EVENTS_KEPT = 50;

export const $ = (id) => document.getElementById(id);

export const credential = { token: sessionStorage.getItem(TOKEN_KEY) || "" };

export function setToken(token) {
  credential.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function api(path) {
  // Relative to the page, so that an app mounted under a prefix serves its own API.
  return new URL(`v1/${path}`, document.baseURI);
}

export function authHeaders() {
  return credential.token ? { Authorization: `Bearer ${credential.token}` } : {};
}

export function showProblem(problem) {
  const el = $("problem");
  el.hidden = !problem;
  el.textContent = problem ? `${problem.status} ${problem.title}: ${problem.detail}` : "";
}

export async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return { status: response.status, title: response.statusText, detail: "no problem details" };
  }
}

export function log(text, kind = "event") {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  li.dataset.kind = kind;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

// A value as one table cell shows it: strings as they are, anything else as compact JSON, and
// a long nested value cut short (the editor shows it whole).
export const CELL_CHARS = 80;

export function cellText(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  const text = JSON.stringify(value);
  if (value !== null && typeof value === "object" && text.length > CELL_CHARS) {
    return `${text.slice(0, CELL_CHARS - 1)}…`;
  }
  return text;
}
