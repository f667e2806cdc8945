// callguard prompts panel: subscribes to the daemon's server-sent events and shows the current level,
// prompt, threat alerts and a short timeline; the buttons report the agent's actions back.
// Authentication: the panel is opened once as /panel/#token=<daemon.token>; the token is exchanged for
// an HttpOnly session cookie and removed from the address bar (see callguard/server.py).
"use strict";

const STRINGS = {
  en: {
    no_call: "No call", waiting: "Waiting for a call", next: "Next", timeline: "Timeline", call: "Call",
    need_token: "Open the panel through its link with the token (…/panel/#token=…).",
    offline: "Connection to callguard lost, retrying…",
    loudness_only: "No speech model: loudness only. Words are not checked.",
    capture_lost: "Not listening: audio device lost ({roles}). Retrying.",
    calm: "Calm", tense: "Tense", abusive: "Abusive", transfer: "Transfer", release: "Release",
    act_acknowledged: "Got it", act_limits_stated: "Limits stated", act_transferred: "Transferred",
    act_released: "Released",
    ev_abuse: "{category} ({words})", ev_shouting: "Shouting", ev_action: "You: {action}",
    ev_level: "Level: {level}", ev_notice: "{message}", ev_call_start: "Call started",
    ev_call_end: "Call ended", ev_language: "Language: {lang}",
    profanity: "Profanity", insult: "Insult", threat: "Threat",
    no_prompt: "All calm", no_prompt_text: "Listen, and let the customer explain.",
    after_call: "Call ended", facts: "{customer} · {company} · call {call_id}",
    customer_unknown: "customer", action_failed: "Could not record the action: {error}",
    need_help: "Need help", ev_help: "You asked for a supervisor",
    help_sent: "Help requested: a supervisor is being told.",
    help_no_floor: "No supervisors' floor is set up: call your supervisor.",
    unreached: "Supervisor not reached: call them now.",
    notice_acknowledged: "{by} has seen the alert.", notice_on_my_way: "{by} is on the way.",
    supervisor: "A supervisor", take_break: "Taking a break",
    break_recorded: "Break of {minutes} minutes recorded. Take it now.",
  },
  fr: {
    no_call: "Pas d'appel", waiting: "En attente d'un appel", next: "Ensuite", timeline: "Historique",
    call: "Appel",
    need_token: "Ouvrez le panneau avec son lien contenant le jeton (…/panel/#token=…).",
    offline: "Connexion à callguard perdue, nouvelle tentative…",
    loudness_only: "Aucun modèle de parole : volume seulement. Les mots ne sont pas analysés.",
    capture_lost: "Écoute interrompue : périphérique audio perdu ({roles}). Nouvelle tentative.",
    calm: "Calme", tense: "Tendu", abusive: "Abusif", transfer: "Transfert", release: "Libérer",
    act_acknowledged: "Compris", act_limits_stated: "Limites posées", act_transferred: "Transféré",
    act_released: "Appel libéré",
    ev_abuse: "{category} ({words})", ev_shouting: "Cris", ev_action: "Vous : {action}",
    ev_level: "Niveau : {level}", ev_notice: "{message}", ev_call_start: "Appel commencé",
    ev_call_end: "Appel terminé", ev_language: "Langue : {lang}",
    profanity: "Grossièreté", insult: "Insulte", threat: "Menace",
    no_prompt: "Tout est calme", no_prompt_text: "Écoutez, laissez le client s'expliquer.",
    after_call: "Appel terminé", facts: "{customer} · {company} · appel {call_id}",
    customer_unknown: "client", action_failed: "Action non enregistrée : {error}",
    need_help: "Besoin d'aide", ev_help: "Vous avez demandé un superviseur",
    help_sent: "Demande d'aide envoyée : un superviseur est prévenu.",
    help_no_floor: "Aucun poste superviseur n'est configuré : appelez votre superviseur.",
    unreached: "Superviseur non joint : appelez-le maintenant.",
    notice_acknowledged: "{by} a vu l'alerte.", notice_on_my_way: "{by} arrive.",
    supervisor: "Un superviseur", take_break: "Je prends une pause",
    break_recorded: "Pause de {minutes} minutes enregistrée. Prenez-la maintenant.",
  },
};
const TIMELINE_MAX = 12;
const KEYS = { a: "acknowledged", l: "limits_stated", t: "transferred", r: "released" };
const HELP_KEY = "h";
const BREAK_KEY = "b";
const BREAK_MINUTES = 5;

const state = { call: null, prompt: null, lang: "en", timeline: [], startedWall: 0, connected: false };
const $ = (id) => document.getElementById(id);

function pickLanguage(callLanguage) {
  const forced = new URLSearchParams(location.search).get("lang");
  const lang = forced || callLanguage || (navigator.language || "en").slice(0, 2);
  return STRINGS[lang] ? lang : "en";
}

function tr(key, values = {}) {
  const text = STRINGS[state.lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function applyLanguage(lang) {
  state.lang = pickLanguage(lang);
  document.documentElement.lang = state.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = tr(el.dataset.i18n);
}

function formatTime(t) {
  const s = Math.max(0, Math.floor(t || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function setLevel(level) {
  document.body.dataset.level = level || "none";
  $("level").textContent = level ? tr(level) : tr("no_call");
}

function showPrompt(prompt) {
  state.prompt = prompt;
  if (!prompt) {
    $("prompt-title").textContent = state.call ? tr("no_prompt") : tr("waiting");
    $("prompt-instruction").textContent = state.call ? tr("no_prompt_text") : "";
    $("prompt-text").hidden = true;
    $("prompt-next").hidden = true;
    $("prompt").dataset.promptId = "";
    return;
  }
  $("prompt").dataset.promptId = prompt.id || "";
  $("prompt-title").textContent = prompt.title || "";
  $("prompt-instruction").textContent = prompt.instruction || "";
  $("prompt-text").textContent = prompt.text || "";
  $("prompt-text").hidden = !prompt.text;
  $("prompt-next-text").textContent = prompt.next_step || "";
  $("prompt-next").hidden = !prompt.next_step;
}

function showAlert(prompt) {
  $("alert").hidden = !prompt;
  if (!prompt) return;
  $("alert").dataset.promptId = prompt.id || "";
  $("alert-title").textContent = prompt.title || tr("threat");
  $("alert-instruction").textContent = prompt.instruction || "";
  $("alert-text").textContent = prompt.text || "";
  $("alert-text").hidden = !prompt.text;
}

function describe(ev) {
  switch (ev.type) {
    case "prompt": return ev.title;
    case "abuse": return tr("ev_abuse", { category: tr(ev.category), words: (ev.words || []).join(" ") });
    case "shouting": return tr("ev_shouting");
    case "action": return tr("ev_action", { action: tr(`act_${ev.action}`) });
    case "level": return tr("ev_level", { level: tr(ev.level) });
    case "notice": return ev.code && STRINGS.en[ev.code] ? tr(ev.code) : tr("ev_notice", { message: ev.message });
    case "language": return tr("ev_language", { lang: ev.lang });
    case "call_start": return tr("ev_call_start");
    case "call_end": return tr("ev_call_end");
    case "help": return tr("ev_help");
    default: return null;
  }
}

function renderTimeline() {
  const list = $("timeline");
  list.replaceChildren();
  for (const ev of state.timeline.slice(-TIMELINE_MAX).reverse()) {
    const text = describe(ev);
    if (!text) continue;
    const li = document.createElement("li");
    li.dataset.type = ev.type;
    if (ev.alert) li.dataset.alert = "true";
    const time = document.createElement("time");
    time.textContent = formatTime(ev.t);
    li.append(time, document.createTextNode(text));
    list.append(li);
  }
}

function setButtons(enabled, done = []) {
  for (const button of document.querySelectorAll("#actions button")) {
    button.disabled = !enabled;
    button.classList.toggle("done", done.includes(button.dataset.action));
  }
  $("break").disabled = enabled;  // a break is taken between calls
}

// The supervisors' floor: what became of a help request or a threat alert, in one plain line.
function showSupervisor(text, status) {
  const line = $("supervisor");
  line.hidden = !text;
  line.textContent = text || "";
  line.dataset.state = status || "";
}

function onFloor(message) {
  if (!state.call) return;
  if (message.state === "unreached" && message.call_id === state.call.call_id) {
    showSupervisor(tr("unreached"), "unreached");
  } else if (message.state === "notice" && message.notice.call_id === state.call.call_id) {
    const by = message.notice.by || tr("supervisor");
    showSupervisor(tr(`notice_${message.notice.kind}`, { by }), "notice");
  }
}

function showBanners(s) {
  $("loudness-only").hidden = s.mode !== "loudness-only";
  const lost = (s.capture || []).filter((d) => !d.ok).map((d) => d.role);
  $("capture").hidden = lost.length === 0;
  $("capture").textContent = lost.length ? tr("capture_lost", { roles: lost.join(", ") }) : "";
}

function renderState(s) {
  state.call = s.active ? s : null;
  applyLanguage(s.language || (s.facts && s.facts.language));
  showBanners(s);
  state.timeline = s.timeline || [];
  state.startedWall = s.active ? Date.now() / 1000 - (s.t || 0) : 0;
  if (s.active) {
    const f = s.facts || {};
    $("call-facts").textContent = tr("facts", {
      customer: f.customer_name || tr("customer_unknown"), company: f.company || "", call_id: s.call_id,
    });
  } else {
    $("call-facts").textContent = s.summary ? tr("after_call") : "";
  }
  setLevel(s.active || s.summary ? s.level : null);
  showPrompt(s.prompt || null);
  showAlert(s.active ? s.alert : null);
  setButtons(Boolean(s.active), s.actions || []);
  if (!s.active) showSupervisor("");
  renderTimeline();
}

function onEvent(message) {
  const ev = message.event;
  if (!state.call || message.call_id !== state.call.call_id) return;
  state.timeline.push(ev);
  if (ev.type === "prompt") {
    if (ev.alert) showAlert(ev); else showPrompt(ev);
  } else if (ev.type === "level") {
    setLevel(ev.level);
  } else if (ev.type === "language") {
    applyLanguage(ev.lang);
    showPrompt(state.prompt);  // the language's strings replaced the "all calm" line
  } else if (ev.type === "action") {
    const done = [...document.querySelectorAll("#actions button.done")].map((b) => b.dataset.action);
    setButtons(true, [...done, ev.action]);
  }
  renderTimeline();
}

// Push latency of each message (daemon publish -> panel), kept for QA checks and the e2e test.
window.callguardLatenciesMs = [];

function onMessage(raw) {
  const message = JSON.parse(raw.data);
  if (message.wall) window.callguardLatenciesMs.push(Date.now() - message.wall * 1000);
  if (message.kind === "state") renderState(message);
  else if (message.kind === "event") onEvent(message);
  else if (message.kind === "health") showBanners(message);
  else if (message.kind === "floor") onFloor(message);
}

async function takeBreak() {
  if (state.call) return;
  const response = await fetch("/api/v1/break", {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ minutes: BREAK_MINUTES }),
  });
  if (response.ok) showSupervisor(tr("break_recorded", { minutes: BREAK_MINUTES }), "break");
}

async function askForHelp() {
  if (!state.call) return;
  const response = await fetch(`/api/v1/calls/${encodeURIComponent(state.call.call_id)}/help`, {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({}),
  });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) showSupervisor(tr("unreached"), "unreached");
  else showSupervisor(tr(body.floor ? "help_sent" : "help_no_floor"), body.floor ? "sent" : "unreached");
}

async function act(action) {
  if (!state.call) return;
  const response = await fetch(`/api/v1/calls/${encodeURIComponent(state.call.call_id)}/actions`, {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ action }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    $("offline").hidden = false;
    $("offline").textContent = tr("action_failed", { error: body.error });
  }
}

async function authenticate() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    const response = await fetch("/api/v1/session", {
      method: "POST", headers: { Authorization: `Bearer ${token}` }, credentials: "same-origin",
    });
    // Keep the token out of the address bar, history and screenshots once the cookie is set.
    if (response.ok) history.replaceState(null, "", location.pathname + location.search);
  }
  const check = await fetch("/api/v1/calls/current", { credentials: "same-origin" });
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
      // EventSource gives up on an HTTP error (a token change): check why, then retry.
      if (!(await authenticate().catch(() => true))) { $("auth").hidden = false; return; }
      setTimeout(connect, 2000);
    }
  };
}

function tick() {
  $("clock").textContent = state.call ? formatTime(Date.now() / 1000 - state.startedWall) : "";
}

async function main() {
  applyLanguage("");
  for (const button of document.querySelectorAll("#actions button[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  $("help").addEventListener("click", askForHelp);
  $("break").addEventListener("click", takeBreak);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const key = e.key.toLowerCase();
    if (key === HELP_KEY && state.call) { e.preventDefault(); askForHelp(); return; }
    if (key === BREAK_KEY && !state.call) { e.preventDefault(); takeBreak(); return; }
    const action = KEYS[key];
    if (action && state.call) { e.preventDefault(); act(action); }
  });
  setInterval(tick, 1000);
  let ok = false;
  try { ok = await authenticate(); } catch { ok = true; /* daemon down: EventSource retries */ }
  if (!ok) { $("auth").hidden = false; return; }
  connect();
}

main();
