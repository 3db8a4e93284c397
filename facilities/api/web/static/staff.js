// The staff console: sign in with a staff token (kept for this browser tab only), open
// alerts newest first, acknowledge, the commands sent and their outcome, what the service
// switched off (why, since when, a button to switch it back on), port power.
"use strict";
(function () {
  const labels = JSON.parse(document.getElementById("labels").textContent);
  const KEY = "facilities-staff-token";
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY);

  function api(method, path, body) {
    const init = { method: method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.json().then(function (data) { return { status: r.status, data: data }; });
    });
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString(document.documentElement.lang, {
      dateStyle: "short", timeStyle: "medium", hour12: false, timeZone: labels.time_zone,
    }) : "";
  }

  function alertItem(a) {
    const li = document.createElement("li");
    li.className = "alert severity-" + a.severity + " state-" + a.state;
    li.dataset.alert = a.id;
    const title = document.createElement("div");
    title.className = "title";
    const rule = labels.rules[a.rule] || a.rule;
    title.textContent = (labels.severity[a.severity] || a.severity) + " · " + rule + " · " + a.subject;
    title.title = a.rule;  // the rule's id (docs/rules.md), for the record
    const meta = document.createElement("div");
    meta.className = "meta";
    let text = labels.raised_at.replace("%(time)s", when(a.raised_at));
    if (a.value !== null) text += " · " + a.value + (a.peak !== null ? " (max " + a.peak + ")" : "");
    if (a.acknowledged_by) text += " · " + labels.acknowledged_by.replace("%(who)s", a.acknowledged_by);
    meta.textContent = text;
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.textContent = a.actions.length
      ? a.actions.map(c => c.action + " " + c.target + ": " + (labels.outcomes[c.outcome] || c.outcome)).join(" · ")
      : labels.no_actions;
    li.append(title, meta, actions);
    if (a.state === "active") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ack";
      button.textContent = labels.acknowledge;
      button.addEventListener("click", function () {
        button.disabled = true;
        api("POST", "/api/alerts/" + encodeURIComponent(a.id) + "/ack").then(load);
      });
      li.append(button);
    }
    return li;
  }

  function power(station, port, on) {
    $("power-result").textContent = "…";
    return api("POST", "/api/stations/" + station + "/ports/" + port + "/power", { on: on }).then(function (answer) {
      $("power-result").textContent = answer.status === 200
        ? labels.power_done
        : labels.power_failed.replace("%(detail)s", answer.data.detail || answer.status);
      load();
    });
  }

  function cutoffItem(c) {
    const li = document.createElement("li");
    li.className = "cutoff " + (c.held ? "held" : "released");
    li.dataset.alert = c.alert_id;
    const title = document.createElement("div");
    title.className = "title";
    const target = c.gate !== null ? c.device + "/" + c.gate : c.device + "/" + c.port;
    title.textContent = target + " · " + (labels.rules[c.rule] || c.rule);
    title.title = c.rule + " · " + c.alert_id;
    const meta = document.createElement("div");
    meta.className = "meta";
    const since = (c.gate !== null ? labels.cutoff_open : labels.cutoff_off).replace("%(time)s", when(c.since));
    meta.textContent = [since, c.whole_station ? labels.cutoff_station : null,
      c.held ? labels.cutoff_held : labels.cutoff_released].filter(Boolean).join(" · ");
    li.append(title, meta);
    if (c.switch_on) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "switch-on";
      button.textContent = labels.switch_on;
      button.title = c.switch_on;
      button.addEventListener("click", function () {
        button.disabled = true;
        power(c.device, c.port, true);
      });
      li.append(button);
    }
    return li;
  }

  function loadCutoffs() {
    api("GET", "/api/cutoffs").then(function (answer) {
      const items = answer.status === 200 ? answer.data.items : [];
      $("cutoffs").replaceChildren(...items.map(cutoffItem));
      $("no-cutoffs").hidden = items.length > 0;
    });
  }

  // Stations change every few seconds across the district: one reload per 2 s at most.
  let cutoffsSoon = null;
  function reloadCutoffsSoon() {
    if (cutoffsSoon === null) {
      cutoffsSoon = setTimeout(function () { cutoffsSoon = null; loadCutoffs(); }, 2000);
    }
  }

  function load() {
    loadCutoffs();
    Promise.all([
      api("GET", "/api/alerts?state=active&limit=200"),
      api("GET", "/api/alerts?state=acknowledged&limit=200"),
    ]).then(function (answers) {
      if (answers.some(x => x.status === 401 || x.status === 403)) { signOut(labels.bad_token); return; }
      const all = answers.flatMap(x => x.data.items || []);
      all.sort((x, y) => (x.raised_at < y.raised_at ? 1 : -1));  // newest first
      const list = $("alerts");
      list.replaceChildren(...all.map(alertItem));
      $("no-alerts").hidden = all.length > 0;
    });
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    token = null;
    $("console").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
  }

  function signIn() {
    api("GET", "/api/me").then(function (answer) {
      if (answer.status !== 200 || answer.data.role !== "staff") { signOut(labels.bad_token); return; }
      sessionStorage.setItem(KEY, token);
      $("who").textContent = answer.data.name + " (" + answer.data.id + ")";
      $("login").hidden = true;
      $("console").hidden = false;
      load();
    });
  }

  $("login").addEventListener("submit", function (e) {
    e.preventDefault();
    token = $("token").value.trim();
    signIn();
  });
  $("logout").addEventListener("click", function () { signOut(""); });
  $("power").addEventListener("submit", function (e) {
    e.preventDefault();
    const on = e.submitter && e.submitter.value === "true";
    power($("power-station").value, $("power-port").value, on);
  });

  // New, acknowledged and cleared alerts come over the live stream: reload the lists. A port
  // reported back on changes a station: the list of what is switched off follows.
  const source = new EventSource("/api/events");
  source.addEventListener("alert", function () { if (token) load(); });
  source.addEventListener("station", function () { if (token) reloadCutoffsSoon(); });
  if (token) signIn();
})();
