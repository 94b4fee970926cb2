// substrate's dashboard. Plain JavaScript, no framework: every POLL_MS it
// reads /substrate/status (health, alarms, cache, etcd, the broker
// cluster) and, when the
// broker runs, RabbitMQ's /api/overview, /api/queues and /api/connections,
// then redraws. Names that come from clients (queues, connection names) are
// only ever set as text, never as HTML.
"use strict";

// ?refresh=N polls every N seconds (1 to 60; default 5).
const POLL_MS = (() => {
  const n = Number(new URLSearchParams(location.search).get("refresh"));
  return n >= 1 && n <= 60 ? Math.round(n * 1000) : 5000;
})();
const HISTORY_MS = 10 * 60 * 1000; // what the charts show
const MAX_QUEUE_ROWS = 100;
const MAX_QUEUE_HISTORY = 300; // queues whose history is kept
const AUTH_KEY = "substrate.auth";
const HIST_KEY = "substrate.history";

const $ = (id) => document.getElementById(id);

// ---- small DOM helper ----
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "title") e.title = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else e.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    e.append(kid instanceof Node ? kid : String(kid));
  }
  return e;
}

// ---- formatting ----
function fmtInt(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  return Math.round(n).toLocaleString("en-US");
}
function fmtRate(r) {
  if (r === undefined || r === null || Number.isNaN(r)) return "–";
  if (r === 0) return "0";
  if (r < 10) return r.toFixed(1);
  return fmtInt(r);
}
function fmtBytes(b) {
  if (b === undefined || b === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i === 0 ? b.toFixed(0) : b < 10 ? b.toFixed(2) : b < 100 ? b.toFixed(1) : b.toFixed(0)) + " " + units[i];
}
function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  if (m > 0) return m + "m " + (s % 60) + "s";
  return s + "s";
}
function fmtPct(x) { return x === null || x === undefined ? "–" : (x * 100).toFixed(x >= 0.9995 || x === 0 ? 0 : 1) + "%"; }

// ---- credentials (the login form; basic auth on every request) ----
let auth = sessionStorage.getItem(AUTH_KEY);

class HTTPError extends Error {
  constructor(status, reason) { super(reason || "HTTP " + status); this.status = status; }
}

async function getJSON(path) {
  const headers = { "Accept": "application/json", "X-Requested-With": "XMLHttpRequest" };
  if (auth) headers["Authorization"] = "Basic " + auth;
  const resp = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (!resp.ok) {
    let reason = "";
    try { const j = await resp.json(); reason = j.reason || j.error || ""; } catch (e) { /* not JSON */ }
    throw new HTTPError(resp.status, reason);
  }
  return resp.json();
}

function showLogin(message) {
  $("dash").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("updated").textContent = "";
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("username").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const u = $("username").value, p = $("password").value;
  auth = btoa(unescape(encodeURIComponent(u + ":" + p)));
  sessionStorage.setItem(AUTH_KEY, auth);
  $("password").value = "";
  schedule(0);
});
$("logout").addEventListener("click", () => {
  auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  showLogin("");
});

// ---- history (sampled by this page, kept in sessionStorage) ----
let history = [];
try { history = JSON.parse(sessionStorage.getItem(HIST_KEY) || "[]"); } catch (e) { history = []; }

function saveHistory() {
  try { sessionStorage.setItem(HIST_KEY, JSON.stringify(history)); } catch (e) { /* full: keep it in memory */ }
}

// queueKey names a queue across vhosts.
const queueKey = (q) => q.vhost + "\u0000" + q.name;

// rateOf prefers the API's own rate (message_stats.X_details.rate), so the
// page shows what rabbitmqadmin shows; without it, the counter's change
// since the previous sample.
function rateOf(ms, key, prevCount, dt) {
  if (!ms) return 0;
  const d = ms[key + "_details"];
  if (d && typeof d.rate === "number") return d.rate;
  if (typeof ms[key] === "number" && prevCount !== undefined && dt > 0) return Math.max(0, (ms[key] - prevCount) / dt);
  return 0;
}

function recordSample(now, overview, queues) {
  const prev = history.length ? history[history.length - 1] : null;
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const ms = (overview && overview.message_stats) || {};
  const qt = (overview && overview.queue_totals) || {};
  const s = {
    t: now,
    ready: qt.messages_ready || 0,
    unacked: qt.messages_unacknowledged || 0,
    pubN: ms.publish, delN: ms.deliver_get,
    pub: rateOf(ms, "publish", prev && prev.pubN, dt),
    del: rateOf(ms, "deliver_get", prev && prev.delN, dt),
    q: {},
  };
  const ranked = queues.slice().sort((a, b) => (b.messages || 0) - (a.messages || 0)).slice(0, MAX_QUEUE_HISTORY);
  for (const q of ranked) {
    const k = queueKey(q);
    const m = q.message_stats || {};
    const p = prev && prev.q[k];
    s.q[k] = [q.messages || 0, rateOf(m, "publish", p && p[3], dt), rateOf(m, "deliver_get", p && p[4], dt), m.publish, m.deliver_get];
  }
  history.push(s);
  while (history.length && history[0].t < now - HISTORY_MS) history.shift();
  return s;
}

// ---- charts on canvas ----
function prepCanvas(c, cssHeight) {
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth || 300, h = cssHeight || c.clientHeight || 150;
  if (c.width !== Math.round(w * ratio) || c.height !== Math.round(h * ratio)) {
    c.width = Math.round(w * ratio);
    c.height = Math.round(h * ratio);
    c.style.height = h + "px";
  }
  const g = c.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  return { g, w, h };
}

// axis picks a step of 1, 2 or 5 times a power of ten that splits max
// into at most 5 intervals, and the top gridline at a multiple of it.
function axis(max, integer) {
  if (!(max > 0)) return { top: integer ? 4 : 1, step: integer ? 1 : 0.25 };
  let step = Math.pow(10, Math.floor(Math.log10(max / 4)));
  for (const m of [1, 2, 5, 10]) { if ((m * step) * 5 >= max) { step *= m; break; } }
  if (integer) step = Math.max(1, Math.round(step));
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

// span is the time the charts cover: the history kept, at least a minute,
// at most HISTORY_MS, so a page opened a moment ago is not a sliver.
function span(now) {
  return history.length ? Math.min(HISTORY_MS, Math.max(60000, now - history[0].t)) : 60000;
}

// timeTicks are the x labels for a span: every 15 s up to 2 min, every
// 30 s up to 4, then every 1 or 2 minutes.
function timeTicks(ms) {
  const stepS = ms <= 120000 ? 15 : ms <= 240000 ? 30 : ms <= 300000 ? 60 : 120;
  const out = [];
  for (let s = 0; s * 1000 <= ms + 1; s += stepS) out.push({ ago: s * 1000, label: s === 0 ? "now" : s % 60 === 0 ? "-" + s / 60 + "m" : "-" + (s >= 60 ? Math.floor(s / 60) + "m" + (s % 60) + "s" : s + "s") });
  return out;
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// chart draws series ({values, color, fill}) over the history's time span,
// with a y axis; stacked fills are drawn in order.
function chart(canvas, series, opts) {
  const { g, w, h } = prepCanvas(canvas, 150);
  const padL = 44, padR = 8, padT = 8, padB = 20;
  const now = Date.now(), width = span(now), t0 = now - width;
  const ts = history.map((s) => s.t);
  let peak = 0;
  for (const s of series) for (const v of s.values) peak = Math.max(peak, v);
  const ax = axis(opts.integer ? Math.max(peak * 1.05, 4) : peak * 1.05, opts.integer);
  const max = ax.top;
  const x = (t) => padL + ((t - t0) / width) * (w - padL - padR);
  const y = (v) => padT + (1 - v / max) * (h - padT - padB);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6a7686";
  g.strokeStyle = "#e6eaef";
  g.lineWidth = 1;
  for (let v = 0; v <= max + 1e-9; v += ax.step) {
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
    g.textAlign = "right"; g.textBaseline = "middle";
    g.fillText(opts.format(v), padL - 6, yy);
  }
  g.textAlign = "center"; g.textBaseline = "top";
  for (const tk of timeTicks(width)) {
    const xx = x(now - tk.ago);
    g.fillText(tk.label, Math.min(Math.max(xx, padL + 12), w - padR - 12), h - padB + 5);
  }
  if (ts.length === 0) return;
  for (const s of series) {
    g.beginPath();
    s.values.forEach((v, i) => { const xx = x(ts[i]), yy = y(v); i ? g.lineTo(xx, yy) : g.moveTo(xx, yy); });
    if (s.fill) {
      g.lineTo(x(ts[ts.length - 1]), y(0)); g.lineTo(x(ts[0]), y(0)); g.closePath();
      g.globalAlpha = 0.25; g.fillStyle = s.color; g.fill(); g.globalAlpha = 1;
      g.beginPath();
      s.values.forEach((v, i) => { const xx = x(ts[i]), yy = y(v); i ? g.lineTo(xx, yy) : g.moveTo(xx, yy); });
    }
    g.strokeStyle = s.color; g.lineWidth = 2; g.lineJoin = "round"; g.stroke();
    if (ts.length === 1) { g.fillStyle = s.color; g.beginPath(); g.arc(x(ts[0]), y(s.values[0]), 2.5, 0, 7); g.fill(); }
  }
}

// spark draws a queue's last ten minutes in a small canvas: depth as a
// shaded area (its own scale), publish and deliver rates as lines (theirs).
function spark(canvas, key) {
  const { g, w, h } = prepCanvas(canvas, 26);
  const now = Date.now(), width = span(now), t0 = now - width;
  const pts = history.filter((s) => s.q[key]).map((s) => ({ t: s.t, v: s.q[key] }));
  if (pts.length === 0) return;
  const x = (t) => 1 + ((t - t0) / width) * (w - 2);
  const maxDepth = Math.max(1, ...pts.map((p) => p.v[0]));
  const maxRate = Math.max(0.1, ...pts.map((p) => Math.max(p.v[1], p.v[2])));
  const yd = (v) => h - 1 - (v / maxDepth) * (h - 3);
  const yr = (v) => h - 1 - (v / maxRate) * (h - 3);
  g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(x(p.t), yd(p.v[0])) : g.moveTo(x(p.t), yd(p.v[0]))));
  g.lineTo(x(pts[pts.length - 1].t), h); g.lineTo(x(pts[0].t), h); g.closePath();
  g.fillStyle = "rgba(47,111,219,.22)"; g.fill();
  for (const [idx, color] of [[1, css("--pub")], [2, css("--del")]]) {
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), yr(p.v[idx])) : g.moveTo(x(p.t), yr(p.v[idx]))));
    g.strokeStyle = color; g.lineWidth = 1.4; g.stroke();
  }
}

// ---- rendering ----
const SERVICE_LABELS = { etcd: "etcd", amqp: "AMQP broker", memcached: "memcached", redis: "Redis", http: "Management HTTP" };
const STATE_TEXT = { ok: "healthy", failed: "failing", running: "running", disabled: "not running (--services)" };

function renderHealth(st) {
  const box = $("health");
  box.replaceChildren(...st.services.map((s) =>
    el("div", { class: "tile " + s.state, "data-service": s.name, "data-state": s.state },
      el("div", { class: "name" }, el("span", { class: "dot" }), SERVICE_LABELS[s.name] || s.name),
      el("div", { class: "state" }, STATE_TEXT[s.state] || s.state),
      s.detail ? el("div", { class: "detail" }, s.detail) : null)));
}

function renderAlarms(st) {
  const box = $("alarms");
  if (!st.alarms.length) {
    box.replaceChildren(el("div", { class: "none" }, "No active alarms"));
    return;
  }
  box.replaceChildren(...st.alarms.map((a) =>
    el("div", { class: "alarm", "data-alarm": a.service + ":" + a.resource },
      (SERVICE_LABELS[a.service] || a.service) + ": " + a.resource + " alarm", a.detail ? el("span", {}, a.detail) : null)));
}

function statBox(label, value, cls, id) {
  return el("div", { class: "stat " + (cls || ""), id }, el("div", { class: "v" }, value), el("div", { class: "k" }, label));
}

function renderBroker(enabled, overview, queues, conns, sample) {
  $("broker-body").hidden = !enabled;
  if (!enabled) {
    const off = $("broker-off") || el("div", { class: "disabled-note", id: "broker-off" }, "The AMQP broker does not run in this process (--services).");
    $("broker").append(off);
    return;
  }
  const off = $("broker-off");
  if (off) off.remove();
  const ot = overview.object_totals || {}, qt = overview.queue_totals || {};
  $("totals").replaceChildren(
    statBox("Connections", fmtInt(ot.connections ?? conns.length), "", "total-connections"),
    statBox("Channels", fmtInt(ot.channels), ""),
    statBox("Queues", fmtInt(ot.queues ?? queues.length), "", "total-queues"),
    statBox("Consumers", fmtInt(ot.consumers), ""),
    statBox("Ready", fmtInt(qt.messages_ready), qt.messages_ready > 0 ? "warn" : "", "total-ready"),
    statBox("Unacked", fmtInt(qt.messages_unacknowledged), ""),
    statBox("Publish /s", fmtRate(sample.pub), ""),
    statBox("Deliver /s", fmtRate(sample.del), ""));
  chart($("chart-depth"), [
    { values: history.map((s) => s.ready + s.unacked), color: css("--unacked"), fill: true },
    { values: history.map((s) => s.ready), color: css("--ready"), fill: true },
  ], { format: (v) => fmtInt(v), integer: true });
  chart($("chart-rates"), [
    { values: history.map((s) => s.pub), color: css("--pub") },
    { values: history.map((s) => s.del), color: css("--del") },
  ], { format: (v) => fmtRate(v), integer: false });
  renderQueues(queues, sample);
  renderConnections(conns);
}

function renderQueues(queues, sample) {
  const filter = $("queue-filter").value.trim().toLowerCase();
  const shown = queues
    .filter((q) => !filter || q.name.toLowerCase().includes(filter) || q.vhost.toLowerCase().includes(filter))
    .sort((a, b) => (b.messages || 0) - (a.messages || 0) || a.name.localeCompare(b.name));
  $("queue-count").textContent = "(" + fmtInt(queues.length) + ")";
  const tbody = $("queues").tBodies[0];
  const rows = shown.slice(0, MAX_QUEUE_ROWS).map((q) => {
    const k = queueKey(q);
    const h = sample.q[k] || [q.messages || 0, 0, 0];
    const feats = [];
    if (q.type && q.type !== "classic") feats.push(q.type);
    if (q.durable) feats.push("D");
    if (q.auto_delete) feats.push("AD");
    if (q.exclusive) feats.push("Excl");
    for (const a of Object.keys(q.arguments || {})) {
      const short = { "x-message-ttl": "TTL", "x-expires": "Exp", "x-max-length": "Lim", "x-dead-letter-exchange": "DLX", "x-max-priority": "Pri" }[a];
      if (short) feats.push(short);
    }
    const sparkCanvas = el("canvas", { class: "spark" });
    const tr = el("tr", { "data-queue": q.name, "data-vhost": q.vhost },
      el("td", { class: "name" }, q.name),
      el("td", {}, q.vhost),
      el("td", {}, feats.map((f) => el("span", { class: "tag" }, f))),
      el("td", { class: "num consumers" }, fmtInt(q.consumers)),
      el("td", { class: "num ready" }, fmtInt(q.messages_ready)),
      el("td", { class: "num unacked" }, fmtInt(q.messages_unacknowledged)),
      el("td", { class: "num depth" + ((q.messages || 0) > 0 && !q.consumers ? " deep" : "") }, fmtInt(q.messages)),
      el("td", { class: "num in" }, fmtRate(h[1])),
      el("td", { class: "num out" }, fmtRate(h[2])),
      el("td", {}, sparkCanvas));
    tr._spark = [sparkCanvas, k];
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 10 }, filter ? "No queue matches." : "No queues.")));
  tbody.replaceChildren(...rows);
  for (const tr of rows) if (tr._spark) spark(...tr._spark);
  const more = $("queue-more");
  more.hidden = shown.length <= MAX_QUEUE_ROWS;
  more.textContent = "Showing the " + MAX_QUEUE_ROWS + " deepest of " + fmtInt(shown.length) + " queues; filter to find others.";
}

function connState(s) {
  const cls = { running: "ok", blocked: "bad", blocking: "warn", flow: "warn", closing: "off" }[s] || "info";
  return el("span", { class: "badge " + cls }, s || "running");
}

function renderConnections(conns) {
  $("conn-count").textContent = "(" + fmtInt(conns.length) + ")";
  const now = Date.now();
  const rows = conns.slice().sort((a, b) => connLabel(a).localeCompare(connLabel(b))).map((c) => {
    const cp = c.client_properties || {};
    const named = cp.connection_name || c.user_provided_name;
    const client = [cp.product, cp.version].filter(Boolean).join(" ");
    return el("tr", { "data-connection": c.name, "data-connection-name": named || "" },
      el("td", { class: "name" }, named || c.name, named ? el("span", { class: "sub" }, c.name) : null),
      el("td", {}, client || "–", cp.platform ? el("span", { class: "sub" }, cp.platform) : null),
      el("td", {}, c.user),
      el("td", {}, c.vhost),
      el("td", { class: "num" }, fmtInt(c.channels)),
      el("td", {}, connState(c.state)),
      el("td", {}, c.connected_at ? fmtDuration((now - c.connected_at) / 1000) + " ago" : "–"));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 7 }, "No connections.")));
  $("connections").tBodies[0].replaceChildren(...rows);
}
const connLabel = (c) => ((c.client_properties || {}).connection_name || c.user_provided_name || c.name || "");

function meter(label, used, limit, id) {
  const f = limit > 0 ? Math.min(1, used / limit) : 0;
  const cls = f >= 0.9 ? "bad" : f >= 0.75 ? "warn" : "";
  return el("div", { class: "meter", id },
    el("div", { class: "label" }, el("span", {}, label), el("span", {}, fmtBytes(used) + " of " + fmtBytes(limit) + " (" + fmtPct(f) + ")")),
    el("div", { class: "bar" }, el("div", { class: "fill " + cls, style: "width:" + (f * 100).toFixed(1) + "%" })));
}

function renderCache(c) {
  const body = $("cache-body");
  if (!c) {
    body.replaceChildren(el("div", { class: "disabled-note" }, "memcached does not run in this process (--services)."));
    return;
  }
  const prev = history.length > 1 ? history[history.length - 2].cache : null;
  const cur = history.length ? history[history.length - 1].cache : null;
  let evRate = null, getRate = null;
  if (prev && cur && cur.t > prev.t) {
    const dt = (cur.t - prev.t) / 1000;
    evRate = Math.max(0, (cur.evictions - prev.evictions) / dt);
    getRate = Math.max(0, (cur.cmd_get - prev.cmd_get) / dt);
  }
  const hr = c.hit_ratio;
  const hrCls = hr === null ? "" : hr >= 0.8 ? "ok" : hr >= 0.5 ? "warn" : "bad";
  body.replaceChildren(
    el("div", { class: "kpis" },
      statBox("Hit ratio", fmtPct(hr), hrCls, "cache-hit-ratio"),
      statBox("Items", fmtInt(c.curr_items), "", "cache-items"),
      statBox("Evictions", fmtInt(c.evictions), c.evictions > 0 ? "warn" : "", "cache-evictions")),
    meter("Memory", c.bytes, c.limit_maxbytes, "cache-memory"),
    el("dl", { class: "facts" },
      el("dt", {}, "Gets"), el("dd", {}, fmtInt(c.cmd_get) + " (" + fmtInt(c.get_hits) + " hits, " + fmtInt(c.get_misses) + " misses)" + (getRate !== null ? " · " + fmtRate(getRate) + "/s" : "")),
      el("dt", {}, "Sets"), el("dd", {}, fmtInt(c.cmd_set)),
      el("dt", {}, "Evictions /s"), el("dd", {}, evRate === null ? "–" : fmtRate(evRate)),
      el("dt", {}, "Connections"), el("dd", {}, fmtInt(c.curr_connections) + " open of " + fmtInt(c.max_connections) + " · " + fmtInt(c.total_connections) + " since start"),
      el("dt", {}, "Traffic"), el("dd", {}, fmtBytes(c.bytes_read) + " in · " + fmtBytes(c.bytes_written) + " out")));
}

function renderEtcd(e) {
  const body = $("etcd-body");
  if (!e) {
    body.replaceChildren(el("div", { class: "disabled-note" }, "etcd does not run in this process (--services)."));
    return;
  }
  if (e.error) {
    body.replaceChildren(el("p", { class: "error" }, "Cannot read the member's state: " + e.error));
    return;
  }
  const leader = e.leader ? (e.leader_name || e.leader) : null;
  body.replaceChildren(
    el("div", { class: "kpis" },
      statBox("Leader", leader || "none", leader ? "ok" : "bad", "etcd-leader"),
      statBox("Members", fmtInt(e.members.length), "", "etcd-members"),
      statBox("DB size", fmtBytes(e.db_size), "", "etcd-db-size")),
    meter("Database (quota)", e.db_size, e.db_quota, "etcd-quota"),
    el("dl", { class: "facts" },
      el("dt", {}, "This member"), el("dd", {}, e.member_id + (e.is_learner ? " (learner)" : "")),
      el("dt", {}, "In use"), el("dd", {}, fmtBytes(e.db_size_in_use) + " of " + fmtBytes(e.db_size) + " allocated"),
      el("dt", {}, "Raft term"), el("dd", {}, fmtInt(e.raft_term)),
      el("dt", {}, "Version"), el("dd", {}, e.version + (e.cluster_version ? " (cluster " + e.cluster_version + ")" : ""))),
    el("div", { class: "scroll" }, el("table", { class: "grid", id: "etcd-member-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "ID"), el("th", {}, "Role"), el("th", {}, "Peer URLs"), el("th", {}, "Client URLs"))),
      el("tbody", {}, e.members.map((m) => el("tr", { "data-member": m.id },
        el("td", { class: "name" }, m.name || "(not started)", m.is_self ? el("span", { class: "sub" }, "this node") : null),
        el("td", {}, m.id),
        el("td", {}, el("span", { class: "badge " + (m.is_leader ? "ok" : m.is_learner ? "off" : "info") }, m.is_leader ? "leader" : m.is_learner ? "learner" : "follower")),
        el("td", {}, m.peer_urls.join(", ")),
        el("td", {}, m.client_urls.join(", ") || "–")))))));
}

// renderCluster draws the broker's Raft group (st.cluster; null when the
// broker is not clustered: no panel): one row per node, the leader's
// highlighted.
const ROLE_BADGE = { leader: "ok", follower: "info", unreachable: "bad" };
const BROKER_BADGE = { active: "ok", standby: "off", unknown: "off" };
function renderCluster(c) {
  $("cluster").hidden = !c;
  if (!c) return;
  const up = c.nodes.filter((n) => n.reachable).length;
  const leader = c.nodes.find((n) => n.name === c.leader);
  $("cluster-summary").replaceChildren(
    statBox("Leader", c.leader || "none", c.leader ? "ok" : "bad", "cluster-leader"),
    statBox("Nodes reachable", up + " of " + c.nodes.length, up === c.nodes.length ? "ok" : up * 2 > c.nodes.length ? "warn" : "bad", "cluster-reachable"),
    statBox("Raft term", leader ? fmtInt(leader.term) : "–", "", "cluster-term"));
  const num = (n, v) => (n.reachable ? fmtInt(v) : "–");
  const rows = c.nodes.map((n) => el("tr", { class: n.is_leader ? "leader" : "", "data-node": n.name, "data-role": n.role },
    el("td", { class: "name" }, n.name, n.is_self ? el("span", { class: "sub" }, "this node") : null, n.error ? el("span", { class: "sub error" }, n.error) : null),
    el("td", { class: "role" }, el("span", { class: "badge " + (ROLE_BADGE[n.role] || "off") }, n.role)),
    el("td", { class: "broker" }, el("span", { class: "badge " + (BROKER_BADGE[n.broker] || "off") }, n.broker)),
    el("td", { class: "num term" }, num(n, n.term)),
    el("td", { class: "num commit" }, num(n, n.commit_index)),
    el("td", { class: "num applied" }, num(n, n.applied_index)),
    el("td", { class: "num forwarded" }, num(n, n.forwarded_connections))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 7 }, "No nodes.")));
  $("cluster-nodes").tBodies[0].replaceChildren(...rows);
}

// ---- broker data: RabbitMQ's management API ----
async function brokerData() {
  const [overview, queues, conns] = await Promise.all([getJSON("/api/overview"), getJSON("/api/queues"), getJSON("/api/connections")]);
  return { overview, queues, conns };
}

// ---- the poll loop ----
let timer = null;
function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  let st;
  try {
    st = await getJSON("/substrate/status");
    const amqp = st.services.find((s) => s.name === "amqp");
    const enabled = !!(amqp && amqp.enabled);
    const b = enabled ? await brokerData() : { overview: {}, queues: [], conns: [] };
    const now = Date.now();
    const sample = recordSample(now, b.overview, b.queues);
    if (st.cache) sample.cache = { t: now, evictions: st.cache.evictions, cmd_get: st.cache.cmd_get };
    saveHistory();
    $("login").hidden = true;
    $("dash").hidden = false;
    $("dash").classList.remove("stale-data");
    $("banner").hidden = true;
    $("logout").hidden = !auth;
    $("version").textContent = st.version;
    $("uptime").textContent = "up " + fmtDuration(st.uptime_seconds);
    $("who").textContent = st.user ? "user " + st.user : "";
    $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    $("updated").className = "muted";
    renderHealth(st);
    renderAlarms(st);
    renderBroker(enabled, b.overview || {}, b.queues || [], b.conns || [], sample);
    renderCache(st.cache);
    renderEtcd(st.etcd);
    renderCluster(st.cluster);
    document.body.dataset.loaded = String(now);
  } catch (e) {
    if (e instanceof HTTPError && e.status === 401) {
      const hadAuth = !!auth;
      showLogin(hadAuth ? "Login failed: " + (e.message || "not authorised") : "");
      return; // the form resumes polling
    }
    $("banner").hidden = false;
    $("banner").textContent = "Cannot reach substrate's management port: " + e.message + ". Retrying every " + POLL_MS / 1000 + " s.";
    $("dash").classList.add("stale-data");
    $("updated").className = "stale";
  }
  schedule(POLL_MS);
}

$("queue-filter").addEventListener("input", () => schedule(0));
window.addEventListener("resize", () => schedule(250));
poll();
