// One lot, watched by every bidder's page; a bid is a write that holds only if nothing changed.
//
// The page bids with `If-Match: "<revision>"`, the revision of the highest bid it shows. Two
// bidders who both saw the same bid and bid on it race: the first write commits, the second is
// refused with 412 (its revision is no longer the lot's), and its page says it was outbid. No
// bid is lost and none is taken over a higher one it never saw. Every page shows the new highest
// bid when its watch of the lot delivers it, not from the answer to its own write.

import { Watch, api, readProblem, showProblem, showState } from "./watch.js";

const HISTORY_KEPT = 30;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const collection = params.get("collection") || "lots";
const lotId = params.get("lot") || "lot-1";
const path = `${encodeURIComponent(collection)}/${encodeURIComponent(lotId)}`;
$("place").elements.name.value = params.get("name") || "";

let lot = null; // the lot as last seen

const watch = new Watch(path, {}, {
  onReset(items) {
    show(items.get(lotId) || null);
  },
  onChange(type, resource) {
    show(type === "DELETED" ? null : resource);
  },
  onState: showState,
});

function show(resource) {
  lot = resource;
  $("revision").textContent = watch.revision ?? "-";
  if (!lot) {
    $("title").textContent = `Auction: no lot ${lotId}`;
    $("bid").textContent = "-";
    $("bidder").textContent = "-";
    return;
  }
  const { title, bid, bidder } = lot.data;
  $("title").textContent = `Auction: ${title ?? lotId}`;
  $("bid").textContent = bid;
  $("bidder").textContent = bidder ?? "-";
  const amount = $("place").elements.amount;
  amount.placeholder = `more than ${bid}`;
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 19)} ${bid} by ${bidder ?? "-"} @${lot.revision}`;
  $("history").prepend(li);
  while ($("history").children.length > HISTORY_KEPT) $("history").lastChild.remove();
}

function outcome(kind, text) {
  const el = $("outcome");
  el.dataset.outcome = kind;
  el.textContent = text;
}

async function bid(name, amount) {
  const seen = lot; // what this bid answers
  if (!seen) return outcome("lost", "There is nothing to bid on.");
  if (!(amount > Number(seen.data.bid))) {
    return outcome("lost", `Bid more than ${seen.data.bid}.`);
  }
  const data = { ...seen.data, bid: amount, bidder: name, bids: (seen.data.bids || 0) + 1 };
  let response;
  try {
    response = await fetch(api(path), {
      method: "PUT",
      headers: { "Content-Type": "application/json", "If-Match": `"${seen.revision}"` },
      body: JSON.stringify(data),
    });
  } catch {
    return outcome("lost", "The server did not answer: bid again.");
  }
  if (response.ok) {
    showProblem(null);
    return outcome("won", `You lead with ${amount}.`);
  }
  const problem = await readProblem(response);
  if (response.status === 412) {
    return outcome("lost", `412 Outbid: someone bid on ${seen.data.bid} before you did. Your ${amount} was not placed.`);
  }
  outcome("lost", "Your bid was refused.");
  showProblem(problem);
}

$("place").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  bid(form.get("name").trim(), Number(form.get("amount")));
});

watch.start();
