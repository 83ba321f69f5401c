// A chat room: its messages, and who is here and who is typing: two watches (a browser keeps
// six connections to a server, shared by its tabs).
//
// Presence and typing are TTL leases (`PUT ...?ttl=N`) in one collection: a page renews its
// presence every few seconds and its "typing" while keys are pressed. A page that closes, or a
// tab that is killed, stops renewing, and the server deletes the lease once it lapses: every page
// sees the DELETED (marked `expired`) and the name leaves the list by itself.
//
// A message is written with an id made here and `If-None-Match: *`, and written again until the
// server answers: one whose answer was lost (the server restarting) is refused the second time
// (412), so no message is doubled, and the watch resumes after the last revision it saw, so none
// is lost. Messages are anyone's data: they reach the page as text only.

import { Watch, api, readProblem, showProblem, showState } from "./watch.js";

const TYPING_TTL_S = 3;
const TYPING_RENEW_MS = 1000;
const RESEND_MS = 1000;
const $ = (id) => document.getElementById(id);

// Ids of resources are [A-Za-z0-9._:-]: a room or a name given in the URL is made one.
const tidy = (text) => text.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 60) || "x";
const params = new URLSearchParams(location.search);
const room = tidy(params.get("room") || "lobby");
const me = tidy(params.get("user") || `guest-${Math.random().toString(36).slice(2, 6)}`);
// This page's leases: `state` says which.
const LEASES = { here: `${room}.${me}`, typing: `${room}.${me}.typing` };
const inRoom = { filter: `room="${room}"` };
// `?ttl=`: the presence lease's seconds (how soon a page that went away leaves the list),
// renewed three times within it.
const PRESENCE_TTL_S = Math.max(1, Number(params.get("ttl")) || 15);
const PRESENCE_RENEW_MS = (PRESENCE_TTL_S * 1000) / 3;

let typedAt = 0;

function render() {
  $("revision").textContent = messages.revision ?? "-";
  const shown = [...messages.items.values()].sort((a, b) => a.created_revision - b.created_revision);
  $("messages").replaceChildren(
    ...shown.map((message) => {
      const li = document.createElement("li");
      li.dataset.id = message.id;
      const author = document.createElement("b");
      author.textContent = message.data.author;
      li.append(author, document.createTextNode(message.data.text));
      return li;
    }),
  );
  const leases = [...presence.items.values()].map((lease) => lease.data);
  const here = leases.filter((lease) => lease.state === "here").map((lease) => lease.user).sort();
  $("present").replaceChildren(
    ...here.map((user) => {
      const li = document.createElement("li");
      li.textContent = user === me ? `${user} (you)` : user;
      li.dataset.user = user;
      return li;
    }),
  );
  const typists = leases
    .filter((lease) => lease.state === "typing" && lease.user !== me)
    .map((lease) => lease.user);
  $("typing").textContent = typists.length ? `${typists.sort().join(", ")} typing…` : "";
}

const quiet = () => {};
const messages = new Watch("messages", inRoom, { onReset: render, onChange: render, onState: showState });
const presence = new Watch("presence", inRoom, { onReset: render, onChange: render, onState: quiet });

async function lease(state, ttl) {
  try {
    const response = await fetch(api(`presence/${LEASES[state]}?ttl=${ttl}`), {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room, user: me, state }),
    });
    if (!response.ok) showProblem(await readProblem(response));
  } catch {
    // the server is away: the next renewal tries again
  }
}

function release(state) {
  fetch(api(`presence/${LEASES[state]}`), { method: "DELETE", keepalive: true }).catch(() => {});
}

// Written until the server answers it: a 412 is this very message, committed by a try whose
// answer was lost.
async function send(text) {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const body = JSON.stringify({ room, author: me, text });
  for (;;) {
    let response = null;
    try {
      response = await fetch(api(`messages/${id}`), {
        method: "PUT",
        headers: { "Content-Type": "application/json", "If-None-Match": "*" },
        body,
      });
    } catch {
      // unreachable: again below
    }
    if (response && (response.ok || response.status === 412)) {
      showProblem(null);
      return;
    }
    if (response && response.status < 500 && response.status !== 429) {
      showProblem(await readProblem(response));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, RESEND_MS));
  }
}

let sending = Promise.resolve(); // in the order typed

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = e.target.elements.text;
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  typedAt = 0;
  release("typing");
  sending = sending.then(() => send(text));
});

$("send").elements.text.addEventListener("input", () => {
  if (Date.now() - typedAt < TYPING_RENEW_MS) return;
  typedAt = Date.now();
  lease("typing", TYPING_TTL_S);
});

addEventListener("pagehide", () => {
  release("here");
  release("typing");
});

$("me").textContent = me;
$("title").textContent = `Chat: ${room}`;
fetch(api(`rooms/${room}`), {
  method: "PUT",
  headers: { "Content-Type": "application/json", "If-None-Match": "*" },
  body: JSON.stringify({ name: room }),
}).catch(() => {});
lease("here", PRESENCE_TTL_S);
setInterval(() => lease("here", PRESENCE_TTL_S), PRESENCE_RENEW_MS);
messages.start();
presence.start();
