// Live updates of the residents' pages from the service's event stream (/api/events).
// A page that hears nothing (not even the 10 s heartbeat) for STALE_MS says so plainly.
"use strict";
(function () {
  const STALE_MS = 25000;
  const body = document.body;
  const page = body.dataset.page;
  const itemId = body.dataset.id;
  const labels = JSON.parse(document.getElementById("labels").textContent);
  const stale = document.getElementById("stale");
  const updated = document.getElementById("updated");
  let lastHeard = Date.now();
  let lost = false;
  // Per station or garage id, how many live events for it were applied: a fetched state
  // that an event overtook while it was on its way is older than the page, and is dropped.
  const applied = {};
  function bump(id) { applied[id] = (applied[id] || 0) + 1; }

  // Times in the district's clock and the page's language, as the server prints them.
  function localTime(iso) {
    return new Date(iso).toLocaleTimeString(document.documentElement.lang, {
      hour: "2-digit", minute: "2-digit", hour12: false, timeZone: labels.time_zone,
    });
  }
  function heard() {
    lastHeard = Date.now();
    if (updated) updated.textContent = updated.dataset.label + " " + localTime(new Date().toISOString());
    if (lost) { lost = false; stale.hidden = true; }
  }
  function setText(root, selector, value) {
    const el = root.querySelector(selector);
    if (el) el.textContent = value;
  }

  function applyStation(s) {
    document.querySelectorAll('[data-station="' + s.id + '"]').forEach(function (card) {
      setText(card, ".free-count", s.ports_free);
      setText(card, ".total", s.ports_total);
      card.classList.toggle("has-fault", !!s.fault);
      card.classList.toggle("is-offline", !s.online);
    });
    if (page === "station" && itemId === s.id && s.ports) {
      s.ports.forEach(function (p) {
        const row = document.querySelector('.port[data-port="' + p.port + '"]');
        if (!row) return;
        row.className = "port state-" + p.state;
        setText(row, ".state", labels.states[p.state] || p.state);
        const parts = [];
        if (p.state === "charging") {
          if (p.power_w !== null) parts.push(Math.round(p.power_w) + " W");
          if (p.free_estimate_at) parts.push(labels.free_at.replace("%(time)s", localTime(p.free_estimate_at)));
        }
        setText(row, ".detail", parts.join(" · "));
      });
    }
  }

  function applyGarage(g) {
    document.querySelectorAll('[data-garage="' + g.id + '"]').forEach(function (card) {
      setText(card, ".free-bays", g.free === null ? "–" : g.free);
      setText(card, ".capacity", g.capacity);
      card.classList.toggle("is-full", !!g.full);
      card.classList.toggle("is-offline", !g.online);
      card.classList.toggle("has-smoke", !!g.smoke_alert);
    });
    if (page === "garage" && itemId === g.id) {
      const smoke = document.querySelector(".smoke-warning");
      if (smoke) smoke.hidden = !g.smoke_alert;
      setText(document, ".occupancy", g.occupancy === null ? "–" : g.occupancy);
      (g.gates || []).forEach(function (gate) {
        const row = document.querySelector('.gate[data-gate="' + gate.gate + '"]');
        if (!row) return;
        const text = gate.open === null ? labels.unknown : (gate.open ? labels.gate_open : labels.gate_closed);
        setText(row, ".state", text);
      });
    }
  }

  // Each time the stream opens, events may have been missed (since the page was drawn, or
  // while the connection was lost): fetch the state again. The stream is subscribed before
  // it opens, so whatever changes after the fetch comes as an event.
  function refresh() {
    const before = Object.assign({}, applied);
    function unlessOvertaken(apply) {
      return function (item) { if ((applied[item.id] || 0) === (before[item.id] || 0)) apply(item); };
    }
    const station = unlessOvertaken(applyStation);
    const garage = unlessOvertaken(applyGarage);
    if (page === "index") {
      fetch("/api/stations").then(r => r.json()).then(list => list.forEach(station));
      fetch("/api/garages").then(r => r.json()).then(list => list.forEach(garage));
    } else if (page === "station") {
      fetch("/api/stations/" + encodeURIComponent(itemId)).then(r => r.json()).then(station);
    } else if (page === "garage") {
      fetch("/api/garages/" + encodeURIComponent(itemId)).then(r => r.json()).then(garage);
    }
  }

  function showLost() {
    if (!lost) { lost = true; stale.hidden = false; }
  }

  const source = new EventSource("/api/events");
  source.addEventListener("open", function () { heard(); refresh(); });
  source.addEventListener("heartbeat", heard);
  source.addEventListener("station", function (e) {
    heard();
    const s = JSON.parse(e.data);
    bump(s.id);
    applyStation(s);
  });
  source.addEventListener("garage", function (e) {
    heard();
    const g = JSON.parse(e.data);
    bump(g.id);
    applyGarage(g);
  });
  source.addEventListener("alert", heard);
  source.addEventListener("error", showLost);
  setInterval(function () { if (Date.now() - lastHeard > STALE_MS) showLost(); }, 2000);
  window.facilitiesLive = { source: source, isStale: function () { return lost; } };
})();
