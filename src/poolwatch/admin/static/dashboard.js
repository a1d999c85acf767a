// poolwatch dashboard: no dependencies, no network beyond this admin app's own endpoints.
// Everything shown comes from dashboard.json every few seconds; text is always set with
// textContent (call sites and thread names are the application's strings, never markup).
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const HISTORY = 300;
  const TOKEN_KEY = "poolwatch-token";
  const state = { paused: false, timer: null, history: [], refreshes: 0 };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 90) return Math.round(seconds) + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    const hours = Math.floor(minutes / 60);
    return hours + " h " + (minutes % 60) + " min";
  }

  function fmtNum(value) { return value === null || value === undefined ? "?" : String(value); }

  function fmtTime(wall) {
    return new Date(wall * 1000).toISOString().slice(11, 19) + " UTC";
  }

  // -- token --------------------------------------------------------------------------------

  function takeTokenFromHash() {
    // `#token=...` (what `make demo` prints) never reaches the server; keep it in this tab.
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  async function api(path, accept) {
    const headers = { Accept: accept || "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) {
      showLogin(true);
      throw new Error("token required");
    }
    return response;
  }

  function showLogin(show) {
    $("login").hidden = !show;
    $("main").hidden = show;
  }

  // -- rendering ----------------------------------------------------------------------------

  function renderHealth(data) {
    const badge = $("health");
    badge.textContent = data.healthy ? "healthy" : "unhealthy";
    badge.className = "badge " + (data.healthy ? "ok" : "bad");
    $("process").textContent =
      "pid " + data.pid + " · " + data.python + " · poolwatch " + data.version +
      (data.instrumented.length ? " · " + data.instrumented.join(", ") : " · nothing instrumented");
    const list = $("checks");
    list.replaceChildren(...Object.entries(data.health).map(([name, check]) =>
      el("li", { class: check.healthy ? "ok" : "bad", "data-check": name },
        el("b", { text: name }), check.message)));
  }

  function utilBar(pool, critical) {
    const util = pool.utilisation;
    const bar = el("div", { class: "bar" });
    const fill = el("div", { class: "fill" });
    const label = el("span", { class: "label" });
    if (util === null) {
      label.textContent = "unbounded";
    } else {
      fill.style.width = Math.min(100, util * 100).toFixed(1) + "%";
      if (util >= critical) fill.className = "fill bad";
      else if (util >= 0.75) fill.className = "fill warn";
      label.textContent = Math.round(util * 100) + "%";
    }
    bar.append(fill, label);
    return bar;
  }

  function renderPools(data) {
    const body = $("pools").tBodies[0];
    body.replaceChildren(...data.pools.map((pool) => {
      const cell = (field, value, hot) =>
        el("td", { class: "num" + (hot ? " hot" : ""), "data-field": field, text: fmtNum(value) });
      return el("tr", { "data-pool": pool.label },
        el("td", { class: "code", text: pool.label }),
        el("td", {}, utilBar(pool, data.critical)),
        cell("leased", pool.leased, pool.max !== null && pool.leased >= pool.max),
        cell("idle", pool.idle),
        cell("waiting", pool.waiting, pool.waiting > 0),
        cell("max", pool.max === null ? "∞" : pool.max),
        cell("exhaustions", pool.exhaustions, pool.exhaustions > 0),
        cell("confirmed_leaks", pool.confirmed_leaks, pool.confirmed_leaks > 0),
        cell("suspected_leaks", pool.suspected_leaks, pool.suspected_leaks > 0));
    }));
    $("no-pools").hidden = data.pools.length > 0;
    $("pool-count").textContent = data.pools.length ? "(" + data.pools.length + ")" : "";
  }

  function renderSites(data) {
    const body = $("sites").tBodies[0];
    body.replaceChildren(...data.leak_sites.map((site) =>
      el("tr", { "data-callsite": site.callsite },
        el("td", { class: "code", text: site.callsite }),
        el("td", { class: "code", text: site.pool }),
        el("td", { class: "num" + (site.live ? " hot" : ""), "data-field": "live", text: site.live }),
        el("td", { class: "num" + (site.confirmed ? " hot" : ""), "data-field": "confirmed",
                   text: site.confirmed }),
        el("td", { class: "num", text: fmtAge(site.oldest_age) }),
        el("td", {}, site.responses.map((r) => r.count + " × " + r.text).join("; ")))));
    $("no-sites").hidden = data.leak_sites.length > 0;
  }

  function renderLeases(data) {
    const body = $("leases").tBodies[0];
    body.replaceChildren(...data.leases.shown.map((lease) => {
      const sock = lease.socket;
      const sockText = sock ? (sock.state || "") + " " + (sock.peer || "") : "–";
      return el("tr", { "data-seq": lease.seq },
        el("td", { class: "num", text: fmtAge(lease.age) }),
        el("td", { class: "state-" + lease.state, text: lease.state }),
        el("td", { class: "code", text: lease.pool }),
        el("td", { class: "code", text: lease.callsite }),
        el("td", { text: lease.where }),
        el("td", { text: lease.response ? lease.response.text : "no response read yet" }),
        el("td", { class: sock && sock.state ? "state-" + sock.state : "", text: sockText.trim() }));
    }));
    const total = data.leases.total;
    const shown = data.leases.shown.length;
    $("lease-count").textContent =
      total > shown ? "(" + shown + " of " + total + ")" : "(" + total + ")";
    $("no-leases").hidden = total > 0;
  }

  function renderAlerts(data) {
    const box = $("alerts");
    if (data.alerts === null) {
      box.replaceChildren(el("p", { class: "empty",
        text: "Alerts are not running in this process (poolwatch.start() runs them)." }));
    } else if (data.alerts.length === 0) {
      box.replaceChildren(el("p", { class: "empty", text: "No alert pending or firing." }));
    } else {
      box.replaceChildren(...data.alerts.map((alert) =>
        el("div", { class: "alert " + alert.severity + " " + alert.state },
          el("b", { text: alert.severity + " · " + alert.state + " · " + alert.name }),
          alert.inhibited_by
            ? el("span", { class: "muted", text: " (silenced by " + alert.inhibited_by + ")" })
            : null,
          el("div", { text: alert.summary }),
          el("div", { class: "muted", text: alert.pool + " · since " + fmtTime(alert.since) }))));
    }
    const ledger = $("ledger");
    if (data.ledger === null) {
      ledger.replaceChildren(el("p", { class: "empty",
        text: "No delivery ledger (alerts are not running)." }));
    } else if (data.ledger.length === 0) {
      ledger.replaceChildren(el("p", { class: "empty", text: "Nothing sent yet." }));
    } else {
      const rows = data.ledger.map((entry) =>
        el("tr", {},
          el("td", { text: fmtTime(entry.at) }),
          el("td", { text: entry.channel }),
          el("td", { class: entry.outcome === "failed" ? "hot" : "", text: entry.outcome }),
          el("td", { text: entry.detail || entry.subject })));
      ledger.replaceChildren(el("table", {},
        el("thead", {}, el("tr", {}, el("th", { text: "at" }), el("th", { text: "channel" }),
          el("th", { text: "outcome" }), el("th", { text: "detail" }))),
        el("tbody", {}, ...rows)));
    }
  }

  function renderEvents(data) {
    const list = $("events");
    if (!data.events.length) {
      list.replaceChildren(el("li", { class: "empty", text: "No event yet." }));
      return;
    }
    list.replaceChildren(...data.events.map((event) =>
      el("li", {},
        el("span", { class: "muted", text: fmtTime(event.wall) + " " }),
        el("span", { class: "kind " + event.kind, text: event.kind }),
        el("span", { class: "code", text: event.pool + ": " }),
        event.message)));
  }

  // -- timeline -----------------------------------------------------------------------------

  function sumSeries(perPool, metric) {
    const totals = new Map();
    for (const series of Object.values(perPool)) {
      for (const [t, v] of series[metric] || []) totals.set(t, (totals.get(t) || 0) + v);
    }
    return [...totals.entries()].sort((a, b) => a[0] - b[0]);
  }

  function timelineSeries(data) {
    if (data.timeline) {
      $("timeline-source").textContent = "(from the sampler)";
      return {
        leased: sumSeries(data.timeline.pools, "leased"),
        waiting: sumSeries(data.timeline.pools, "waiting"),
        closewait: data.timeline.close_wait || [],
      };
    }
    // No sampler in this process: chart what this page has seen since it opened.
    $("timeline-source").textContent = "(since this page opened; no sampler running)";
    const leased = data.pools.reduce((n, p) => n + p.leased, 0);
    const waiting = data.pools.reduce((n, p) => n + p.waiting, 0);
    state.history.push([data.now, leased, waiting]);
    if (state.history.length > HISTORY) state.history.shift();
    return {
      leased: state.history.map((p) => [p[0], p[1]]),
      waiting: state.history.map((p) => [p[0], p[2]]),
      closewait: [],
    };
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  function renderTimeline(data) {
    const series = timelineSeries(data);
    const all = [...series.leased, ...series.waiting, ...series.closewait];
    const box = $("timeline");
    const width = Math.max(box.clientWidth, 300);
    const height = 180;
    const pad = { left: 36, right: 10, top: 10, bottom: 22 };
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img",
                               "aria-label": "leased, waiting and CLOSE_WAIT over time" });
    if (all.length < 2) {
      const text = svg("text", { x: pad.left, y: height / 2 });
      text.textContent = "collecting points…";
      chart.append(text);
      box.replaceChildren(chart);
      return;
    }
    const t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(...all.map((p) => p[0]));
    const vmax = Math.max(1, ...all.map((p) => p[1]));
    const x = (t) => pad.left + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / vmax) * (height - pad.top - pad.bottom);
    chart.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right,
                               y1: y(0), y2: y(0) }));
    for (const v of [0, vmax]) {
      const label = svg("text", { x: 4, y: y(v) + 4 });
      label.textContent = String(Math.round(v));
      chart.append(label);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = svg("text", { x: x(t), y: height - 6, "text-anchor": anchor });
      label.textContent = fmtTime(t);
      chart.append(label);
    }
    for (const [name, points] of Object.entries(series)) {
      if (points.length < 1) continue;
      const d = points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1))
        .join(" ");
      chart.append(svg("path", { class: name, d, "data-series": name }));
    }
    box.replaceChildren(chart);
  }

  // -- threads ------------------------------------------------------------------------------

  async function loadThreads() {
    const pre = $("threads");
    pre.hidden = false;
    pre.textContent = "taking a thread dump…";
    try {
      const response = await api("threads", "text/plain");
      pre.textContent = await response.text();
    } catch (error) {
      pre.textContent = "could not take a thread dump: " + error.message;
    }
  }

  // -- loop ---------------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(state.timer);
    if (!state.paused) {
      try {
        const response = await api("dashboard.json");
        if (!response.ok) throw new Error("dashboard.json answered " + response.status);
        const data = await response.json();
        showLogin(false);
        renderHealth(data);
        renderPools(data);
        renderTimeline(data);
        renderSites(data);
        renderLeases(data);
        renderAlerts(data);
        renderEvents(data);
        state.refreshes += 1;
        document.body.dataset.refreshes = String(state.refreshes);
        $("updated").textContent = "updated " + fmtTime(data.now);
      } catch (error) {
        $("updated").textContent = "not updating: " + error.message;
      }
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeTokenFromHash();
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "Resume" : "Pause";
      if (!state.paused) refresh();
    });
    $("load-threads").addEventListener("click", loadThreads);
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value);
      refresh();
    });
    refresh();
  });
})();
