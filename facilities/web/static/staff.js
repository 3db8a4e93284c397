// The staff console: sign in with a staff token (kept for this browser tab only), open
// alerts newest first, acknowledge, the commands sent and their outcome, port power.
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
    title.title = a.rule;  // the rule's id (RULES.md), for the record
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

  function load() {
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
    const station = $("power-station").value;
    const port = $("power-port").value;
    $("power-result").textContent = "…";
    api("POST", "/api/stations/" + station + "/ports/" + port + "/power", { on: on }).then(function (answer) {
      $("power-result").textContent = answer.status === 200
        ? labels.power_done
        : labels.power_failed.replace("%(detail)s", answer.data.detail || answer.status);
      load();
    });
  });

  // New, acknowledged and cleared alerts come over the live stream: reload the list.
  const source = new EventSource("/api/events");
  source.addEventListener("alert", function () { if (token) load(); });
  if (token) signIn();
})();
