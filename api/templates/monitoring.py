"""``/monitoring``: one self-refreshing page, readable at a glance.

No framework and nothing loaded from elsewhere: the style and the script are inline (the
script under a per-response CSP nonce), and every figure is written with ``textContent``, so
nothing from the data (user ids included) is ever parsed as HTML.
"""

from __future__ import annotations

import html

REFRESH_SECONDS = 5

_STYLE = """
:root { --bg:#0f1419; --panel:#172029; --line:#26323d; --text:#e6edf3; --muted:#8b98a5;
        --ok:#2ea043; --warn:#d29922; --bad:#f85149; --accent:#58a6ff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text);
       font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
header { display:flex; align-items:center; justify-content:space-between; padding:14px 24px;
         border-bottom:1px solid var(--line); }
h1 { font-size:18px; margin:0; font-weight:600; }
h1 span { color:var(--muted); font-weight:400; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:22px 0 8px; }
main { padding:8px 24px 24px; }
.meta { color:var(--muted); font-size:12px; display:flex; gap:14px; align-items:center; }
.meta form { margin:0; }
.meta button { background:none; border:1px solid var(--line); color:var(--muted); border-radius:6px;
               padding:3px 8px; cursor:pointer; }
.dot { display:inline-block; width:8px; height:8px; border-radius:50%; background:var(--muted); margin-right:6px; }
.dot.live { background:var(--ok); } .dot.stale { background:var(--bad); }
.tiles { display:grid; grid-template-columns:repeat(auto-fill,minmax(165px,1fr)); gap:10px; }
.tile { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.tile .label { color:var(--muted); font-size:12px; }
.tile .value { font-size:26px; font-weight:600; margin-top:2px; font-variant-numeric:tabular-nums; }
.tile .sub { color:var(--muted); font-size:12px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width: 1100px) { .grid2 { grid-template-columns:1fr; } }
table { width:100%; border-collapse:collapse; background:var(--panel); border:1px solid var(--line);
        border-radius:8px; overflow:hidden; font-variant-numeric:tabular-nums; }
th, td { padding:6px 10px; text-align:right; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:500; font-size:12px; background:#131b23; }
th:first-child, td:first-child { text-align:left; }
tr:last-child td { border-bottom:none; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.b-ok { background:rgba(46,160,67,.18); color:#56d364; }
.b-warn { background:rgba(210,153,34,.2); color:#e3b341; }
.b-bad { background:rgba(248,81,73,.2); color:#ff7b72; }
.bar { height:6px; background:#0b1016; border-radius:3px; overflow:hidden; min-width:80px; }
.bar i { display:block; height:100%; background:var(--accent); }
.bad { color:#ff7b72; } .warn { color:#e3b341; } .ok { color:#56d364; }
.muted { color:var(--muted); }
.error { background:rgba(248,81,73,.15); border:1px solid var(--bad); padding:8px 12px; border-radius:8px;
         margin-top:12px; display:none; }
.card { max-width:520px; margin:12vh auto; background:var(--panel); border:1px solid var(--line);
        border-radius:10px; padding:24px; }
.card input { width:100%; padding:8px; margin:10px 0; background:#0b1016; color:var(--text);
              border:1px solid var(--line); border-radius:6px; font-family:monospace; }
.card button { background:var(--accent); color:#0b1016; border:0; border-radius:6px; padding:8px 14px;
               font-weight:600; cursor:pointer; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var REFRESH = %(refresh)d * 1000;
  var previous = null;
  var $ = function (id) { return document.getElementById(id); };
  function set(id, text, cls) {
    var el = $(id); if (!el) return;
    el.textContent = text;
    if (cls !== undefined) el.className = "value " + cls;
  }
  function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(x < 0.1 ? 2 : 1) + " %%"; }
  function ms(x) { return x === null || x === undefined ? "–" : (x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(1) + " ms"); }
  function secs(x) {
    if (x === null || x === undefined) return "–";
    if (x < 1) return x.toFixed(2) + " s";
    if (x < 120) return x.toFixed(1) + " s";
    if (x < 7200) return (x / 60).toFixed(1) + " min";
    return (x / 3600).toFixed(1) + " h";
  }
  function cell(row, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td;
  }
  function badge(row, text, kind) {
    var td = document.createElement("td"); var b = document.createElement("span");
    b.className = "badge b-" + kind; b.textContent = text; td.appendChild(b); row.appendChild(td);
  }
  function bar(row, fraction) {
    var td = document.createElement("td"); var outer = document.createElement("div"); outer.className = "bar";
    var inner = document.createElement("i"); inner.style.width = Math.max(0, Math.min(100, 100 * fraction)) + "%%";
    if (fraction >= 0.9) inner.style.background = "#f85149"; else if (fraction >= 0.7) inner.style.background = "#d29922";
    outer.appendChild(inner); td.appendChild(outer); row.appendChild(td);
  }
  function fill(id, rows, build) {
    var body = $(id); if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (r) { var tr = document.createElement("tr"); build(tr, r); body.appendChild(tr); });
  }
  function render(d) {
    var now = Date.now();
    var req = d.requests, jobs = d.jobs;
    set("t-requests", num(req.total));
    var rps = null;
    if (previous) {
      var dt = (now - previous.at) / 1000;
      if (dt > 0) rps = Math.max(0, (req.total - previous.total) / dt);
    }
    previous = {at: now, total: req.total};
    set("t-rps", rps === null ? "…" : rps.toFixed(rps < 10 ? 2 : 0));
    set("t-errors", pct(req.error_rate), req.error_rate > 0.05 ? "bad" : req.error_rate > 0.01 ? "warn" : "ok");
    $("t-errors-sub").textContent = num(req.errors) + " × 5xx · " + num(req.client_errors) + " × 4xx";
    set("t-latency", ms(req.p95_ms));
    $("t-latency-sub").textContent = "avg " + ms(req.average_response_ms) + " · p50 " + ms(req.p50_ms);
    var waiting = 0, oldest = 0, workers = 0;
    Object.keys(d.queues).forEach(function (q) {
      waiting += d.queues[q].depth; oldest = Math.max(oldest, d.queues[q].oldest_age_seconds); workers += d.queues[q].workers_alive;
    });
    set("t-waiting", num(waiting));
    $("t-waiting-sub").textContent = num(Object.values(d.deferred).reduce(function (a, b) { return a + b; }, 0)) +
      " deferred · " + num(d.retry_scheduled) + " retrying";
    set("t-oldest", secs(oldest), oldest > 300 ? "bad" : oldest > 60 ? "warn" : "");
    set("t-workers", num(workers), workers === 0 ? "bad" : "");
    set("t-jobs", num(jobs.succeeded));
    $("t-jobs-sub").textContent = num(jobs.submitted) + " submitted · " + num(jobs.cancelled) + " cancelled";
    set("t-failed", num(jobs.failed), jobs.failure_rate > 0.1 ? "bad" : jobs.failure_rate > 0 ? "warn" : "ok");
    $("t-failed-sub").textContent = pct(jobs.failure_rate) + " of finished jobs";
    var providers = Object.keys(d.breakers);
    var open = providers.filter(function (p) { return d.breakers[p] === "open"; });
    var half = providers.filter(function (p) { return d.breakers[p] === "half_open"; });
    set("t-breakers", open.length ? open.length + " open" : half.length ? half.length + " half-open" : "all closed",
        open.length ? "bad" : half.length ? "warn" : "ok");
    $("t-breakers-sub").textContent = open.length || half.length ? open.concat(half).join(", ") : providers.length + " providers";

    var maxDepth = Math.max.apply(null, [1].concat(Object.keys(d.queues).map(function (q) { return d.queues[q].depth; })));
    fill("queues", Object.keys(d.queues), function (tr, q) {
      var s = d.queues[q];
      cell(tr, q);
      cell(tr, num(s.depth));
      bar(tr, s.depth / maxDepth);
      cell(tr, secs(s.oldest_age_seconds), s.oldest_age_seconds > 300 ? "bad" : "");
      cell(tr, num(s.workers_alive), s.depth > 0 && s.workers_alive === 0 ? "bad" : "");
    });
    fill("providers", Object.keys(d.services), function (tr, p) {
      var s = d.services[p];
      cell(tr, p);
      var kind = s.breaker === "closed" ? "ok" : s.breaker === "open" ? "bad" : "warn";
      badge(tr, s.suspended ? "suspended" : s.breaker.replace("_", "-"), s.suspended ? "warn" : kind);
      cell(tr, num(s.in_flight) + " / " + num(s.max_in_flight));
      cell(tr, s.requests_per_minute ? num(s.requests_in_window) + " / " + num(s.requests_per_minute) : num(s.requests_in_window));
      cell(tr, s.tokens_per_minute ? num(s.tokens_in_window) + " / " + num(s.tokens_per_minute) : "–");
      cell(tr, num(s.calls));
      cell(tr, num(s.errors), s.errors ? "warn" : "");
      cell(tr, num(s.throttled), s.throttled ? "bad" : "");
      cell(tr, ms(s.average_latency_ms));
      cell(tr, num(s.tokens));
      cell(tr, num(s.deferred_jobs));
      cell(tr, s.paused_for_seconds > 0 ? secs(s.paused_for_seconds) : "–", s.paused_for_seconds > 0 ? "warn" : "");
      cell(tr, String(s.revision));
    });
    fill("jobtypes", Object.keys(jobs.by_type), function (tr, t) {
      var s = jobs.by_type[t];
      cell(tr, t);
      cell(tr, num(s.submitted)); cell(tr, num(s.succeeded)); cell(tr, num(s.failed), s.failed ? "warn" : "");
      cell(tr, num(s.deferred)); cell(tr, num(s.retried)); cell(tr, num(s.cancelled));
      cell(tr, secs(s.average_wait_seconds)); cell(tr, secs(s.average_run_seconds));
    });
    var quota = d.quota_rejections;
    set("t-quota", num(quota.ip + quota.ai + quota.pronunciation));
    $("t-quota-sub").textContent = "ip " + num(quota.ip) + " · ai " + num(quota.ai) + " · speech " + num(quota.pronunciation);
    set("t-cache", pct(d.cache.hit_rate));
    $("t-cache-sub").textContent = num(d.cache.hits) + " hits · " + num(d.cache.misses) + " misses";
    var u = d.users;
    set("t-users", num(u.users.active_last_hour));
    $("t-users-sub").textContent = num(u.users.tracked) + " tracked (24 h)";
    set("t-risk", num(u.risk_levels.high), u.risk_levels.high ? "bad" : "ok");
    $("t-risk-sub").textContent = num(u.risk_levels.medium) + " medium · " + num(u.risk_levels.low) + " low";
    fill("risky", u.top_by_risk, function (tr, r) {
      cell(tr, r.user_id);
      cell(tr, num(r.submitted)); cell(tr, num(r.failed)); cell(tr, num(r.quota_hits));
      badge(tr, r.risk_score + " " + r.risk_level, r.risk_level === "high" ? "bad" : r.risk_level === "medium" ? "warn" : "ok");
    });
    $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    $("live").className = "dot live";
    $("error").style.display = "none";
    document.body.setAttribute("data-loaded", String(Number(document.body.getAttribute("data-loaded") || 0) + 1));
  }
  function tick() {
    fetch("/monitoring/data", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401 || r.status === 403) { window.location.reload(); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (e) {
        $("live").className = "dot stale";
        var box = $("error"); box.textContent = "Refresh failed: " + e.message + " (retrying)"; box.style.display = "block";
      })
      .then(function () { setTimeout(tick, REFRESH); });
  }
  tick();
})();
"""


def _tile(key: str, label: str, sub: bool = True) -> str:
    sub_html = f'<div class="sub" id="t-{key}-sub">&nbsp;</div>' if sub else ""
    return f'<div class="tile"><div class="label">{label}</div><div class="value" id="t-{key}">…</div>{sub_html}</div>'


def _table(body_id: str, headers: list[str]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f'<table><thead><tr>{head}</tr></thead><tbody id="{body_id}"></tbody></table>'


def dashboard(nonce: str, user_id: str) -> str:
    tiles_api = "".join([
        _tile("requests", "API requests", sub=False), _tile("rps", "Requests / s", sub=False),
        _tile("errors", "Error rate (5xx)"), _tile("latency", "p95 response time"),
        _tile("waiting", "Jobs waiting"), _tile("oldest", "Oldest waiting job", sub=False),
        _tile("workers", "Live workers", sub=False), _tile("breakers", "Circuit breakers"),
        _tile("jobs", "Jobs succeeded"), _tile("failed", "Jobs failed"),
        _tile("quota", "Quota rejections (429)"), _tile("cache", "Cache hit rate"),
        _tile("users", "Active users (1 h)"), _tile("risk", "High-risk users"),
    ])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unilingo · monitoring</title><style>{_STYLE}</style></head>
<body data-loaded="0">
<header><h1>Unilingo <span>live monitoring</span></h1>
<div class="meta"><span><span class="dot" id="live"></span><span id="updated">loading…</span></span>
<span>auto-refresh every {REFRESH_SECONDS} s</span><span>signed in as {html.escape(user_id)}</span>
<form method="post" action="/monitoring/sign-out"><button type="submit">sign out</button></form></div></header>
<main>
<div class="error" id="error"></div>
<h2>At a glance</h2>
<div class="tiles">{tiles_api}</div>
<div class="grid2">
<section><h2>Queues</h2>{_table("queues", ["queue", "waiting", "", "oldest", "workers"])}</section>
<section><h2>Jobs by type</h2>{_table("jobtypes", ["type", "submitted", "succeeded", "failed", "deferred",
                                                   "retried", "cancelled", "avg wait", "avg run"])}</section>
</div>
<h2>Providers (policy in force, rolling minute)</h2>
{_table("providers", ["provider", "breaker", "in flight", "requests / min", "tokens / min", "calls", "errors",
                      "429s", "avg latency", "tokens used", "deferred", "paused", "revision"])}
<h2>Users at risk</h2>
{_table("risky", ["user", "submitted", "failed", "quota hits", "risk"])}
</main>
<script nonce="{nonce}">{_SCRIPT % {"refresh": REFRESH_SECONDS}}</script>
</body></html>"""


def sign_in(message: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unilingo · monitoring · sign in</title><style>{_STYLE}</style></head>
<body><div class="card"><h1>Unilingo monitoring</h1>
<p class="muted">{html.escape(message)}. Paste an admin access token (<code>make token USER=you ADMIN=1</code> on
the local stack). It is kept in an HttpOnly cookie for this page only.</p>
<form method="post" action="/monitoring"><input name="token" type="password" autocomplete="off"
placeholder="eyJhbGciOi…" required><button type="submit">Sign in</button></form></div></body></html>"""


def refused(message: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unilingo · monitoring</title><style>{_STYLE}</style></head>
<body><div class="card"><h1>Not allowed</h1><p>{html.escape(message)}.</p>
<form method="post" action="/monitoring/sign-out"><button type="submit">Use another token</button></form>
</div></body></html>"""
