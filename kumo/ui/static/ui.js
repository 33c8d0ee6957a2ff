// Kumo's live picture (docs/ui.md). The topology is drawn by the API (Graphviz SVG, /ui/topology.svg); this
// script inlines it, refreshes it every REFRESH_MS, shows what a clicked node is, and traces packets.
// The token (when the API needs one) is kept in this tab's sessionStorage; a link may carry it in its
// fragment (#token=...), which browsers never send to a server, and the script removes it from the address.
"use strict";

const REFRESH_MS = 5000;
let selected = null; // {kind: "port"|"device", id}
const names = new Map(); // object id -> its name as drawn (ids in a journey are shown by name)
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

function token() {
  return sessionStorage.getItem("kumo-token");
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const answer = await fetch(path, { ...options, headers });
  if (answer.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("this API needs a token (enter it above)");
  }
  if (!answer.ok) {
    let message = `${answer.status}`;
    try {
      const body = await answer.json();
      message = `${body.message || body.error} (${answer.status})`;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return answer;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function status(text, state) {
  const line = document.getElementById("status");
  line.textContent = text;
  line.dataset.state = state;
}

// --- the picture ---------------------------------------------------------------------------------------------
async function refresh() {
  try {
    const text = await (await api("/ui/topology.svg", { headers: { Accept: "image/svg+xml" } })).text();
    const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
    const drawing = document.importNode(parsed.documentElement, true);
    const holder = document.getElementById("graph");
    holder.replaceChildren(drawing);
    for (const node of drawing.querySelectorAll("g.node")) {
      node.addEventListener("click", () => choose(node.id));
      const label = node.querySelector("text");
      if (label) names.set(node.id.slice(node.id.indexOf("-") + 1), label.textContent);
    }
    highlight();
    const devices = drawing.querySelectorAll("g.kumo-device").length;
    const ports = drawing.querySelectorAll("g.kumo-port").length;
    status(`${devices} devices, ${ports} ports · updated ${new Date().toLocaleTimeString()}`, "ok");
  } catch (error) {
    status(`cannot draw the topology: ${error.message}`, "error");
  }
}

function highlight() {
  for (const node of document.querySelectorAll("#graph g.node")) {
    node.classList.toggle("selected", selected !== null && node.id === `${selected.kind}-${selected.id}`);
  }
}

async function choose(nodeId) {
  const dash = nodeId.indexOf("-");
  const kind = nodeId.slice(0, dash);
  const id = nodeId.slice(dash + 1);
  if (kind !== "port" && kind !== "device") return;
  selected = { kind, id };
  highlight();
  if (kind === "port") document.querySelector("#trace-form [name=port]").value = id;
  const details = document.getElementById("details");
  details.replaceChildren(el("p", "loading…"));
  try {
    details.replaceChildren(...(kind === "port" ? await portDetails(id) : await deviceDetails(id)));
  } catch (error) {
    details.replaceChildren(el("p", error.message, { class: "error" }));
  }
}

async function portDetails(id) {
  const port = await (await api(`/v1/ports/${id}`)).json();
  const stats = await (await api(`/v1/ports/${id}/stats`)).json();
  const rows = [
    ["id", port.id],
    ["device", port.device_id],
    ["address", port.port_address ? `${port.port_address} (${port.network_cidr})` : port.mac_address],
    ["bound to", port.host_id ? `${port.interface_name} on host ${port.host_id}` : "not bound"],
    ["peer", port.peer_id],
    ["traffic", stats.host_id ? `rx ${stats.rx_packets} pkts / ${stats.rx_bytes} B, tx ${stats.tx_packets} pkts / ${stats.tx_bytes} B` : "no agent reports it"],
    ["dropped", stats.host_id ? stats.dropped : null],
    ["upcalls", stats.host_id ? stats.upcalls : null],
  ];
  return [el("h2", `port ${port.name || port.id}`), table(rows), ...(await chains(port))];
}

async function deviceDetails(id) {
  for (const kind of ["bridges", "routers"]) {
    const answer = await fetch(`/v1/${kind}/${id}`, { headers: token() ? { Authorization: `Bearer ${token()}` } : {} });
    if (answer.ok) {
      const device = await answer.json();
      const rows = [["id", device.id], ["kind", kind.slice(0, -1)], ["tenant", device.tenant_id]];
      return [el("h2", `${kind.slice(0, -1)} ${device.name || device.id}`), table(rows), ...(await chains(device))];
    }
  }
  throw new Error(`no bridge or router ${id}`);
}

async function chains(obj) {
  const out = [];
  for (const [field, title] of [["inbound_filter_id", "inbound filter"], ["outbound_filter_id", "outbound filter"]]) {
    if (!obj[field]) continue;
    const chain = await (await api(`/v1/chains/${obj[field]}`)).json();
    const rules = await (await api(`/v1/chains/${obj[field]}/rules`)).json();
    out.push(el("h2", `${title}: chain ${chain.name || chain.id}`));
    const list = rules.map((rule) => [rule.position, rule.type, describeRule(rule)]);
    out.push(list.length ? table(list, ["#", "action", "matches"]) : el("p", "no rules: accepts everything"));
  }
  if (!out.length) out.push(el("p", "no filters"));
  return out;
}

function describeRule(rule) {
  const skip = new Set(["id", "chain_id", "position", "type", "tenant_id", "flow_action"]);
  return Object.entries(rule)
    .filter(([name, value]) => !skip.has(name) && value !== null && value !== false && !(Array.isArray(value) && !value.length))
    .map(([name, value]) => `${name}=${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join(" ");
}

function table(rows, head = null) {
  const node = el("table");
  if (head) {
    const tr = el("tr");
    for (const cell of head) tr.append(el("th", cell));
    node.append(tr);
  }
  for (const row of rows) {
    if (row[1] === null || row[1] === undefined) continue;
    const tr = el("tr");
    for (const cell of row) tr.append(el("td", cell));
    node.append(tr);
  }
  return node;
}

// --- tracing -------------------------------------------------------------------------------------------------
async function trace(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const packet = { ip_src: form.get("src"), ip_dst: form.get("dst"), proto: form.get("proto") };
  if (form.get("proto") !== "icmp") {
    packet.src_port = Number(form.get("sport") || 40000);
    packet.dst_port = Number(form.get("dport") || 80);
  }
  const journey = document.getElementById("journey");
  journey.replaceChildren(el("p", "tracing…"));
  delete journey.dataset.action;
  try {
    const body = JSON.stringify({ ingress_port_id: form.get("port"), packet });
    const answer = await api("/v1/traces", { method: "POST", body, headers: { "Content-Type": "application/json" } });
    const result = await answer.json();
    const named = (text) => text.replace(UUID, (id) => names.get(id) || id);
    const steps = result.steps.map((step, i) => [i + 1, step.stage || step.device_type, named(step.what)]);
    const action = result.result.action;
    const egress = (result.result.egress_port_ids || []).map(named).join(", ");
    journey.replaceChildren(
      el("h2", "journey"),
      table(steps, ["#", "stage", "what"]),
      el("p", `result: ${action}${egress ? ` to ${egress}` : ""}`, { class: action === "drop" ? "result-drop" : "result-ok" }),
    );
    journey.dataset.action = action;
  } catch (error) {
    journey.replaceChildren(el("p", `trace failed: ${error.message}`, { class: "error" }));
    journey.dataset.action = "error";
  }
}

// A link may describe a trace (?port=ID&src=A&dst=B&proto=tcp&dport=80[&sport=N]): the page runs it once.
function traceFromAddress() {
  const query = new URLSearchParams(location.search);
  if (!query.get("port")) return;
  const form = document.getElementById("trace-form");
  for (const name of ["port", "src", "dst", "proto", "sport", "dport"]) {
    if (query.get(name)) form.elements[name].value = query.get(name);
  }
  form.requestSubmit();
}

function tokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("kumo-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  tokenFromAddress();
  document.getElementById("trace-form").addEventListener("submit", trace);
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("kumo-token", document.getElementById("token").value.trim());
    event.target.hidden = true;
    refresh();
  });
  refresh().then(traceFromAddress);
  setInterval(refresh, REFRESH_MS);
});
