// The labeling page: keyboard first, one request per answer, no external assets.
"use strict";

const CLASS_KEYS = "1234567890qwertyiopadfghjklxcvbnm"; // s, u, z stay free for skip, unsure, undo
const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("token"), config: null, item: null, busy: false, shownUrl: null,
  last: null,    // the labeler's last answer on this page: { id, outcome, label }
  earlier: null, // what an undone item had before: { id, label, name } or { id, outcome }
};

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { signOut("Your token was not accepted."); throw new Error("unauthorized"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = res.status;
    throw err;
  }
  return res.status === 204 ? null : res;
}

function signOut(message) {
  sessionStorage.removeItem("token");
  state.token = null;
  $("work").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

async function signIn(token) {
  state.token = token;
  state.config = await (await api("GET", "/api/config")).json();
  sessionStorage.setItem("token", token);
  $("signin").hidden = true;
  $("work").hidden = false;
  $("who").textContent = state.config.labeler;
  renderClasses();
  await loadNext();
  refreshStats();
}

function renderClasses() {
  const box = $("classes");
  box.textContent = "";
  state.config.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.label = i;
    const key = CLASS_KEYS[i];
    if (key) { const k = document.createElement("kbd"); k.textContent = key; b.append(k); }
    b.append(name);
    b.addEventListener("click", () => answer(i));
    box.append(b);
  });
}

async function show(item) {
  // The new item appears all at once, image decoded, so no key lands on an item not yet seen.
  let url = null;
  if (item) url = URL.createObjectURL(await (await api("GET", item.image)).blob());
  const img = $("image");
  if (url) {
    img.src = url;
    await img.decode().catch(() => {});
    // Small images are upscaled with nearest neighbour so pixels stay crisp.
    img.classList.toggle("pixelated", img.naturalWidth * 2 <= $("stage").clientWidth);
  }
  if (state.shownUrl) URL.revokeObjectURL(state.shownUrl);
  state.shownUrl = url;
  state.item = item;
  img.dataset.item = item ? item.id : "";
  // #message is left alone: it stays until the next action starts (see run). The note of
  // what an undone item had stays while that item is shown (a refused skip shows it again).
  if (!(item && state.earlier && state.earlier.id === item.id)) state.earlier = null;
  renderCorrection();
  $("empty").hidden = !!item;
  img.hidden = !item;
  $("item-id").textContent = item ? item.id : "";
  renderGuesses($("guesses"), $("guess-list"), item && item.guesses);
}

function renderCorrection() {
  // After an undo: say the item is a correction and what was chosen before.
  const e = state.earlier;
  const box = $("correction");
  box.hidden = !e;
  if (e && e.name !== undefined) {
    box.textContent = `Correction: you answered “${e.name}” before. It stays unless you pick another class.`;
  } else if (e && e.outcome) {
    box.textContent = `Correction: you ${e.outcome === "unsure" ? "marked this item unsure" : "skipped this item"} before. Answer it now, or skip it again.`;
  } else if (e) {
    box.textContent = "Correction: this is your last answer, reopened. Answer it again.";
  }
  $("classes").querySelectorAll("button").forEach((b) => {
    b.classList.toggle("chosen", !!e && e.label !== undefined && Number(b.dataset.label) === e.label);
  });
}

function renderGuesses(box, list, guesses) {
  list.textContent = "";
  box.hidden = !guesses || guesses.length === 0;
  (guesses || []).forEach((g) => {
    const li = document.createElement("li");
    li.textContent = `${g.name} (${(100 * g.p).toFixed(0)}%)`;
    list.append(li);
  });
}

let waitTimer = null;
async function loadNext() {
  clearTimeout(waitTimer);
  const data = await (await api("POST", "/api/next")).json();
  await show(data.item);
  if (!data.item) waitTimer = setTimeout(() => run(loadNext, false), 3000);
}

async function run(action, byLabeler = true) {
  if (state.busy) return; // one request at a time: a held key never answers twice
  state.busy = true;
  if (byLabeler) $("message").textContent = ""; // the last action's message is read by now
  document.body.dataset.busy = "1"; // keys pressed meanwhile are dropped, never applied to the next item
  try { await action(); } catch (e) {
    if (e.message !== "unauthorized") $("message").textContent = e.message;
    if (e.status === 409 || e.status === 404) { try { await loadNext(); } catch (e2) { /* shown above */ } }
  } finally { state.busy = false; delete document.body.dataset.busy; }
}

function answer(label) {
  return run(async () => {
    if (!state.item) return;
    const item = state.item;
    const res = await (await api("POST", `/api/items/${encodeURIComponent(item.id)}/label`, { label })).json();
    const name = state.config.classes[label];
    const earlier = state.earlier && state.earlier.id === item.id ? state.earlier : null;
    state.last = { id: item.id, outcome: "labeled", label };
    $("previous").hidden = false;
    let text = `${item.id}: ${name}`;
    if (earlier && earlier.name !== undefined && earlier.label !== label) text += ` (was ${earlier.name})`;
    if (res.guesses && res.guesses.length) {
      text += ` — model: ${res.guesses.map((g) => `${g.name} ${(100 * g.p).toFixed(0)}%`).join(", ")}`;
    }
    $("previous-text").textContent = text;
    await loadNext();
    refreshStats();
  });
}

function skip(unsure) {
  return run(async () => {
    if (!state.item) return;
    const id = state.item.id;
    await api("POST", `/api/items/${encodeURIComponent(id)}/skip`, { unsure });
    state.last = { id, outcome: unsure ? "unsure" : "skipped" };
    await loadNext();
    refreshStats();
  });
}

function undo() {
  return run(async () => {
    const data = await (await api("POST", "/api/undo")).json();
    const item = data.item;
    if (data.previous) {
      state.earlier = { id: item.id, label: data.previous.label, name: data.previous.name };
    } else { // an undone skip is forgotten by the queue: what this page saw is all there is
      const last = state.last && state.last.id === item.id ? state.last : null;
      state.earlier = { id: item.id, outcome: last ? last.outcome : null };
    }
    $("previous").hidden = true;
    await show(item);
    refreshStats();
  });
}

const pct = (x) => `${(100 * x).toFixed(0)}%`;
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function renderBroker(broker) {
  // Reported by the service when it keeps answers for a broker it cannot reach.
  const down = !!broker && (broker.up === false || broker.waiting > 0);
  $("broker").hidden = !down;
  $("broker").textContent = down
    ? `The loop's broker is unreachable: your answers are kept and sent when it is back (${broker.waiting ?? 0} waiting).` : "";
}

async function refreshStats() {
  try {
    const s = await (await api("GET", "/api/stats")).json();
    $("s-queue").textContent = `${s.queue.waiting} waiting, ${s.queue.leased} in hand`;
    $("s-count").textContent = `${s.me.labeled} (${s.me.skipped} skipped, ${s.me.unsure} unsure)`;
    $("s-pace").textContent = `${s.me.pace_per_min.toFixed(1)} / min`;
    $("s-gold").textContent = s.me.gold_answered === 0 ? "no gold items yet"
      : `${pct(s.me.gold_accuracy)} of ${plural(s.me.gold_answered, "gold item", "gold items")}`;
    $("s-stamp").textContent = s.me.guess_wrong === 0 ? "no gold item with a wrong guess yet"
      : `${pct(s.me.rubber_stamp_rate)} of ${plural(s.me.guess_wrong, "gold item", "gold items")}`;
    const k = s.agreement.kappa, shared = s.agreement.items;
    $("s-kappa").textContent = shared === 0 ? "no item labeled twice yet"
      : k === null ? `not defined: ${plural(shared, "item", "items")}, all one class` : `${k.toFixed(2)} on ${plural(shared, "item", "items")}`;
    renderBroker(s.broker);
  } catch (e) { /* stats are advisory; the next answer retries */ }
}

document.addEventListener("keydown", (ev) => {
  if ($("work").hidden || ev.altKey || ev.metaKey) return;
  const key = ev.key.toLowerCase();
  if (ev.ctrlKey) { if (key === "z") { ev.preventDefault(); undo(); } return; }
  if (key === "z" || key === "backspace") { ev.preventDefault(); undo(); return; }
  if (key === "s") { ev.preventDefault(); skip(false); return; }
  if (key === "u") { ev.preventDefault(); skip(true); return; }
  const i = CLASS_KEYS.indexOf(key);
  if (i >= 0 && state.config && i < state.config.classes.length) { ev.preventDefault(); answer(i); }
});

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("token").value.trim()).catch((e) => { if (e.message !== "unauthorized") $("signin-error").textContent = e.message; });
});
$("signout").addEventListener("click", () => signOut());
document.querySelectorAll("#actions button").forEach((b) => b.addEventListener("click", () => {
  const a = b.dataset.action;
  if (a === "undo") undo(); else skip(a === "unsure");
}));
setInterval(() => { if (state.token && !$("work").hidden) refreshStats(); }, 10000);

if (state.token) signIn(state.token).catch(() => signOut()); else signOut();
