(function () {
  "use strict";
  var REFRESH = Number(document.body.getAttribute("data-refresh")) * 1000;
  var previous = null;
  var $ = function (id) { return document.getElementById(id); };
  function set(id, text, cls) {
    var el = $(id); if (!el) return;
    el.textContent = text;
    if (cls !== undefined) el.className = "value " + cls;
  }
  function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(x < 0.1 ? 2 : 1) + " %"; }
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
    var inner = document.createElement("i"); inner.style.width = Math.max(0, Math.min(100, 100 * fraction)) + "%";
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
