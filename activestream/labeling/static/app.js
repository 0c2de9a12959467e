// The labeling page: keyboard first, one request per answer, no external assets.
"use strict";

const CLASS_KEYS = "1234567890qwertyiopadfghjklxcvbnm"; // s, u, z stay free for skip, unsure, undo
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("token"), config: null, item: null, busy: false, shownUrl: null };

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
  $("message").textContent = "";
  $("empty").hidden = !!item;
  img.hidden = !item;
  $("item-id").textContent = item ? item.id : "";
  renderGuesses($("guesses"), $("guess-list"), item && item.guesses);
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
  if (!data.item) waitTimer = setTimeout(() => run(loadNext), 3000);
}

async function run(action) {
  if (state.busy) return; // one request at a time: a held key never answers twice
  state.busy = true;
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
    $("previous").hidden = false;
    let text = `${item.id}: ${name}`;
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
    await api("POST", `/api/items/${encodeURIComponent(state.item.id)}/skip`, { unsure });
    await loadNext();
    refreshStats();
  });
}

function undo() {
  return run(async () => {
    const data = await (await api("POST", "/api/undo")).json();
    $("previous").hidden = true;
    await show(data.item);
    refreshStats();
  });
}

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)}%`);
async function refreshStats() {
  try {
    const s = await (await api("GET", "/api/stats")).json();
    $("s-queue").textContent = `${s.queue.waiting} waiting, ${s.queue.leased} in hand`;
    $("s-count").textContent = `${s.me.labeled} (${s.me.skipped} skipped, ${s.me.unsure} unsure)`;
    $("s-pace").textContent = `${s.me.pace_per_min.toFixed(1)} / min`;
    $("s-gold").textContent = `${pct(s.me.gold_accuracy)} of ${s.me.gold_answered}`;
    $("s-stamp").textContent = `${pct(s.me.rubber_stamp_rate)} of ${s.me.guess_wrong}`;
    const k = s.agreement.kappa;
    $("s-kappa").textContent = k === null ? `– (${s.agreement.items} items)` : `${k.toFixed(2)} (${s.agreement.items} items)`;
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
