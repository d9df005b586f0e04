// Fleet page: polls /api/fleet every 2 s and renders one row per station. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);

function kw(w) {
  if (w === null || w === undefined || !Number.isFinite(w)) return "—";
  return (w / 1000).toFixed(1) + " kW";
}

function num(v, digits, unit) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return v.toFixed(digits) + unit;
}

function since(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return "—";
  return t.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function stateCell(row, st) {
  const td = cell(row, "");
  const span = document.createElement("span");
  const word = st.online === true ? "online" : st.online === false ? "offline" : "unknown";
  span.className = "state state-" + word;
  span.textContent = word;
  td.appendChild(span);
}

function alarmsCell(row, alarms) {
  const td = cell(row, "");
  if (!alarms.length) {
    const ok = document.createElement("span");
    ok.className = "alarm-none";
    ok.textContent = "none";
    td.appendChild(ok);
    return;
  }
  const ul = document.createElement("ul");
  ul.className = "alarm-list";
  for (const a of alarms) {
    const li = document.createElement("li");
    li.textContent = a.message || a.kind || "alarm";
    ul.appendChild(li);
  }
  td.appendChild(ul);
}

function linkCell(row, url) {
  const td = cell(row, "");
  if (typeof url === "string" && /^https?:\/\//.test(url)) {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = "open";
    a.rel = "noopener";
    td.appendChild(a);
  } else {
    td.textContent = "—";
    td.className = "muted";
  }
}

function row(st) {
  const s = st.summary || {};
  const today = s.today || {};
  const tr = document.createElement("tr");
  tr.dataset.station = st.id;
  tr.className = st.online === false ? "offline" : "";
  cell(tr, s.name && s.name !== st.id ? st.id + " · " + s.name : st.id);
  stateCell(tr, st);
  cell(tr, since(st.since));
  cell(tr, kw(s.grid_w), "r");
  cell(tr, kw(s.pv_w), "r");
  cell(tr, kw(s.battery_w), "r");
  cell(tr, kw(s.vehicles_w), "r");
  cell(tr, num(s.soc_pct, 0, " %"), "r");
  cell(tr, num(today.pv_kwh, 1, " kWh"), "r");
  cell(tr, num(today.ev_kwh, 1, " kWh"), "r");
  cell(tr, num(today.cost_cny, 2, " CNY"), "r");
  alarmsCell(tr, st.alarms || []);
  linkCell(tr, s.dashboard);
  return tr;
}

function total(stations, key) {
  let sum = 0;
  let any = false;
  for (const st of stations) {
    const v = st.online === true && st.summary ? st.summary[key] : null;
    if (Number.isFinite(v)) { sum += v; any = true; }
  }
  return any ? sum : null;
}

function render(fleet) {
  $("count-online").textContent = fleet.online;
  $("count-offline").textContent = fleet.offline;
  $("count-alarms").textContent = fleet.open_alarms;
  $("stations-note").textContent = fleet.count + " stations";
  $("total-grid").textContent = kw(total(fleet.stations, "grid_w"));
  $("total-pv").textContent = kw(total(fleet.stations, "pv_w"));
  $("total-battery").textContent = kw(total(fleet.stations, "battery_w"));
  $("total-vehicles").textContent = kw(total(fleet.stations, "vehicles_w"));
  const body = $("stations-body");
  const rows = fleet.stations.map(row);
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "No station has published yet.", "muted").colSpan = 13;
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function setConn(state) {
  const el = $("conn-state");
  el.dataset.state = state;
  el.className = "conn conn-" + state;
  el.textContent = state;
}

async function poll() {
  try {
    const r = await fetch("/api/fleet", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    setConn("live");
  } catch (e) {
    setConn("offline");
  }
  setTimeout(poll, 2000);
}

poll();
