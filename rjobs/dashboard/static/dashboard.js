// rjobs dashboard: live updates and form helpers, progressive enhancement of server-rendered
// pages (every page works without this script). No framework, nothing loaded from elsewhere:
// the Content-Security-Policy allows only scripts from /static.
(function () {
  "use strict";
  var body = document.body;
  var queue = body.dataset.queue;
  var jobId = body.dataset.job;
  var csrf = body.dataset.csrf;
  var live = document.getElementById("live");
  var timers = {};

  function later(name, ms, fn) {
    if (timers[name]) { return; }
    timers[name] = window.setTimeout(function () { timers[name] = null; fn(); }, ms);
  }

  function stamp(ms) {
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  }

  function age(ms) {
    var s = ms / 1000;
    if (s >= 3600) { return (s / 3600).toFixed(1) + " h"; }
    if (s >= 60) { return (s / 60).toFixed(1) + " min"; }
    return s.toFixed(1) + " s";
  }

  function say(text, bad) {
    var main = document.querySelector("main");
    var p = document.querySelector("main > p.message");
    if (!p) {
      p = document.createElement("p");
      p.setAttribute("role", "status");
      main.insertBefore(p, main.firstChild);
    }
    p.className = bad ? "message error" : "message";
    p.textContent = text;
  }

  // -- forms: confirmation, and actions sent with fetch (the page stays, live updates show them)
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      ev.preventDefault();
      return;
    }
    if (!form.classList.contains("js-action")) { return; }
    ev.preventDefault();
    var data = new URLSearchParams(new FormData(form));
    if (ev.submitter && ev.submitter.name) { data.append(ev.submitter.name, ev.submitter.value); }
    fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
    }).then(function (resp) {
      return resp.json().then(function (doc) { say(doc.message, !resp.ok); },
                              function () { say(resp.status + " " + resp.statusText, true); });
    }, function () { say("the dashboard did not answer", true); });
  });

  // the retry form's params must be JSON: say so before sending
  var params = document.getElementById("retry-params");
  if (params) {
    params.addEventListener("input", function () {
      var problem = document.getElementById("json-problem");
      var button = document.getElementById("retry");
      try {
        if (params.value.trim()) { JSON.parse(params.value); }
        problem.textContent = "";
        button.disabled = false;
      } catch (e) {
        problem.textContent = "not valid JSON";
        button.disabled = true;
      }
    });
  }

  if (!window.EventSource) { return; }

  // -- counts per state (of one queue, within ``scope``)
  function refreshCounts(name, scope) {
    fetch("/q/" + encodeURIComponent(name) + "/counts", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (doc) {
        scope.querySelectorAll(".n[data-state]").forEach(function (el) {
          var n = doc.counts[el.dataset.state];
          if (n !== undefined) { el.textContent = String(n); }
        });
      }, function () {});
  }

  function connect(url, onEntry) {
    var source = new EventSource(url);
    source.onopen = function () { if (live) { live.classList.add("on"); } };
    source.onerror = function () { if (live) { live.classList.remove("on"); } };
    source.onmessage = function (message) { onEntry(JSON.parse(message.data)); };
    return source;
  }

  if (!queue) {
    // the queues page: one stream per queue shown, its row's counts kept current
    document.querySelectorAll("table.queues tr[data-queue]").forEach(function (row) {
      var name = row.dataset.queue;
      if (!row.querySelector(".n[data-state]")) { return; }
      connect("/q/" + encodeURIComponent(name) + "/events", function () {
        later("counts:" + name, 500, function () { refreshCounts(name, row); });
      });
    });
    return;
  }
  var base = "/q/" + encodeURIComponent(queue);

  // -- the job list: new jobs appear, moved jobs change status
  var table = document.getElementById("jobs");
  var wanted = {};

  function fetchRows() {
    var ids = Object.keys(wanted);
    wanted = {};
    if (!ids.length) { return; }
    var q = new URLSearchParams({ ids: ids.join(",") });
    ["state", "type", "user", "code"].forEach(function (k) { if (table.dataset[k]) { q.set(k, table.dataset[k]); } });
    fetch(base + "/rows?" + q.toString(), { credentials: "same-origin" }).then(function (r) { return r.text(); })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html;  // rendered by the server with every value escaped
        var rows = Array.prototype.slice.call(t.content.querySelectorAll("tr[data-job-id]"));
        rows.reverse().forEach(function (tr) {
          if (!table.querySelector('tr[data-job-id="' + CSS.escape(tr.dataset.jobId) + '"]')) {
            tr.classList.add("new");
            table.insertBefore(tr, table.firstChild);
          }
        });
        var none = document.getElementById("no-jobs");
        if (none && rows.length) { none.remove(); }
      }, function () {});
  }

  function onListEntry(doc) {
    var row = table.querySelector('tr[data-job-id="' + CSS.escape(doc.job) + '"]');
    if (row && doc.to) {
      row.querySelector('[data-field="status"]').textContent = doc.to;
      row.className = "state-" + doc.to + (table.dataset.state && doc.to !== table.dataset.state ? " moved" : "");
      if (isFinal(table, doc.to)) {
        row.querySelectorAll("form").forEach(function (form) { form.remove(); });
      }
    } else if (row && doc.event === "progress") {
      var bar = row.querySelector("progress");
      if (bar) { bar.value = Number(doc.data) || 0; }
    } else if (!row && doc.to && table.dataset.live === "true" &&
               (!table.dataset.state || doc.to === table.dataset.state)) {
      wanted[doc.job] = true;
      later("rows", 300, fetchRows);
    }
  }

  function isFinal(el, state) {
    return (el.dataset.finals || "").split(" ").indexOf(state) >= 0;
  }

  // -- one job: history, status and the progress bar
  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text || "";
    tr.appendChild(td);
  }

  function refreshJob() {
    fetch(base + "/job/" + encodeURIComponent(jobId) + "/json", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (job) {
        if (job.status !== body.dataset.status && isFinal(body, job.status)) {
          window.location.reload();  // finished: the result or error, and the retry form
          return;
        }
        var status = document.getElementById("status");
        status.textContent = job.status;
        status.className = "state-" + job.status;
        var p = job.progress || {};
        document.getElementById("progress").value = p.percent || 0;
        document.getElementById("progress-text").textContent = Math.round(p.percent || 0) + "%";
        document.getElementById("progress-step").textContent = p.step || "";
        document.getElementById("progress-eta").textContent =
          p.eta_ms && !job.completed_ms ? "ETA " + age(p.eta_ms) : "";
      }, function () {});
  }

  function onJobEntry(doc) {
    var tr = document.createElement("tr");
    tr.className = "new";
    cell(tr, stamp(Number(doc.id.split("-")[0])));
    cell(tr, doc.event);
    cell(tr, doc.to ? (doc.from || "") + " → " + doc.to : "");
    cell(tr, doc.actor + (doc.op === "1" ? " (operator)" : ""));
    cell(tr, doc.attempt);
    cell(tr, doc.msg);
    cell(tr, doc.data);
    document.getElementById("history").appendChild(tr);
    if (doc.event === "progress") {
      document.getElementById("progress").value = Number(doc.data) || 0;
      document.getElementById("progress-text").textContent = Math.round(Number(doc.data) || 0) + "%";
      document.getElementById("progress-step").textContent = doc.msg || "";
    }
    later("job", 250, refreshJob);
  }

  connect(base + "/events" + (jobId ? "?job=" + encodeURIComponent(jobId) : ""), function (doc) {
    if (jobId) {
      onJobEntry(doc);
      return;
    }
    later("counts", 500, function () { refreshCounts(queue, document); });
    if (table) { onListEntry(doc); }
  });
})();
