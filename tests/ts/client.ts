// An app developer's client: generated from the service's /openapi.json (openapi-typescript,
// into ./api.d.ts by tests/test_api_contract.py) and called with openapi-fetch. No type here
// is written by hand: every body, error and event is a type of the document. It calls every
// operation of the document and reads the live stream's event union, then prints what it
// saw as one JSON line: {"calls": {operationId: status}, "events": [...], "problems": [...]}.
// Usage: node client.js BASE_URL STAFF_TOKEN RESIDENT_TOKEN
import createClient from "openapi-fetch";
import type { components, paths } from "./api.js";

type LiveEvent = components["schemas"]["LiveEvent"];

const [base, staffToken, residentToken] = process.argv.slice(2);
const calls: Record<string, number> = {};
const problems: string[] = [];
const events: string[] = [];

function expect(ok: boolean, what: string): void {
  if (!ok) problems.push(what);
}

function client(token?: string) {
  return createClient<paths>({
    baseUrl: base,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
}

async function publicStatus(): Promise<void> {
  const api = client();
  const health = await api.GET("/healthz");
  calls.healthz = health.response.status;
  expect(health.data?.status === "ok", "healthz: not ok");
  const metrics = await api.GET("/metrics", { parseAs: "text" });
  calls.metrics = metrics.response.status;
  expect((metrics.data ?? "").includes("# HELP"), "metrics: no exposition");
  const communities = await api.GET("/api/communities");
  calls.communities = communities.response.status;
  expect((communities.data ?? []).length > 0, "communities: none");
  const stations = await api.GET("/api/stations");
  calls.stations = stations.response.status;
  const first = stations.data?.[0];
  expect(first !== undefined, "stations: none");
  if (first) {
    const one = await api.GET("/api/stations/{station_id}", {
      params: { path: { station_id: first.id } },
    });
    calls.station = one.response.status;
    for (const port of one.data?.ports ?? []) {
      // an enum: a typo in the compared value would not compile
      expect(port.state === "unknown" || port.state !== "fault" || !port.free, "port state");
    }
  }
  const garages = await api.GET("/api/garages");
  calls.garages = garages.response.status;
  const missing = await api.GET("/api/garages/{garage_id}", {
    params: { path: { garage_id: "no-such-garage" } },
  });
  calls.garage = missing.response.status;
  expect(missing.error?.error === "not_found", "garage: unknown id not a not_found");
}

async function resident(): Promise<void> {
  const api = client(residentToken);
  const me = await api.GET("/api/me");
  calls.me = me.response.status;
  const garage = me.data?.garages[0];
  expect(me.data?.role === "resident" && garage !== undefined, "me: not a resident with a garage");
  if (!garage) return;
  const open = await api.POST("/api/garages/{garage_id}/gates/{gate_id}/open", {
    params: {
      path: { garage_id: garage.id, gate_id: garage.gates[0] },
      header: { "Idempotency-Key": `ts-${Date.now()}` },
    },
  });
  calls.open_gate = open.response.status;
  // no gate answers here: a 504 whose body names the command sent
  if (open.error && "command_id" in open.error) {
    expect(open.error.error === "device_timeout", `open_gate: ${open.error.error}`);
    expect(open.error.command_id.length > 0, "open_gate: no command_id");
  } else {
    expect(open.data?.status === "opened", "open_gate: neither opened nor a command error");
  }
}

async function staff(): Promise<void> {
  const api = client(staffToken);
  const alerts = await api.GET("/api/alerts", { params: { query: { state: "active", limit: 5 } } });
  calls.alerts = alerts.response.status;
  expect(alerts.data !== undefined && "next_cursor" in alerts.data, "alerts: no next_cursor");
  const ack = await api.POST("/api/alerts/{alert_id}/ack", {
    params: { path: { alert_id: "no-such-alert" } },
  });
  calls.acknowledge = ack.response.status;
  expect(ack.error?.error === "not_found", "acknowledge: unknown alert not a not_found");
  const power = await api.POST("/api/stations/{station_id}/ports/{port}/power", {
    params: { path: { station_id: "cs-01", port: 1 } },
    body: { on: false },
  });
  calls.power = power.response.status;
  if (power.error && "command_id" in power.error) {
    expect(power.error.error === "device_timeout", `power: ${power.error.error}`);
  }
  const quarantined = await api.GET("/api/quarantine", {
    params: { query: { reason: "malformed_json", limit: 5 } },
  });
  calls.quarantine = quarantined.response.status;
  expect(quarantined.data !== undefined && "next_cursor" in quarantined.data, "quarantine: no next_cursor");
  for (const q of quarantined.data?.items ?? []) expect(q.reason === "malformed_json", "quarantine: reason");
  const cutoffs = await api.GET("/api/cutoffs");
  calls.cutoffs = cutoffs.response.status;
  expect(Array.isArray(cutoffs.data?.items), "cutoffs: no items");
  const sessions = await api.GET("/api/stations/{station_id}/sessions", {
    params: { path: { station_id: "cs-01" }, query: { limit: 10 } },
  });
  calls.sessions = sessions.response.status;
  for (const s of sessions.data?.items ?? []) events.push(`session ${s.end_reason}`);
  const raw = await api.GET("/api/stations/{station_id}/telemetry", {
    params: { path: { station_id: "cs-01" } },
  });
  const buckets = await api.GET("/api/stations/{station_id}/telemetry", {
    params: { path: { station_id: "cs-01" }, query: { step: 300 } },
  });
  calls.telemetry = buckets.response.status;
  // the discriminator narrows the page to its items' type
  for (const page of [raw.data, buckets.data]) {
    if (page?.kind === "raw") expect(page.items.every((i) => i.seq >= 0), "raw: seq");
    else if (page?.kind === "buckets") expect(page.items.every((b) => b.samples > 0), "buckets");
    else problems.push("telemetry: no kind");
  }
  expect(raw.data?.kind === "raw" && buckets.data?.kind === "buckets", "telemetry: kinds");
  const audit = await api.GET("/api/audit", { params: { query: { limit: 1 } } });
  calls.audit_log = audit.response.status;
  const cursor = audit.data?.next_cursor;
  if (cursor) {
    const next = await api.GET("/api/audit", { params: { query: { limit: 1, cursor } } });
    expect(next.response.status === 200, "audit: next_cursor refused");
  }
}

async function stream(): Promise<void> {
  // openapi-fetch reads the response as a stream; the events are the document's LiveEvent
  const api = client(staffToken);
  const opened = await api.GET("/api/events", { parseAs: "stream" });
  calls.events = opened.response.status;
  const body = opened.data;
  if (!body) {
    problems.push("events: no stream");
    return;
  }
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  // until the heartbeat: alerts raised by the calls above (their commands time out) may come
  // first, when the stream opens before they are raised
  while (!events.some((e) => e.startsWith("event heartbeat"))) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    let end: number;
    while ((end = text.indexOf("\n\n")) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const fields = new Map(
        block.split("\n").map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 2)]),
      );
      if (!fields.has("event")) continue;
      const event = JSON.parse(
        `{"id": ${fields.get("id")}, "event": ${JSON.stringify(fields.get("event"))}, "data": ${fields.get("data")}}`,
      ) as LiveEvent;
      events.push(`event ${describe(event)}`);
    }
  }
  await reader.cancel();
}

function describe(event: LiveEvent): string {
  switch (event.event) {
    case "station":
      return `station ${event.data.id} ${event.data.ports_free}/${event.data.ports_total}`;
    case "garage":
      return `garage ${event.data.id} ${event.data.free ?? "?"}`;
    case "alert":
      return `alert ${event.data.rule} ${event.data.change}`;
    case "heartbeat":
      return `heartbeat ${event.data.at}`;
    case "lagged":
    case "closing":
      return `${event.event} ${event.data.reason}`;
  }
}

async function main(): Promise<void> {
  await publicStatus();
  await resident();
  await staff();
  await stream();
  console.log(JSON.stringify({ calls, events, problems }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
