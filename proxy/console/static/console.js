// The operator console: reads GET /api/v1/resilience/overview every 2 s and the alerts
// WebSocket. Plain DOM, no framework, no build step. Every text that comes from the server
// is inserted with textContent / text nodes, never as HTML.

const TOKEN_KEY = "resilience-console-token";
const REFRESH_MS = 2000;
const WINDOW_S = 300;
const MAX_ALERTS = 200;
const SVG = "http://www.w3.org/2000/svg";

const STATES = {
  closed: { icon: "\u25CF", label: "closed" },
  open: { icon: "\u2716", label: "open" },
  half_open: { icon: "\u25D0", label: "half open" },
  forced_open: { icon: "\u2298", label: "forced open" },
  forced_closed: { icon: "\u229A", label: "forced closed" },
};
const SEVERITIES = {
  critical: { icon: "\u25B2", label: "CRITICAL" },
  warning: { icon: "\u25A0", label: "WARNING" },
  info: { icon: "\u25CF", label: "INFO" },
};
const ACTIONS = [
  { action: "reset", label: "Reset", ask: "Reset breaker {name} to closed?" },
  { action: "force-open", label: "Force open", ask: "Force breaker {name} OPEN? Every call to it will be refused.", danger: true },
  { action: "force-close", label: "Force close", ask: "Force breaker {name} CLOSED? It will admit every call, failing or not." },
];

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let refreshing = false;
const breakerCards = new Map();
const routeCards = new Map();

class AuthError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401 || response.status === 403) {
    const code = body && body.error ? body.error : String(response.status);
    throw new AuthError(response.status, code);
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

// -- token --------------------------------------------------------------------------------

function askToken(problem) {
  const dialog = $("login");
  const error = $("login-error");
  error.hidden = !problem;
  error.textContent = problem || "";
  $("token").value = "";
  if (!dialog.open) dialog.showModal();
  $("token").focus();
}

function forgetToken(problem) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("sign-out").hidden = true;
  alertsSocket.stop();
  askToken(problem);
}

function authProblem(error) {
  if (error.status === 403) {
    return "That token was refused (403 forbidden): it has no admin role. Enter an admin token.";
  }
  return `That token was refused (401 ${error.message}). Enter a valid admin token.`;
}

// -- refresh ------------------------------------------------------------------------------

async function refresh() {
  if (!token || refreshing) return;
  refreshing = true;
  try {
    const overview = await api("/api/v1/resilience/overview");
    $("sign-out").hidden = false;
    render(overview);
    $("refresh-status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    alertsSocket.start();
  } catch (error) {
    if (error instanceof AuthError) forgetToken(authProblem(error));
    else $("refresh-status").textContent = `Refresh failed: ${error.message}`;
  } finally {
    refreshing = false;
  }
}

function render(overview) {
  $("totals").textContent =
    `${overview.in_flight} request(s) in flight \u00B7 ` +
    `${overview.websocket_connections} WebSocket client(s)`;
  renderBreakers(overview.breakers || {});
  renderRoutes(overview.routes || {});
  renderPolicy(overview.policy || {});
}

// -- breakers -----------------------------------------------------------------------------

function percent(x) {
  return `${(100 * (x || 0)).toFixed(1)} %`;
}

function seconds(s) {
  if (s >= 120) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${s.toFixed(1)} s`;
}

function breakerCard(name) {
  const fields = {};
  const facts = el("dl");
  for (const [key, label] of [
    ["failure_rate", "Failure rate"],
    ["total_calls", "Calls"],
    ["total_failures", "Failures"],
    ["total_rejections", "Rejections"],
    ["consecutive_failures", "Consecutive failures"],
    ["half_open_in", "Half-open in"],
  ]) {
    fields[key] = el("dd");
    facts.append(el("dt", { text: label }), fields[key]);
  }
  const icon = el("span", { "aria-hidden": "true" });
  const label = el("span");
  const state = el("span", { class: "state" }, icon, label);
  const actions = el("div", { class: "actions" });
  for (const spec of ACTIONS) {
    const button = el("button", {
      type: "button",
      class: spec.danger ? "danger" : "",
      "data-action": spec.action,
      "data-breaker": name,
      text: spec.label,
    });
    button.addEventListener("click", () => breakerAction(name, spec));
    actions.append(button);
  }
  const root = el("article", { class: "card breaker", "data-breaker": name },
    el("h3", { text: name }), state, facts, actions);
  return { root, state, icon, label, fields };
}

function renderBreakers(breakers) {
  const box = $("breakers");
  for (const [name, stats] of Object.entries(breakers)) {
    let card = breakerCards.get(name);
    if (!card) {
      card = breakerCard(name);
      breakerCards.set(name, card);
      box.append(card.root);
    }
    const look = STATES[stats.state] || { icon: "?", label: stats.state };
    card.state.className = `state state-${stats.state}`;
    card.state.setAttribute("data-state", stats.state);
    card.icon.textContent = look.icon;
    card.label.textContent = look.label;
    card.fields.failure_rate.textContent = percent(stats.failure_rate);
    card.fields.total_calls.textContent = String(stats.total_calls);
    card.fields.total_failures.textContent = String(stats.total_failures);
    card.fields.total_rejections.textContent = String(stats.total_rejections);
    card.fields.consecutive_failures.textContent = String(stats.consecutive_failures);
    let due = "\u2014";
    if (stats.state === "open" && stats.retry_after_s !== null) due = seconds(stats.retry_after_s);
    else if (stats.state === "forced_open") due = "when an operator resets it";
    else if (stats.state === "half_open") due = "now (probing)";
    card.fields.half_open_in.textContent = due;
  }
  for (const [name, card] of breakerCards) {
    if (!(name in breakers)) {
      card.root.remove();
      breakerCards.delete(name);
    }
  }
}

async function breakerAction(name, spec) {
  if (!window.confirm(spec.ask.replace("{name}", name))) return;
  const path = `/api/v1/resilience/circuit-breakers/${encodeURIComponent(name)}/${spec.action}`;
  try {
    await api(path, { method: "POST" });
    $("refresh-status").textContent = `${spec.label}: ${name} done`;
  } catch (error) {
    if (error instanceof AuthError) {
      forgetToken(authProblem(error));
      return;
    }
    $("refresh-status").textContent = `${spec.label} of ${name} failed: ${error.message}`;
  }
  refresh();
}

// -- routes -------------------------------------------------------------------------------

function number(x, digits = 1, unit = "") {
  return x === null || x === undefined ? "\u2014" : `${x.toFixed(digits)}${unit}`;
}

function chartScale(top, digits, unit) {
  return top === null ? "no data yet" : `max ${number(top, digits, unit)}`;
}

function chart(title, legendA, legendB) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 300 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const head = el("div", { class: "chart-head" }, el("span", { text: title }));
  const value = el("span");
  head.append(value);
  const legend = el("div", { class: "chart-head" });
  legend.append(el("span", { class: "legend-a", text: `\u2500 ${legendA}` }));
  if (legendB) legend.append(el("span", { class: "legend-b", text: `\u2504 ${legendB}` }));
  const root = el("div", { class: "chart" }, head, svg, legend);
  return { root, svg, value, title };
}

function lines(svg, times, seriesList, now) {
  while (svg.firstChild) svg.firstChild.remove();
  let top = 0;
  let hasData = false;
  for (const values of seriesList) {
    for (const v of values || []) {
      if (v === null) continue;
      hasData = true;
      if (v > top) top = v;
    }
  }
  const scale = top > 0 ? top : 1;
  seriesList.forEach((values, index) => {
    let points = [];
    const flush = () => {
      if (points.length === 1) {
        // an interval between two gaps: a short dash, so it is seen
        const [x, y] = points[0].split(",").map(Number);
        points = [`${(x - 2).toFixed(1)},${y}`, `${(x + 2).toFixed(1)},${y}`];
      }
      if (points.length > 0) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("class", index === 0 ? "line-a" : "line-b");
        line.setAttribute("points", points.join(" "));
        svg.append(line);
      }
      points = [];
    };
    (values || []).forEach((v, i) => {
      if (v === null) {
        flush();
        return;
      }
      const x = 300 - ((now - times[i]) / WINDOW_S) * 300;
      const y = 38 - (v / scale) * 36;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    flush();
  });
  return hasData ? top : null;
}

function routeCard(name) {
  const figures = el("p", { class: "muted" });
  const rps = chart("requests/s", "rps", null);
  const errors = chart("errors", "4xx share", "5xx share");
  const latency = chart("latency (ms)", "p50", "p99");
  const root = el("article", { class: "card route", "data-route": name },
    el("h3", { text: name }), figures, rps.root, errors.root, latency.root);
  return { root, figures, rps, errors, latency };
}

function renderRoutes(routes) {
  const box = $("routes");
  const now = Date.now() / 1000;
  for (const [name, r] of Object.entries(routes)) {
    let card = routeCards.get(name);
    if (!card) {
      card = routeCard(name);
      routeCards.set(name, card);
      box.append(card.root);
    }
    card.figures.textContent =
      `${number(r.rps, 2)} req/s \u00B7 4xx ${percent(r.share_4xx)} \u00B7 ` +
      `5xx ${percent(r.share_5xx)} \u00B7 p50 ${number(r.p50_ms, 1, " ms")} \u00B7 ` +
      `p99 ${number(r.p99_ms, 1, " ms")}`;
    const s = r.series || { t: [], rps: [], share_4xx: [], share_5xx: [], p50_ms: [], p99_ms: [] };
    const rpsTop = lines(card.rps.svg, s.t, [s.rps], now);
    card.rps.value.textContent = chartScale(rpsTop, 2, "");
    card.rps.svg.setAttribute("aria-label", `requests per second of ${name}, last 5 minutes`);
    const toPercent = (list) => (list || []).map((v) => (v === null ? null : 100 * v));
    const errTop = lines(card.errors.svg, s.t, [toPercent(s.share_4xx), toPercent(s.share_5xx)], now);
    card.errors.value.textContent = chartScale(errTop, 1, " %");
    card.errors.svg.setAttribute("aria-label", `4xx and 5xx shares of ${name}, last 5 minutes`);
    const latTop = lines(card.latency.svg, s.t, [s.p50_ms, s.p99_ms], now);
    card.latency.value.textContent = chartScale(latTop, 1, " ms");
    card.latency.svg.setAttribute("aria-label", `p50 and p99 latency of ${name}, last 5 minutes`);
  }
  for (const [name, card] of routeCards) {
    if (!(name in routes)) {
      card.root.remove();
      routeCards.delete(name);
    }
  }
}

// -- policy -------------------------------------------------------------------------------

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : `${date.toLocaleString()} (${iso})`;
}

function renderPolicy(policy) {
  const facts = $("policy");
  const hash = policy.hash || "";
  const rows = [
    ["Hash", el("code", { title: hash, text: hash.slice(0, 16) + (hash.length > 16 ? "\u2026" : "") })],
    ["Loaded at", policy.loaded_at ? when(policy.loaded_at) : "\u2014"],
    ["Source", policy.source || "\u2014"],
  ];
  const last = policy.last_reload;
  const errors = $("reload-errors");
  if (!last) {
    rows.push(["Last reload", "none since the sidecar started"]);
    errors.hidden = true;
  } else {
    const ok = last.result === "success";
    const result = el("span", {
      class: ok ? "result-success" : "result-failure",
      text: ok ? "\u2714 success" : "\u2716 failure",
    });
    rows.push(["Last reload", el("span", {}, result, ` at ${when(last.at)}`)]);
    errors.hidden = ok || !last.errors || last.errors.length === 0;
    errors.textContent = (last.errors || []).join("\n");
  }
  facts.replaceChildren(...rows.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", {}, value)]));
}

// -- usage --------------------------------------------------------------------------------

async function lookUpUsage(event) {
  event.preventDefault();
  const user = $("usage-user").value.trim();
  const out = $("usage-result");
  if (!user || !token) return;
  try {
    const usage = await api(`/api/v1/resilience/rate-limit/user/${encodeURIComponent(user)}`);
    const rows = Object.entries(usage.endpoints || {}).sort((a, b) => b[1] - a[1]);
    const body = el("tbody");
    for (const [path, count] of rows) {
      body.append(el("tr", {}, el("td", { text: path }), el("td", { class: "num", text: String(count) })));
    }
    const table = el("table", {},
      el("caption", { class: "muted", text: `User ${usage.user_id}: ${usage.total_requests} request(s) in the current window` }),
      el("thead", {}, el("tr", {}, el("th", { text: "Endpoint" }), el("th", { class: "num", text: "Requests" }))),
      body);
    out.replaceChildren(rows.length ? table : el("p", { class: "muted", text: `No request from user ${usage.user_id} in the current window.` }));
  } catch (error) {
    if (error instanceof AuthError) forgetToken(authProblem(error));
    else out.replaceChildren(el("p", { class: "error", text: `Lookup failed: ${error.message}` }));
  }
}

// -- live alerts --------------------------------------------------------------------------

function addAlert(alert) {
  const list = $("alerts");
  if (list.querySelector(`[data-id="${Number(alert.id)}"]`)) return;
  const severity = SEVERITIES[alert.severity] || { icon: "?", label: String(alert.severity) };
  const item = el("li", { class: `alert alert-${alert.severity}`, "data-id": String(Number(alert.id)) },
    el("span", { class: "sev", text: `${severity.icon} ${severity.label}` }),
    el("span", { class: "title", text: String(alert.title ?? "") }),
    el("span", { class: "message", text: String(alert.message ?? "") }),
    el("div", { class: "meta", text: `${alert.alert_type} \u00B7 #${alert.id} \u00B7 ${alert.timestamp ? when(alert.timestamp) : ""}` }));
  list.prepend(item);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  $("alerts-empty").hidden = true;
}

const alertsSocket = {
  socket: null,
  lastId: null,
  attempt: 0,
  retryTimer: null,
  wanted: false,

  start() {
    this.wanted = true;
    if (this.socket || this.retryTimer) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws/alerts`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      socket.send(JSON.stringify({ type: "auth", token }));
      if (this.lastId !== null) socket.send(JSON.stringify({ type: "resume", last_event_id: this.lastId }));
      $("ws-status").textContent = "alerts: live";
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "alert") {
        if (this.lastId === null || message.id > this.lastId) this.lastId = message.id;
        addAlert(message);
      }
    });
    socket.addEventListener("close", () => {
      this.socket = null;
      if (!this.wanted) return;
      const delay = Math.min(30, 2 ** this.attempt) * (0.5 + Math.random());
      this.attempt += 1;
      $("ws-status").textContent = `alerts: reconnecting in ${delay.toFixed(0)} s`;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (this.wanted) this.start();
      }, delay * 1000);
    });
  },

  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    $("ws-status").textContent = "alerts: offline";
  },
};

// -- start --------------------------------------------------------------------------------

function main() {
  $("login-form").addEventListener("submit", () => {
    const value = $("token").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
    refresh();
  });
  $("login").addEventListener("cancel", (event) => event.preventDefault());
  $("sign-out").addEventListener("click", () => forgetToken(""));
  $("usage-form").addEventListener("submit", lookUpUsage);
  if (token) refresh();
  else askToken("");
  setInterval(refresh, REFRESH_MS);
}

main();
