// The staff console: sign in with a staff token (kept for this browser tab only), open
// alerts newest first, acknowledge, the commands sent and their outcome, what the service
// switched off (why, since when, and a button to switch it back on once that is allowed),
// port power. Places by their names, values with their units, dates in the page's language.
"use strict";
(function () {
  const json = (id) => JSON.parse(document.getElementById(id).textContent);
  const labels = json("labels");
  const text = json("console-labels");
  const places = json("places");
  const lang = document.documentElement.lang;
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

  // "%(time)s" and the like, as in the catalogs
  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, (all, key) => (key in values ? values[key] : all));
  }

  // A date and time on the district's clock, written as the page's language writes them
  // (zh-CN: 2026年12月3日 15:28:35; en: 3 Dec 2026, 15:28:35), never a bare 12/3/26.
  const dates = new Intl.DateTimeFormat(lang === "en" ? "en-GB" : lang, {
    dateStyle: "medium", timeStyle: "medium", hour12: false, timeZone: labels.time_zone,
  });
  function when(iso) { return iso ? dates.format(new Date(iso)) : ""; }

  function number(value, digits) {
    return new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(value);
  }

  function duration(seconds) {
    const s = Math.round(Math.abs(seconds));
    if (s >= 3600) {
      return fill(text.duration.hours, { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    }
    if (s >= 60) return fill(text.duration.minutes, { m: Math.floor(s / 60) });
    return fill(text.duration.seconds, { s: s });
  }

  // A rule's value with its unit: "66 °C", "silent for 5 min"; a rule without one: the number.
  function measure(rule, value) {
    const how = text.values[rule];
    if (!how) return number(value, 1);
    return fill(how.text, { value: how.duration ? duration(value) : number(value, how.digits) });
  }

  function valueText(a) {
    if (a.value === null) return null;
    let shown = measure(a.rule, a.value);
    if (a.peak !== null && measure(a.rule, a.peak) !== shown) {
      shown += " (" + fill(text.peak, { value: measure(a.rule, a.peak) }) + ")";
    }
    return shown;
  }

  // cs-07 → its station's name; cs-07/3 → "name, socket 3"; g-hc3/north → "North gate at name"
  // (the gate's own name from the site file; its id when it has none)
  function place(subject) {
    const [device, part] = subject.split("/");
    const station = places.stations[device];
    if (station !== undefined) {
      return part === undefined ? station : fill(text.station_part, { station: station, port: part });
    }
    const garage = places.garages[device];
    if (garage !== undefined) {
      if (part === undefined) return garage;
      return fill(text.garage_part, { garage: garage, gate: places.gates[subject] || part });
    }
    return subject;  // a device no longer in the site file: its id is all there is
  }

  const ruleName = (rule) => labels.rules[rule] || rule;

  function commandText(c) {
    return fill(text.outcome, {
      command: text.commands[c.action] || c.action,
      target: place(c.target),
      outcome: labels.outcomes[c.outcome] || text.outcomes[c.outcome] || c.outcome,
    });
  }

  function alertItem(a) {
    const li = document.createElement("li");
    li.className = "alert severity-" + a.severity + " state-" + a.state;
    li.dataset.alert = a.id;
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = [labels.severity[a.severity] || a.severity, ruleName(a.rule), place(a.subject)].join(" · ");
    title.title = a.rule + " · " + a.subject;  // the rule's id (docs/rules.md) and the subject's
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = a.acknowledged_by_name || a.acknowledged_by;
    meta.textContent = [
      fill(labels.raised_at, { time: when(a.raised_at) }),
      valueText(a),
      who ? fill(labels.acknowledged_by, { who: who }) : null,
    ].filter(Boolean).join(" · ");
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.textContent = a.actions.length ? a.actions.map(commandText).join(" · ") : labels.no_actions;
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

  // A power request's answer, in the page's language (the API's detail stays as a tooltip).
  function answerText(answer) {
    if (answer.status === 200) return labels.power_done;
    return text.refused[answer.status]
      || fill(labels.power_failed, { detail: answer.data.detail || answer.status });
  }

  function power(station, port, on) {
    return api("POST", "/api/stations/" + encodeURIComponent(station) + "/ports/" + port + "/power", { on: on });
  }

  // What the service switched off: one entry per port (with every rule that cut it), per
  // gate, or per whole station (its ports share the alert), with why, since when, and what
  // still keeps it off.
  function groups(items) {
    const found = new Map();
    for (const c of items) {
      const key = c.whole_station
        ? [c.device, "*", c.alert_id].join(" ")
        : [c.device, c.gate !== null ? "gate " + c.gate : c.port].join(" ");
      const group = found.get(key);
      if (group) group.items.push(c);
      else found.set(key, { key: key, first: c, items: [c] });
    }
    return [...found.values()];
  }

  // Why the entry stays off, by reason, each rule named once: acknowledge “A”, “B” first.
  function blockers(group) {
    const rules = new Map();  // reason → the rules' names
    for (const c of group.items) {
      for (const b of c.switch_on_blocked) {
        if (!rules.has(b.reason)) rules.set(b.reason, new Set());
        if (b.rule) rules.get(b.reason).add("“" + ruleName(b.rule) + "”");
      }
    }
    return [...rules].map(function ([reason, names]) {
      return fill(text.blocked[reason] || reason, { rules: [...names].join(text.comma) });
    });
  }

  const notes = new Map();  // a group's last switch-on answer, kept across redraws

  function cutoffItem(group) {
    const c = group.first;
    const held = group.items.some((x) => x.held);
    const rules = [...new Set(group.items.map((x) => x.rule))];
    const li = document.createElement("li");
    li.className = "cutoff " + (held ? "held" : "released") + (c.whole_station ? " whole-station" : "");
    li.dataset.alert = c.alert_id;
    li.dataset.device = c.device;
    li.dataset.kind = c.whole_station ? "station" : c.kind;
    if (!c.whole_station && c.port !== null) li.dataset.port = c.port;
    const title = document.createElement("div");
    title.className = "title";
    const target = c.whole_station
      ? fill(text.whole_station, { station: place(c.device), count: group.items.length })
      : place(c.device + "/" + (c.gate !== null ? c.gate : c.port));
    title.textContent = target + " · " + rules.map(ruleName).join(text.comma);
    title.title = group.items.map((x) => x.rule + " · " + x.subject + " · " + x.alert_id).join("\n");
    const meta = document.createElement("div");
    meta.className = "meta";
    const since = group.items.reduce((x, y) => (y.since < x ? y.since : x), c.since);
    meta.textContent = [
      fill(c.gate !== null ? labels.cutoff_open : labels.cutoff_off, { time: when(since) }),
      held ? labels.cutoff_held : labels.cutoff_released,
    ].join(" · ");
    li.append(title, meta);
    if (c.switch_on === null) return li;  // a gate: it may close once the alert is over
    const why = blockers(group);
    const status = document.createElement("p");
    status.className = "status";
    status.setAttribute("role", "status");
    if (why.length) {
      status.classList.add("not-yet");
      status.textContent = fill(text.not_yet, { why: why.join(text.semicolon) });
      li.append(status);
      return li;
    }
    const note = notes.get(group.key);
    if (note) { status.textContent = note.text; status.title = note.detail; }
    const button = document.createElement("button");
    button.type = "button";
    button.className = "switch-on";
    button.textContent = c.whole_station ? text.switch_on_all : labels.switch_on;
    button.addEventListener("click", function () {
      button.disabled = true;
      status.textContent = text.switching;
      switchOn(group).then(function (answer) {
        notes.set(group.key, { text: answerText(answer), detail: answer.data.detail || "" });
        status.textContent = answerText(answer);
        loadCutoffs();
      });
    });
    li.append(button, status);
    return li;
  }

  // Each port of the entry in turn, through the staff power route (its checks, its audit);
  // the first refusal stops the rest.
  function switchOn(group) {
    const ports = [...new Set(group.items.map((c) => c.port))];
    let last = { status: 200, data: {} };
    return ports.reduce(function (chain, port) {
      return chain.then(function () {
        if (last.status !== 200) return undefined;
        return power(group.first.device, port, true).then(function (answer) { last = answer; });
      });
    }, Promise.resolve()).then(() => last);
  }

  function loadCutoffs() {
    api("GET", "/api/cutoffs").then(function (answer) {
      const found = groups(answer.status === 200 ? answer.data.items : []);
      const keys = new Set(found.map((g) => g.key));
      for (const key of [...notes.keys()]) if (!keys.has(key)) notes.delete(key);
      $("cutoffs").replaceChildren(...found.map(cutoffItem));
      $("no-cutoffs").hidden = found.length > 0;
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
    $("power-result").textContent = "…";
    power($("power-station").value, $("power-port").value, on).then(function (answer) {
      $("power-result").textContent = answerText(answer);
      $("power-result").title = answer.data.detail || "";
      load();
    });
  });
  $("power-station").addEventListener("change", function () {
    const option = $("power-station").selectedOptions[0];
    if (option) $("power-port").max = option.dataset.ports;
  });

  // New, acknowledged and cleared alerts come over the live stream: reload the lists. A port
  // reported back on changes a station: the list of what is switched off follows.
  const source = new EventSource("/api/events");
  source.addEventListener("alert", function () { if (token) load(); });
  source.addEventListener("station", function () { if (token) reloadCutoffsSoon(); });
  if (token) signIn();
})();
