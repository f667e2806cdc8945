// callguard serve panel: one agent's calls, newest first, each with its level, prompt, threat alert,
// buttons and a short timeline, from the server's SSE stream (only this agent's calls reach it).
// Authentication as the daemon's panel: a one-time login link sets an HttpOnly cookie, or
// /panel/#token=<agent token> is exchanged for it and removed from the address bar.
"use strict";

const STRINGS = {
  en: {
    calm: "Calm", tense: "Tense", abusive: "Abusive", transfer: "Transfer", release: "Release",
    no_call: "No call", waiting: "Waiting for a call", ended: "Calls ended", call: "call",
    all_calm: "All calm", listen: "Listen, and let the customer explain.", next: "Next",
    acknowledged: "Got it", limits_stated: "Limits stated", transferred: "Transferred", released: "Released",
    help: "Need help", shouting: "Shouting", you: "You", level: "Level", started: "Call started",
    call_end: "Call ended", asked_help: "You asked for a supervisor", threat: "Threat",
    unreached: "Supervisor not reached: call them now.", failed: "Could not record it",
    offline: "Connection to callguard lost, retrying…",
  },
  fr: {
    calm: "Calme", tense: "Tendu", abusive: "Abusif", transfer: "Transfert", release: "Libérer",
    no_call: "Pas d'appel", waiting: "En attente d'un appel", ended: "Appels terminés", call: "appel",
    all_calm: "Tout est calme", listen: "Écoutez, laissez le client s'expliquer.", next: "Ensuite",
    acknowledged: "Compris", limits_stated: "Limites posées", transferred: "Transféré", released: "Appel libéré",
    help: "Besoin d'aide", shouting: "Cris", you: "Vous", level: "Niveau", started: "Appel commencé",
    call_end: "Appel terminé", asked_help: "Vous avez demandé un superviseur", threat: "Menace",
    unreached: "Superviseur non joint : appelez-le maintenant.", failed: "Action non enregistrée",
    offline: "Connexion à callguard perdue, nouvelle tentative…",
  },
};
const LANG = (() => {
  const forced = new URLSearchParams(location.search).get("lang");
  const lang = forced || (navigator.language || "en").slice(0, 2);
  return STRINGS[lang] ? lang : "en";
})();
const tr = (key) => STRINGS[LANG][key] ?? STRINGS.en[key] ?? key;
const LEVELS = Object.fromEntries(["calm", "tense", "abusive", "transfer", "release"].map((l) => [l, tr(l)]));
const KEYS = { a: "acknowledged", l: "limits_stated", t: "transferred", r: "released" };
const TIMELINE_MAX = 8;
const calls = new Map();  // call_id -> { state, timeline, el }
const $ = (id) => document.getElementById(id);
window.callguardLatenciesMs = [];  // publish -> panel, for the tests and the bench
window.callguardPrompts = [];  // every prompt shown: { call_id, id, level }

function formatTime(t) {
  const s = Math.max(0, Math.floor(t || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function describe(ev) {
  switch (ev.type) {
    case "prompt": return ev.title;
    case "abuse": return `${ev.category} (${(ev.words || []).join(" ")})`;
    case "shouting": return tr("shouting");
    case "action": return `${tr("you")}: ${tr(ev.action)}`;
    case "level": return `${tr("level")}: ${LEVELS[ev.level] || ev.level}`;
    case "notice": return ev.message;
    case "call_start": return tr("started");
    case "call_end": return tr("call_end");
    case "help": return tr("asked_help");
    default: return null;
  }
}

function card(callId) {
  let entry = calls.get(callId);
  if (entry) return entry;
  const el = $("call-template").content.firstElementChild.cloneNode(true);
  el.dataset.callId = callId;
  for (const button of el.querySelectorAll("button[data-action]")) button.textContent = tr(button.dataset.action);
  el.querySelector("button[data-help]").textContent = tr("help");
  for (const button of el.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => post(callId, "actions", { action: button.dataset.action }));
  }
  el.querySelector("button[data-help]").addEventListener("click", () => post(callId, "help", {}));
  entry = { state: null, timeline: [], el };
  calls.set(callId, entry);
  return entry;
}

function showPrompt(entry, prompt) {
  const el = entry.el;
  el.querySelector(".prompt").dataset.promptId = prompt ? prompt.id || "" : "";
  el.querySelector(".prompt-title").textContent = prompt ? prompt.title || "" : tr("all_calm");
  el.querySelector(".prompt-instruction").textContent = prompt ? prompt.instruction || "" : tr("listen");
  const text = el.querySelector(".prompt-text");
  text.textContent = prompt ? prompt.text || "" : "";
  text.hidden = !(prompt && prompt.text);
  el.querySelector(".prompt-next-text").textContent = prompt ? prompt.next_step || "" : "";
  el.querySelector(".prompt-next").hidden = !(prompt && prompt.next_step);
}

function showAlert(entry, prompt) {
  const box = entry.el.querySelector(".alert");
  box.hidden = !prompt;
  if (!prompt) return;
  box.dataset.promptId = prompt.id || "";
  box.querySelector(".alert-title").textContent = prompt.title || tr("threat");
  box.querySelector(".alert-instruction").textContent = prompt.instruction || "";
  box.querySelector(".alert-text").textContent = prompt.text || "";
}

function setLevel(entry, level) {
  entry.el.dataset.level = level || "calm";
  entry.el.querySelector(".call-level").textContent = LEVELS[level] || level || "";
}

function renderTimeline(entry) {
  const list = entry.el.querySelector(".timeline");
  list.replaceChildren();
  for (const ev of entry.timeline.slice(-TIMELINE_MAX).reverse()) {
    const text = describe(ev);
    if (!text) continue;
    const li = document.createElement("li");
    li.dataset.type = ev.type;
    const time = document.createElement("time");
    time.textContent = formatTime(ev.t);
    li.append(time, document.createTextNode(" " + text));
    list.append(li);
  }
}

function renderCall(s) {
  const entry = card(s.call_id);
  entry.state = s;
  entry.timeline = s.timeline || [];
  const f = s.facts || {};
  const who = [f.customer_name, f.company, f.queue].filter(Boolean).join(" · ");
  entry.el.querySelector(".call-facts").textContent = `${who ? who + " · " : ""}${tr("call")} ${s.call_id}`;
  entry.el.dataset.active = String(Boolean(s.active));
  setLevel(entry, s.level);
  showPrompt(entry, s.prompt || null);
  showAlert(entry, s.active ? s.alert : null);
  for (const button of entry.el.querySelectorAll(".actions button")) {
    button.disabled = !s.active;
    button.classList.toggle("done", (s.actions || []).includes(button.dataset.action));
  }
  renderTimeline(entry);
  place();
}

// Newest first; the bar shows the highest level among open calls.
function place() {
  const list = $("calls");
  const sorted = [...calls.values()].sort((a, b) => (b.state?.opened_at || 0) - (a.state?.opened_at || 0));
  list.replaceChildren(...sorted.map((e) => e.el));
  $("empty").hidden = sorted.length > 0;
  $("empty").textContent = tr("waiting");
  const order = Object.keys(LEVELS);
  const open = sorted.filter((e) => e.state && e.state.active).map((e) => e.el.dataset.level);
  const top = open.sort((a, b) => order.indexOf(b) - order.indexOf(a))[0];
  document.body.dataset.level = top || "none";
  $("level").textContent = top ? LEVELS[top] : tr(sorted.length ? "ended" : "no_call");
}

function onEvent(message) {
  const entry = calls.get(message.call_id);
  if (!entry) return;
  const ev = message.event;
  entry.timeline.push(ev);
  if (ev.type === "prompt") {
    window.callguardPrompts.push({ call_id: message.call_id, id: ev.id, level: ev.level });
    if (ev.alert) showAlert(entry, ev); else showPrompt(entry, ev);
  } else if (ev.type === "level") {
    setLevel(entry, ev.level);
    place();
  } else if (ev.type === "action") {
    const button = entry.el.querySelector(`button[data-action="${ev.action}"]`);
    if (button) button.classList.add("done");
  }
  renderTimeline(entry);
}

function onMessage(raw) {
  const message = JSON.parse(raw.data);
  if (message.wall) window.callguardLatenciesMs.push(Date.now() - message.wall * 1000);
  if (message.kind === "calls") {
    calls.clear();
    if (message.agent_id) $("agent").textContent = message.agent_id;
    for (const s of message.calls) renderCall(s);
    place();
  } else if (message.kind === "call") renderCall(message);
  else if (message.kind === "event") onEvent(message);
  else if (message.kind === "gone") { calls.delete(message.call_id); place(); }
  else if (message.kind === "floor") {
    const callId = message.call_id || (message.notice || {}).call_id;
    const entry = calls.get(callId);
    if (!entry) return;
    const line = entry.el.querySelector(".supervisor");
    line.hidden = false;
    line.textContent = message.state === "notice" ? `${message.notice.by || "A supervisor"}: ${message.notice.kind}` : tr("unreached");
  }
}

async function post(callId, what, body) {
  const response = await fetch(`/api/v1/calls/${encodeURIComponent(callId)}/${what}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    $("offline").hidden = false;
    $("offline").textContent = `${tr("failed")}: ${answer.error}`;
  }
}

async function authenticate() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    const response = await fetch("/api/v1/session", {
      method: "POST", headers: { Authorization: `Bearer ${token}` }, credentials: "same-origin",
    });
    if (response.ok) history.replaceState(null, "", location.pathname + location.search);
  }
  const check = await fetch("/api/v1/calls", { credentials: "same-origin" });
  return check.status !== 401;
}

function connect() {
  const source = new EventSource("/api/v1/events");
  source.onopen = () => { $("offline").hidden = true; document.body.dataset.connected = "true"; };
  source.onmessage = onMessage;
  source.onerror = async () => {
    document.body.dataset.connected = "false";
    $("offline").textContent = tr("offline");
    $("offline").hidden = false;
    if (source.readyState === EventSource.CLOSED) {
      if (!(await authenticate().catch(() => true))) { $("auth").hidden = false; return; }
      setTimeout(connect, 2000);
    }
  };
}

// Keys as on the daemon's panel (A, L, T, R, H): for the newest open call, the top card.
function newestOpen() {
  return [...calls.values()].filter((e) => e.state && e.state.active)
    .sort((a, b) => b.state.opened_at - a.state.opened_at)[0];
}

async function main() {
  document.documentElement.lang = LANG;
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const entry = newestOpen();
    if (!entry) return;
    const key = e.key.toLowerCase();
    if (key === "h") { e.preventDefault(); post(entry.state.call_id, "help", {}); return; }
    const action = KEYS[key];
    if (action) { e.preventDefault(); post(entry.state.call_id, "actions", { action }); }
  });
  let ok = false;
  try { ok = await authenticate(); } catch { ok = true; }
  if (!ok) { $("auth").hidden = false; return; }
  connect();
}

main();
