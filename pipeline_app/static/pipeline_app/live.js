/* Live updates of run pages over WebSockets (falls back to polling status.json).
 * Generic: elements carry data-live-* attributes; pages work without this file. */
(function () {
  "use strict";

  // As charts.fmt_number: 3 significant digits, whole numbers with separators from 1,000 on.
  function formatNumber(value) {
    var rounded = Number(value.toPrecision(3));
    if (Math.abs(rounded) >= 1000) return Math.round(value).toLocaleString("en-US");
    return String(rounded);
  }

  function formatSeconds(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value < 0.001) return Math.round(value * 1e6) + " µs";
    if (value < 1) return formatNumber(value * 1e3) + " ms";
    if (value < 120) return formatNumber(value) + " s";
    return (value / 60).toFixed(1) + " min";
  }

  function formatValue(element, value) {
    var format = element.getAttribute("data-format");
    if (format === "seconds") return formatSeconds(value);
    if (format === "rate") {
      if (!value) return "–";
      return value.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) +
        " items/s";
    }
    if (value === null || value === undefined) return "?";
    if (format === "count") return value.toLocaleString("en-US");
    return String(value);
  }

  // Figures the run state implies: how long the run has been running and how long it queued.
  function withDerived(run) {
    var derived = Object.assign({}, run);
    var progress = run.progress || {};
    derived.elapsed_seconds = run.started_at && typeof progress.elapsed === "number"
      ? progress.elapsed : null;
    var created = Date.parse(run.created_at), started = Date.parse(run.started_at);
    derived.queue_wait_seconds = isNaN(created) || isNaN(started)
      ? null : Math.max(0, (started - created) / 1000);
    return derived;
  }

  function percentDone(run) {
    if (run.status === "succeeded") return 100;
    if (!run.items_expected) return null;
    var progress = run.progress || {};
    var done = progress.done;
    if (done === undefined || done === null) {
      done = run.items_out + run.items_filtered + run.items_errors;
    }
    return Math.min(run.is_finished ? 100 : 99, (100 * done) / run.items_expected);
  }

  function update(root, state) {
    var run = withDerived(state);
    root.querySelectorAll("[data-live-field]").forEach(function (element) {
      var name = element.getAttribute("data-live-field");
      if (name === "status") {
        element.textContent = run.status_label || run.status;
        element.className = "badge status-" + run.status;
      } else if (name === "percent") {
        var pct = percentDone(run);
        element.textContent = pct === null ? "" : pct.toFixed(1) + "%";
      } else if (name in run) {
        var prefix = element.getAttribute("data-prefix");
        // a prefixed value is optional: both are left out while the state has none
        if (prefix !== null) {
          element.textContent = run[name] ? prefix + formatValue(element, run[name]) : "";
        } else {
          element.textContent = formatValue(element, run[name]);
        }
      }
    });
    var bar = root.querySelector("[data-live-progress]");
    if (bar) {
      var pct = percentDone(run);
      var inner = bar.querySelector(".progress-bar");
      if (pct !== null) {
        bar.setAttribute("aria-valuenow", pct.toFixed(1));
        inner.classList.remove("indeterminate");
        inner.style.width = pct.toFixed(1) + "%";
      }
    }
    var stages = (run.progress || {}).stages || {};
    root.querySelectorAll("[data-stage]").forEach(function (row) {
      var stage = stages[row.getAttribute("data-stage")];
      if (!stage) return;
      row.querySelectorAll("[data-live-stage]").forEach(function (cell) {
        var value = stage[cell.getAttribute("data-live-stage")];
        if (value !== undefined) cell.textContent = String(value);
      });
    });
  }

  function socketUrl(path) {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + path;
  }

  function connect(path, onMessage, onFail) {
    if (!("WebSocket" in window)) { onFail(); return null; }
    var socket, opened = false, retries = 0;
    function open() {
      socket = new WebSocket(socketUrl(path));
      socket.onopen = function () { opened = true; retries = 0; };
      socket.onmessage = function (event) {
        try { onMessage(JSON.parse(event.data)); } catch (error) { /* ignore bad frames */ }
      };
      socket.onclose = function () {
        if (socket.finished) return;
        if (!opened && retries >= 2) { onFail(); return; }
        retries += 1;
        window.setTimeout(open, Math.min(1000 * retries, 5000));
      };
    }
    open();
    return { stop: function () { socket.finished = true; socket.close(); } };
  }

  function watchRun(root) {
    var id = root.getAttribute("data-live-run");
    var statusUrl = root.getAttribute("data-status-url");
    var lastSeq = -1, reloaded = false, poller = null, link = null;
    function handle(message) {
      if (!message || !message.run) return;
      // seq grows across a run's attempts (the server numbers each attempt above the last), so
      // an older or stale attempt's late message never overwrites newer progress.
      if (typeof message.seq === "number") {
        if (message.seq <= lastSeq) return;
        lastSeq = message.seq;
      }
      update(root, message.run);
      if (message.run.is_finished && !reloaded) {
        reloaded = true;
        if (link) link.stop();
        if (poller) window.clearInterval(poller);
        window.setTimeout(function () { window.location.reload(); }, 300);
      }
    }
    function poll() {
      if (poller || !statusUrl) return;
      poller = window.setInterval(function () {
        fetch(statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (response) { return response.ok ? response.json() : null; })
          .then(handle)
          .catch(function () { /* keep polling */ });
      }, 2000);
    }
    link = connect("/ws/pipeline/runs/" + encodeURIComponent(id) + "/", handle, poll);
  }

  function watchList(table) {
    connect("/ws/pipeline/runs/", function (message) {
      (message.runs || []).forEach(function (run) {
        var row = table.querySelector('[data-live-run="' + String(run.id) + '"]');
        if (row) update(row, run);
      });
    }, function () { /* the list stays as rendered */ });
  }

  function start() {
    var page = document.querySelector(".pa-run[data-live-run]");
    if (page && page.getAttribute("data-live-finished") === "0") watchRun(page);
    document.querySelectorAll("table[data-live-runs]").forEach(function (table) {
      if (table.querySelector("[data-live-run]")) watchList(table);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
