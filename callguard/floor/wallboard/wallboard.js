// callguard floor wallboard: the supervisors' view of every live call, threat alerts (flash and sound until
// acknowledged), agents' help requests, incident history and daily figures. Plain JS, no build, nothing
// loaded from elsewhere. The SSE stream /api/v1/floor/stream opens with the whole state (`event: state`),
// then sends changes (call, alert, help, ack); every POST carries the X-CSRF-Token that the login answer
// (or /api/v1/me, after a reload) gives. The API is callguard/floor/app.py's.
"use strict";

const LEVELS = ["calm", "tense", "abusive", "transfer", "release"];
const LANG_KEY = "callguard.floor.lang";
const BEEP_EVERY_MS = 1500;
// The stream's own retry waits 3 s and stops on an HTTP error: the page retries itself, sooner, backing off.
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 15000;
const HISTORY_REFRESH_MS = 1000;
const TICK_MS = 250; // durations turn over close to the second, not up to a second late
const ACKED_SHOWN = 20; // acknowledged alerts and answered help requests kept in view

const app = {
  lang: "en", csrf: "", user: null, calls: new Map(), alerts: new Map(), help: new Map(),
  selectedCallId: "", detail: null, detailTimer: 0, historyTimer: 0, historyQuery: new URLSearchParams(),
  source: null, reconnectTimer: 0, reconnectMs: 0,
  audio: null, beepTimer: 0, announced: new Set(), teams: new Set(), agents: new Set(),
};
const $ = (id) => document.getElementById(id);

class SessionEnded extends Error {}
class RequestFailed extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// ---- language ----------------------------------------------------------------------------------------

function pickLanguage() {
  const wanted = new URLSearchParams(location.search).get("lang") || localStorage.getItem(LANG_KEY)
    || (navigator.language || "en").slice(0, 2);
  return STRINGS[wanted] ? wanted : "en";
}

function tr(key, values = {}) {
  const text = STRINGS[app.lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function applyLanguage(lang) {
  app.lang = lang;
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = tr(el.dataset.i18n);
  const other = lang === "fr" ? "en" : "fr";
  $("lang-toggle").textContent = other.toUpperCase();
  $("lang-toggle").lang = other;
  document.title = tr("title");
  showWho();
  renderAll();
}

function toggleLanguage() {
  const lang = app.lang === "fr" ? "en" : "fr";
  localStorage.setItem(LANG_KEY, lang);
  const url = new URL(location.href);
  url.searchParams.set("lang", lang);
  history.replaceState(null, "", url);
  applyLanguage(lang);
}

// The browser's own locale when it speaks the page's language (en-GB: 24-hour clock), else the language.
function locale() {
  const browser = navigator.language || "";
  return browser.slice(0, 2) === app.lang ? browser : app.lang;
}

function clockTime(iso) {
  const when = iso ? new Date(iso) : null;
  if (!when || Number.isNaN(when.getTime())) return "";
  return when.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, "0");
  return `${h ? `${h}:` : ""}${mm}:${String(s % 60).padStart(2, "0")}`;
}

function levelName(level) { return LEVELS.includes(level) ? tr(level) : level || ""; }
function categoryName(category) { return category ? tr(`cat_${category}`) : ""; }

// ---- requests ----------------------------------------------------------------------------------------

async function api(path, { method = "GET", body = null } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = app.csrf;
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === null ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { sessionEnded(); throw new SessionEnded("session ended"); }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new RequestFailed(response.status, data.error || response.statusText);
  return data;
}

function showFailure(message) {
  $("failure").textContent = message;
  $("failure").hidden = !message;
}

// ---- session -----------------------------------------------------------------------------------------

function showView(view) {
  document.body.dataset.view = view;
  $("login-view").hidden = view !== "login";
  $("board-view").hidden = view !== "board";
  $("logout").hidden = view !== "board";
  $("who").hidden = view !== "board";
}

function showWho() {
  const user = app.user;
  if (!user) { $("who").textContent = ""; return; }
  const scope = user.role === "admin" ? tr("scope_admin") : tr("scope_team", { team: user.team || "" });
  $("who").textContent = tr("who", { name: user.name || user.login || "", scope });
}

function rememberSession(answer) {
  app.csrf = answer.csrf_token || app.csrf;
  if (answer.user) app.user = answer.user;
  showWho();
}

async function login(event) {
  event.preventDefault();
  unlockAudio(); // the login click is the user gesture the browser wants before it lets a page make sound
  const login = $("login-name").value.trim();
  const password = $("login-password").value;
  const error = $("login-error");
  if (!login || !password) { error.textContent = tr("login_missing"); error.hidden = false; return; }
  $("login-submit").disabled = true;
  try {
    let response;
    try {
      response = await fetch("/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ login, password }),
      });
    } catch (failure) { // the floor out of reach
      error.textContent = tr("login_failed", { error: failure.message });
      error.hidden = false;
      return;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      error.textContent = tr("login_failed", { error: answer.error || response.statusText });
      error.hidden = false;
      return;
    }
    error.hidden = true;
    $("login-password").value = "";
    $("expired").hidden = true;
    rememberSession(answer);
    await startBoard();
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout() {
  try { await api("/logout", { method: "POST" }); } catch { /* already ended: the login form it is */ }
  stopBoard();
  showView("login");
}

function sessionEnded() {
  if (document.body.dataset.view !== "board") return;
  stopBoard();
  $("expired").hidden = false;
  showView("login");
  $("login-name").focus();
}

// ---- live state ----------------------------------------------------------------------------------------

// A call's key is the floor's row id: two workstations may use the same call_id.
function callKey(call) { return String(call.id); }

function applyCall(call) {
  const key = callKey(call);
  if (call.ended_at) {
    app.calls.delete(key);
    if (app.selectedCallId === key) { app.selectedCallId = ""; app.detail = null; }
    return;
  }
  // Durations tick from the floor's figure plus the time since it was received: no clock skew.
  app.calls.set(key, { ...call, receivedAt: performance.now() });
  if (call.team) app.teams.add(call.team);
  if (call.agent) app.agents.add(call.agent);
  if (app.selectedCallId === key) scheduleDetail();
}

// A threat alert or help request is sent ahead of its call's start, so it may come without the agent's
// name: the live call gives it once it is known.
function callerOf(alert) {
  let call = null;
  if (!alert.agent) {
    call = [...app.calls.values()].find((c) => c.workstation === alert.workstation && c.call_id === alert.call_id);
  }
  return { agent: alert.agent || (call && call.agent) || "", queue: alert.queue || (call && call.queue) || "" };
}

function isAnswered(alert) { return Boolean(alert.acknowledged_at); }

function applyAlert(alert) {
  const key = String(alert.id);
  app.alerts.set(key, alert);
  if (!isAnswered(alert) && !app.announced.has(`alert:${key}`)) {
    app.announced.add(`alert:${key}`);
    announce(tr("announce_alert", callerOf(alert)));
  }
}

function applyHelp(help) {
  const key = String(help.id);
  app.help.set(key, help);
  if (!isAnswered(help) && !app.announced.has(`help:${key}`)) {
    app.announced.add(`help:${key}`);
    announce(tr("announce_help", callerOf(help)));
    chime();
  }
}

// An acknowledgement or an "on my way" comes as the alert or help request it answered.
function applyAnswer(alert) {
  if (alert.kind === "help") applyHelp(alert);
  else applyAlert(alert);
}

function applyState(state) {
  if (state.user) app.user = state.user;
  app.calls.clear();
  app.alerts.clear();
  app.help.clear();
  for (const call of state.calls || []) applyCall(call);
  for (const alert of state.alerts || []) applyAlert(alert);
  for (const help of state.help || []) applyHelp(help);
  showWho();
}

const APPLY = { state: applyState, call: applyCall, alert: applyAlert, help: applyHelp, ack: applyAnswer };

function connectStream() {
  clearTimeout(app.reconnectTimer);
  const source = new EventSource("/api/v1/floor/stream");
  app.source = source;
  for (const [kind, apply] of Object.entries(APPLY)) {
    source.addEventListener(kind, (raw) => {
      apply(JSON.parse(raw.data));
      renderAll();
      if (kind === "alert" || kind === "help" || kind === "ack") scheduleHistory();
      if (kind === "state") {
        document.body.dataset.connected = "true";
        $("offline").hidden = true;
        app.reconnectMs = 0;
      }
    });
  }
  source.addEventListener("expired", sessionEnded);
  source.onerror = () => {
    if (app.source !== source) return;
    source.close();
    document.body.dataset.connected = "false";
    $("offline").hidden = false;
    // With jitter, so that a room of wallboards does not come back at the same instant.
    app.reconnectMs = Math.min(RECONNECT_MAX_MS, app.reconnectMs ? app.reconnectMs * 2 : RECONNECT_FIRST_MS);
    const delay = app.reconnectMs * (0.75 + Math.random() * 0.5);
    app.reconnectTimer = setTimeout(() => reconnect(source), delay);
  };
}

// Asks who is logged in before opening the stream again: an ended session goes back to the login form.
async function reconnect(source) {
  if (app.source !== source) return;
  try {
    await api("/api/v1/me");
  } catch (error) {
    if (error instanceof SessionEnded) return;
    source.onerror(); // the floor is still out of reach: wait longer
    return;
  }
  if (app.source === source) connectStream();
}

async function startBoard() {
  showView("board");
  showFailure("");
  connectStream();
  app.historyQuery = filterQuery();
  await loadHistory();
}

function stopBoard() {
  if (app.source) app.source.close();
  app.source = null;
  clearTimeout(app.reconnectTimer);
  clearTimeout(app.detailTimer);
  clearTimeout(app.historyTimer);
  app.calls.clear();
  app.alerts.clear();
  app.help.clear();
  app.selectedCallId = "";
  app.detail = null;
  app.user = null;
  app.csrf = "";
  document.body.dataset.connected = "false";
  $("offline").hidden = true;
  updateAlarm();
}

// ---- rendering ---------------------------------------------------------------------------------------

function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

// Keyed lists: a card keeps its element (and the keyboard focus on its button) across updates.
function renderKeyed(container, items, keyOf, build, update) {
  const existing = new Map([...container.children].map((child) => [child.dataset.key, child]));
  const wanted = items.map((item) => {
    const key = keyOf(item);
    const node = existing.get(key) || build(item);
    node.dataset.key = key;
    update(node, item);
    existing.delete(key);
    return node;
  });
  for (const stale of existing.values()) stale.remove();
  const inOrder = wanted.every((node, i) => container.children[i] === node);
  if (!inOrder) wanted.forEach((node) => container.append(node));
}

function newestFirst(a, b) { return String(b.at || "").localeCompare(String(a.at || "")); }

// Unanswered first, newest first; a few answered ones stay in view with who answered and when.
function openFirst(values) {
  const items = [...values];
  const open = items.filter((a) => !isAnswered(a)).sort(newestFirst);
  const done = items.filter(isAnswered).sort(newestFirst).slice(0, ACKED_SHOWN);
  return [...open, ...done];
}

function buildCard(kind) {
  const card = el("li", `card ${kind}`);
  card.dataset.shownAt = String(Date.now()); // when it reached this page: the latency tests read it
  card.append(el("h3", "card-title"), el("p", "card-facts"), el("ul", "words"), el("p", "card-message"));
  const button = el("button", "card-action");
  button.type = "button";
  card.append(button, el("p", "card-done"));
  return card;
}

function fillWords(list, words) {
  list.replaceChildren(...(words || []).map((word) => el("li", "", word)));
  list.hidden = !(words && words.length);
}

function updateAlertCard(card, alert) {
  const done = isAnswered(alert);
  card.classList.toggle("unacked", !done);
  card.dataset.state = done ? "acknowledged" : "open";
  const { agent, queue } = callerOf(alert);
  card.querySelector(".card-title").textContent = agent
    ? tr("alert_title", { agent }) : alert.title || tr("alert_default_title");
  card.querySelector(".card-facts").textContent = [
    alert.title, tr("alert_facts", { queue, team: alert.team || "", time: clockTime(alert.at) }),
  ].filter(Boolean).join(" — ");
  fillWords(card.querySelector(".words"), alert.words);
  card.querySelector(".card-message").hidden = true;
  const button = card.querySelector(".card-action");
  button.hidden = done;
  button.textContent = tr("acknowledge");
  button.onclick = () => acknowledge(alert.id, button);
  const note = card.querySelector(".card-done");
  note.hidden = !done;
  note.textContent = done ? tr("acknowledged_by", { by: alert.acknowledged_by || "", time: clockTime(alert.acknowledged_at) }) : "";
}

function updateHelpCard(card, help) {
  const done = isAnswered(help);
  card.classList.toggle("unanswered", !done);
  card.dataset.state = done ? "on_my_way" : "open";
  const { agent, queue } = callerOf(help);
  card.querySelector(".card-title").textContent = tr("help_title", { agent });
  card.querySelector(".card-facts").textContent = tr("help_facts", {
    queue, team: help.team || "", time: clockTime(help.at),
  });
  fillWords(card.querySelector(".words"), []);
  const message = card.querySelector(".card-message");
  message.textContent = help.message || "";
  message.hidden = !help.message;
  const button = card.querySelector(".card-action");
  button.hidden = done;
  button.textContent = tr("on_my_way");
  button.onclick = () => onMyWay(help.id, button);
  const note = card.querySelector(".card-done");
  note.hidden = !done;
  note.textContent = done ? tr("on_my_way_by", { by: help.acknowledged_by || "", time: clockTime(help.acknowledged_at) }) : "";
}

function renderAlerts() {
  const alerts = openFirst(app.alerts.values());
  renderKeyed($("alerts"), alerts, (a) => String(a.id), () => buildCard("alert"), updateAlertCard);
  $("alerts-empty").hidden = alerts.length > 0;
  updateAlarm();
}

function renderHelp() {
  const help = openFirst(app.help.values());
  renderKeyed($("help"), help, (h) => String(h.id), () => buildCard("help"), updateHelpCard);
  $("help-empty").hidden = help.length > 0;
}

function callDuration(call) {
  return (call.duration || 0) + (performance.now() - call.receivedAt) / 1000;
}

function buildCallRow() {
  const row = el("tr", "call");
  for (const name of ["agent", "queue", "team", "level", "duration", "details"]) {
    const cell = el("td", `c-${name}`);
    cell.dataset.label = "";
    row.append(cell);
  }
  const badge = el("span", "level");
  row.querySelector(".c-level").append(badge);
  const button = el("button", "quiet details");
  button.type = "button";
  row.querySelector(".c-details").append(button);
  return row;
}

function updateCallRow(row, call) {
  const key = callKey(call);
  row.dataset.level = call.level || "calm";
  row.dataset.callId = key;
  row.classList.toggle("selected", app.selectedCallId === key);
  const labels = { agent: "col_agent", queue: "col_queue", team: "col_team", level: "col_level", duration: "col_duration" };
  for (const [name, label] of Object.entries(labels)) row.querySelector(`.c-${name}`).dataset.label = tr(label);
  row.querySelector(".c-agent").textContent = call.agent || "";
  row.querySelector(".c-queue").textContent = call.queue || "";
  row.querySelector(".c-team").textContent = call.team || "";
  const badge = row.querySelector(".level");
  badge.dataset.level = call.level || "calm";
  badge.textContent = levelName(call.level || "calm");
  row.querySelector(".c-duration").textContent = formatDuration(callDuration(call));
  const button = row.querySelector(".details");
  button.textContent = tr("details");
  button.setAttribute("aria-pressed", String(app.selectedCallId === key));
  button.setAttribute("aria-label", `${tr("details")}: ${call.agent || key}`);
  button.onclick = () => selectCall(key);
}

// The most serious calls first, then the longest.
function callOrder(a, b) {
  const rank = LEVELS.indexOf(b.level) - LEVELS.indexOf(a.level);
  return rank || callDuration(b) - callDuration(a);
}

function renderCalls() {
  const calls = [...app.calls.values()].sort(callOrder);
  renderKeyed($("calls-body"), calls, callKey, buildCallRow, updateCallRow);
  $("calls").hidden = calls.length === 0;
  $("calls-empty").hidden = calls.length > 0;
  $("calls-count").textContent = calls.length ? `(${calls.length})` : "";
}

function selectCall(key) {
  app.selectedCallId = app.selectedCallId === key ? "" : key;
  app.detail = null;
  renderCalls();
  renderDetail();
  if (app.selectedCallId) loadDetail();
}

// A call's words and prompts are in its events (GET /api/v1/calls/{id}); read again when the call changes.
function scheduleDetail() {
  clearTimeout(app.detailTimer);
  app.detailTimer = setTimeout(loadDetail, 300);
}

async function loadDetail() {
  const key = app.selectedCallId;
  if (!key) return;
  try {
    const detail = await api(`/api/v1/calls/${encodeURIComponent(key)}`);
    if (app.selectedCallId === key) { app.detail = detail; renderDetail(); }
  } catch (error) {
    if (!(error instanceof SessionEnded)) showFailure(tr("request_failed", { status: error.status || "", error: error.message }));
  }
}

function flaggedLine(event) {
  const li = el("li");
  li.dataset.kind = event.kind;
  const category = event.kind === "threat_alert" ? "threat" : event.data.category;
  li.append(el("time", "", clockTime(event.at)), el("span", "category", categoryName(category)));
  li.append(el("span", "said", (event.data.words || []).join(", ")));
  if (event.data.text) li.append(el("q", "utterance", event.data.text));
  return li;
}

function promptLine(event) {
  const li = el("li");
  if (event.kind === "threat_alert" || event.data.alert) li.dataset.alert = "true";
  const level = event.data.level ? ` (${levelName(event.data.level)})` : "";
  li.append(el("time", "", clockTime(event.at)),
    document.createTextNode(`${event.data.title || event.data.prompt_id || ""}${level}`));
  return li;
}

function renderDetail() {
  const call = app.calls.get(app.selectedCallId);
  $("detail").hidden = !call;
  $("detail-empty").hidden = Boolean(call);
  if (!call) return;
  $("detail-facts").textContent = tr("call_facts", {
    agent: call.agent || "", queue: call.queue || "", team: call.team || "", call_id: call.call_id,
  });
  const events = app.detail ? app.detail.events : [];
  const flagged = events.filter((e) => (e.kind === "abuse" || e.kind === "threat_alert")
    && ((e.data.words || []).length || e.data.text));
  $("detail-words").replaceChildren(...flagged.map(flaggedLine));
  $("detail-words-none").hidden = flagged.length > 0;
  const prompts = events.filter((e) => e.kind === "prompt" || e.kind === "threat_alert");
  $("detail-prompts").replaceChildren(...prompts.map(promptLine));
  $("detail-prompts-none").hidden = prompts.length > 0;
}

function renderAll() {
  if (document.body.dataset.view !== "board") return;
  renderAlerts();
  renderHelp();
  renderCalls();
  renderDetail();
  renderTeamOptions();
}

function tick() {
  $("clock").textContent = new Date().toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
  for (const row of $("calls-body").children) {
    const call = app.calls.get(row.dataset.key);
    if (call) row.querySelector(".c-duration").textContent = formatDuration(callDuration(call));
  }
}

function announce(message) {
  // Cleared first so that the same words twice are read twice.
  $("announce").textContent = "";
  setTimeout(() => { $("announce").textContent = message; }, 50);
}

// ---- actions -----------------------------------------------------------------------------------------

async function postAction(path, button, failureKey) {
  button.disabled = true;
  try {
    const answer = await api(path, { method: "POST" });
    showFailure("");
    return answer;
  } catch (error) {
    if (!(error instanceof SessionEnded)) showFailure(tr(failureKey, { error: error.message }));
    return null;
  } finally {
    button.disabled = false;
  }
}

async function acknowledge(id, button) {
  const answer = await postAction(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, button, "ack_failed");
  if (answer) { applyAnswer(answer.alert); renderAll(); }
}

async function onMyWay(id, button) {
  const answer = await postAction(`/api/v1/help/${encodeURIComponent(id)}/on-my-way`, button, "on_my_way_failed");
  if (answer) { applyAnswer(answer.alert); renderAll(); }
}

// ---- sound -------------------------------------------------------------------------------------------

function unlockAudio() {
  if (!app.audio) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    app.audio = new Context();
  }
  if (app.audio.state === "suspended") app.audio.resume().then(updateAlarm, updateAlarm);
  updateAlarm();
}

// A two-tone beep made on the spot (no sound file to fetch).
function beep(frequencies = [880, 660], seconds = 0.18) {
  const ctx = app.audio;
  if (!ctx || ctx.state !== "running") return;
  frequencies.forEach((frequency, i) => {
    const start = ctx.currentTime + i * seconds;
    const oscillator = ctx.createOscillator();
    const gain = ctx.createGain();
    oscillator.type = "square";
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.2, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + seconds);
    oscillator.connect(gain).connect(ctx.destination);
    oscillator.start(start);
    oscillator.stop(start + seconds);
  });
  document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
}

function chime() { beep([660, 990], 0.12); }

function updateAlarm() {
  const ringing = [...app.alerts.values()].some((a) => !isAnswered(a));
  document.body.dataset.alarm = ringing ? "on" : "off";
  const blocked = !app.audio || app.audio.state !== "running";
  document.body.dataset.sound = blocked ? "blocked" : "on";
  $("sound-enable").hidden = !(blocked && document.body.dataset.view === "board");
  $("sound-blocked").hidden = !(blocked && ringing);
  if (ringing && !app.beepTimer) {
    beep();
    app.beepTimer = setInterval(beep, BEEP_EVERY_MS);
  } else if (!ringing && app.beepTimer) {
    clearInterval(app.beepTimer);
    app.beepTimer = 0;
  }
}

// ---- history and figures -----------------------------------------------------------------------------

function filterQuery() {
  const query = new URLSearchParams();
  for (const name of ["team", "agent", "day", "category"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value) query.set(name, value);
  }
  return query;
}

function renderTeamOptions() {
  const select = $("filter-team");
  const isAdmin = app.user && app.user.role === "admin";
  const teams = isAdmin ? [...app.teams].sort() : [app.user && app.user.team].filter(Boolean);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") !== teams.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(select.options[0], ...teams.map((team) => new Option(team, team)));
    select.value = teams.includes(chosen) ? chosen : "";
  }
  const agents = [...app.agents].sort();
  if ($("agents-list").options.length !== agents.length) {
    $("agents-list").replaceChildren(...agents.map((agent) => new Option(agent)));
  }
}

function dateTime(iso) {
  const at = iso ? new Date(iso) : null;
  return at && !Number.isNaN(at.getTime()) ? at.toLocaleString(locale(), { dateStyle: "short", timeStyle: "medium" }) : "";
}

function incidentRow(incident) {
  const row = el("tr", "incident");
  row.dataset.category = incident.category || "";
  const answered = incident.answered_by
    ? tr("answered", { by: incident.answered_by, time: clockTime(incident.answered_at) }) : "";
  const cells = [dateTime(incident.at), incident.team, incident.agent, incident.queue,
    categoryName(incident.category), incident.severity == null ? "" : String(incident.severity),
    (incident.words || []).join(", "), [incident.detail, answered].filter(Boolean).join(" — ")];
  const labels = ["col_time", "col_team", "col_agent", "col_queue", "col_category", "col_severity",
    "flagged_words", "col_detail"];
  cells.forEach((text, i) => {
    const cell = el("td", "", text || "");
    cell.dataset.label = tr(labels[i]);
    row.append(cell);
  });
  return row;
}

const FIGURES = ["calls", "abusive_calls", "threats", "transfers", "releases", "help_requests", "breaks"];

function figuresRow(figure) {
  const row = el("tr", "figure");
  row.dataset.team = figure.team || "";
  const team = el("th", "", figure.team || "");
  team.scope = "row";
  row.append(team);
  for (const name of FIGURES) {
    const cell = el("td", "num", String(figure[name] ?? 0));
    cell.dataset.figure = name;
    row.append(cell);
  }
  return row;
}

// New and answered alerts are incidents too: the history and figures follow, a moment later, in one read.
function scheduleHistory() {
  clearTimeout(app.historyTimer);
  app.historyTimer = setTimeout(loadHistory, HISTORY_REFRESH_MS);
}

// On "Show", the form's filters; on a refresh, the filters last shown (not what is being typed).
async function loadHistory(event) {
  if (event) {
    event.preventDefault();
    app.historyQuery = filterQuery();
  }
  const query = app.historyQuery;
  const csv = new URLSearchParams(query);
  csv.set("format", "csv");
  $("csv-link").href = `/api/v1/incidents?${csv}`;
  const day = query.get("day");
  try {
    const [incidents, figures] = await Promise.all([
      api(`/api/v1/incidents?${query}`),
      // no day chosen: the floor's today, in the site's time zone
      api(`/api/v1/figures${day ? `?${new URLSearchParams({ day })}` : ""}`),
    ]);
    const rows = incidents.incidents;
    for (const incident of rows) {
      if (incident.team) app.teams.add(incident.team);
      if (incident.agent) app.agents.add(incident.agent);
    }
    $("incidents-body").replaceChildren(...rows.map(incidentRow));
    $("incidents").hidden = rows.length === 0;
    $("incidents-empty").hidden = rows.length > 0;
    $("incidents").dataset.query = query.toString();
    for (const figure of figures.teams) app.teams.add(figure.team);
    $("figures-body").replaceChildren(...figures.teams.map(figuresRow));
    $("figures").hidden = figures.teams.length === 0;
    $("figures-empty").hidden = figures.teams.length > 0;
    $("figures-day").textContent = `(${figures.day})`;
    renderTeamOptions();
    showFailure("");
  } catch (error) {
    if (!(error instanceof SessionEnded)) showFailure(tr("incidents_failed", { error: error.message }));
  }
}

// ---- start -------------------------------------------------------------------------------------------

async function main() {
  applyLanguage(pickLanguage());
  $("lang-toggle").addEventListener("click", toggleLanguage);
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("sound-enable").addEventListener("click", unlockAudio);
  $("filters").addEventListener("submit", loadHistory);
  // Any click or key is a gesture that lets the alarm sound (browsers block sound until one).
  document.addEventListener("pointerdown", unlockAudio);
  document.addEventListener("keydown", unlockAudio);
  setInterval(tick, TICK_MS);
  tick();
  showView("loading");
  // A reload keeps the session cookie: /api/v1/me gives back who is logged in and the CSRF token.
  try {
    rememberSession(await api("/api/v1/me"));
  } catch {
    showView("login");
    $("login-name").focus();
    return;
  }
  await startBoard();
}

main();
