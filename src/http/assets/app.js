// Station dashboard: renders the daemon's Status JSON (GET /api/status, or the `status` events
// of GET /api/events) and the 24 h history (GET /api/history). Plain browser JavaScript, no
// libraries and nothing fetched from outside the station.
//
// Sign convention (as in the daemon): grid > 0 import, battery > 0 discharge, PV > 0
// generation, loads > 0 consume.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POLL_MS = 2000;
  const SSE_RETRY_MS = 30000;
  const HISTORY_REFRESH_MS = 60000;
  const STALE_MS = 15000;
  const IDLE_W = 50; // below this a flow is drawn as idle

  // SunSpec model 802 Evt1 bits.
  const ALARM_BITS = [
    "communication error", "over-temperature alarm", "over-temperature warning",
    "under-temperature alarm", "under-temperature warning", "over charge current alarm",
    "over charge current warning", "over discharge current alarm",
    "over discharge current warning", "over-voltage alarm", "over-voltage warning",
    "under-voltage alarm", "under-voltage warning", "SoC below minimum alarm",
    "SoC below minimum warning", "SoC above maximum alarm", "SoC above maximum warning",
    "voltage imbalance warning", "temperature imbalance alarm",
    "temperature imbalance warning", "contactor error", "fan error", "ground fault",
    "door open", "current imbalance warning", "other alarm", "other warning", "reserved",
    "configuration alarm", "configuration warning",
  ];

  const CHARGER_STATES = {
    A: "no vehicle",
    B: "vehicle connected",
    C: "charging",
    D: "charging (ventilation)",
    E: "no power",
    F: "fault",
  };

  // ---------------------------------------------------------------- formatting

  const $ = (id) => document.getElementById(id);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function fmtKw(w) {
    return isNum(w) ? (w / 1000).toFixed(1) + " kW" : "—";
  }
  function fmtAbsKw(w) {
    return isNum(w) ? (Math.abs(w) / 1000).toFixed(1) + " kW" : "—";
  }
  function fmtNum(v, digits, unit) {
    return isNum(v) ? v.toFixed(digits) + (unit ? " " + unit : "") : "—";
  }
  function fmtPct(v) {
    return isNum(v) ? v.toFixed(0) + " %" : "—";
  }

  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }
  function setPower(id, w, signed) {
    const el = $(id);
    if (!el) return;
    el.textContent = signed ? fmtKw(w) : fmtAbsKw(w);
    el.dataset.w = isNum(w) ? String(w) : "";
  }

  function validZone(tz) {
    if (!tz) return undefined;
    try {
      new Intl.DateTimeFormat("en-GB", { timeZone: tz });
      return tz;
    } catch (_) {
      return undefined;
    }
  }
  // `?tz=Area/City` wins; otherwise the station's own zone from the status; until the first
  // status arrives, the browser's zone.
  const URL_TZ = validZone(new URLSearchParams(window.location.search).get("tz"));
  let TZ, TZ_LABEL, fmtTime, fmtHour, fmtDate;
  function setZone(tz) {
    TZ = tz;
    TZ_LABEL = TZ || Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    fmtTime = new Intl.DateTimeFormat("en-GB", {
      timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    });
    fmtHour = new Intl.DateTimeFormat("en-GB", {
      timeZone: TZ, hour: "2-digit", minute: "2-digit", hour12: false,
    });
    fmtDate = new Intl.DateTimeFormat("en-GB", {
      timeZone: TZ, weekday: "short", year: "numeric", month: "short", day: "numeric",
    });
  }
  setZone(URL_TZ);
  function followStationZone(s) {
    if (URL_TZ || !s.timezone || s.timezone === TZ) return;
    const tz = validZone(s.timezone);
    if (tz) setZone(tz);
  }

  function ago(fromMs, toMs) {
    const s = Math.max(0, Math.round((toMs - fromMs) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  }
  function html(tag, cls, parent, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  // ---------------------------------------------------------------- header and clock

  const timeSamples = [];
  let lastStatusWall = 0;

  let stationNowMs = null;

  function renderClock(s) {
    followStationZone(s);
    const t = new Date(s.time);
    if (isNaN(t.getTime())) return;
    stationNowMs = t.getTime();
    setText("station-time", fmtTime.format(t));
    setText("station-date", fmtDate.format(t));
    setText("station-tz", TZ_LABEL);
    // Station time can run faster than wall time (simulated demo): show the ratio.
    const now = Date.now();
    timeSamples.push({ wall: now, station: t.getTime() });
    while (timeSamples.length > 2 && now - timeSamples[0].wall > 30000) timeSamples.shift();
    const first = timeSamples[0];
    const rate = $("time-rate");
    const dWall = now - first.wall;
    if (dWall >= 3000) {
      const ratio = (t.getTime() - first.station) / dWall;
      if (ratio > 1.5) {
        rate.hidden = false;
        rate.textContent = "×" + (ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(1)) + " speed";
      } else {
        rate.hidden = true;
      }
    }
  }

  // ---------------------------------------------------------------- KPIs

  function vehiclesPower(s) {
    let sum = 0;
    let any = false;
    for (const c of s.chargers || []) {
      if (isNum(c.power_w)) {
        sum += c.power_w;
        any = true;
      }
    }
    return any ? sum : null;
  }

  function renderKpis(s) {
    const g = s.grid || {};
    setPower("grid-power", g.power_w, false);
    setText("grid-direction", !isNum(g.power_w) ? "no reading"
      : g.power_w > IDLE_W ? "importing" : g.power_w < -IDLE_W ? "exporting" : "balanced");
    setText("grid-limit", fmtKw(g.import_limit_w));
    const headroom = $("grid-headroom");
    if (isNum(g.power_w) && isNum(g.import_limit_w) && g.import_limit_w > 0) {
      const frac = Math.max(0, Math.min(1, g.power_w / g.import_limit_w));
      headroom.style.width = (frac * 100).toFixed(1) + "%";
      headroom.className = "meter-fill" + (frac > 0.95 ? " meter-hot" : frac > 0.8 ? " meter-warm" : "");
    } else {
      headroom.style.width = "0%";
    }
    $("grid-power").closest(".kpi").classList.toggle("stale", g.fresh === false);

    const pv = s.pv || {};
    setPower("pv-power", pv.power_w, false);
    setText("pv-limit", isNum(pv.limit_pct) && pv.limit_pct < 99.5
      ? "curtailed to " + pv.limit_pct.toFixed(0) + " %"
      : isNum(pv.rating_w) ? "of " + fmtKw(pv.rating_w) + " rated" : "unlimited");

    const b = s.battery || {};
    setPower("battery-power", b.power_w, false);
    setText("battery-direction", !isNum(b.power_w) ? "no reading"
      : b.power_w > IDLE_W ? "discharging" : b.power_w < -IDLE_W ? "charging" : "idle");
    setText("battery-soc-kpi", fmtPct(b.soc_pct));

    setPower("building-power", (s.building || {}).power_w, false);

    const vw = vehiclesPower(s);
    setPower("vehicles-power", vw, false);
    const chargers = s.chargers || [];
    const charging = chargers.filter((c) => isNum(c.power_w) && c.power_w > IDLE_W).length;
    setText("vehicles-count", charging + " of " + chargers.length + " charging");
  }

  // ---------------------------------------------------------------- power flow

  const flow = { key: "", edges: {} };

  function buildFlow(s) {
    const root = $("flow-svg");
    while (root.firstChild) root.removeChild(root.firstChild);
    flow.edges = {};
    const busX = 400;
    const left = [
      { id: "pv", label: "PV", cls: "pv", y: 80 },
      { id: "grid", label: "Grid", cls: "grid", y: 220 },
      { id: "battery", label: "Battery", cls: "battery", y: 360 },
    ];
    const right = [{ id: "building", label: "Building", cls: "building" }];
    for (const c of s.chargers || []) right.push({ id: c.id, label: c.id, cls: "vehicle", charger: true });
    const top = 24;
    const bottom = 416;
    const slot = (bottom - top) / right.length;
    const nodeH = Math.max(26, Math.min(60, slot - 8));
    right.forEach((n, i) => { n.y = top + slot * (i + 0.5); });

    const busTop = Math.min(left[0].y, right[0].y) - 20;
    const busBottom = Math.max(left[2].y, right[right.length - 1].y) + 20;
    svg("rect", { x: busX - 5, y: busTop, width: 10, height: busBottom - busTop, rx: 5, class: "bus" }, root);
    svg("text", { x: busX, y: busTop - 6, class: "bus-label", "text-anchor": "middle" }, root).textContent = "AC bus";

    const addEdge = (n, x1, x2) => {
      const g = svg("g", { class: "edge idle", "data-edge": n.id }, root);
      svg("path", { d: "M" + x1 + " " + n.y + " L" + x2 + " " + n.y, class: "flow-base" }, g);
      const line = svg("path", { d: "M" + x1 + " " + n.y + " L" + x2 + " " + n.y, class: "flow-line flow-" + n.cls }, g);
      const mid = (x1 + x2) / 2;
      const arrow = svg("polygon", { points: "-7,-6 7,0 -7,6", class: "flow-arrow flow-fill-" + n.cls, transform: "translate(" + mid + " " + n.y + ")" }, g);
      const kw = svg("text", { x: mid, y: n.y - 9, class: "flow-kw", "text-anchor": "middle" }, g);
      flow.edges[n.id] = { g, line, arrow, kw, mid, y: n.y };
    };

    for (const n of left) {
      addEdge(n, 190, busX - 5);
      const g = svg("g", { class: "node node-" + n.cls, "data-node": n.id }, root);
      svg("rect", { x: 30, y: n.y - 32, width: 160, height: 64, rx: 12 }, g);
      const label = svg("text", { x: 46, y: n.y - 8, class: "node-label" }, g);
      label.textContent = n.label;
      const v = svg("text", { x: 46, y: n.y + 18, class: "node-value" }, g);
      flow.edges[n.id].value = v;
      flow.edges[n.id].label = label;
    }
    for (const n of right) {
      addEdge(n, busX + 5, 580);
      const g = svg("g", { class: "node node-" + n.cls, "data-node": n.id }, root);
      svg("rect", { x: 580, y: n.y - nodeH / 2, width: 190, height: nodeH, rx: Math.min(12, nodeH / 3) }, g);
      const compact = nodeH < 44;
      svg("text", { x: 594, y: compact ? n.y + 5 : n.y - 5, class: "node-label" + (n.charger ? " node-label-small" : "") }, g).textContent = n.label;
      const v = svg("text", compact
        ? { x: 758, y: n.y + 5, class: "node-value node-value-small", "text-anchor": "end" }
        : { x: 594, y: n.y + 17, class: "node-value" }, g);
      flow.edges[n.id].value = v;
    }
  }

  function setEdge(id, w, valueText, labelText) {
    const e = flow.edges[id];
    if (!e) return;
    const known = isNum(w);
    const dir = !known ? 0 : w > IDLE_W ? 1 : w < -IDLE_W ? -1 : 0;
    e.g.setAttribute("class", "edge " + (!known ? "unknown" : dir > 0 ? "fwd" : dir < 0 ? "rev" : "idle"));
    const width = known ? 2 + 6 * Math.min(1, Math.abs(w) / 150000) : 2;
    e.line.style.strokeWidth = width.toFixed(1);
    e.arrow.setAttribute("transform", "translate(" + e.mid + " " + e.y + ")" + (dir < 0 ? " rotate(180)" : ""));
    e.kw.textContent = known ? fmtAbsKw(w) : "n/a";
    if (e.value) e.value.textContent = valueText;
    if (e.label && labelText) e.label.textContent = labelText;
  }

  function renderFlow(s) {
    const key = (s.chargers || []).map((c) => c.id).join("|");
    if (key !== flow.key || !flow.edges.pv) {
      flow.key = key;
      buildFlow(s);
    }
    const g = s.grid || {};
    const b = s.battery || {};
    const pvW = (s.pv || {}).power_w;
    setEdge("pv", pvW, fmtAbsKw(pvW), "PV" + (isNum(pvW) && pvW > IDLE_W ? " · generating" : ""));
    setEdge("grid", g.power_w, fmtAbsKw(g.power_w), "Grid" + (!isNum(g.power_w) ? " · no reading"
      : g.power_w > IDLE_W ? " · import" : g.power_w < -IDLE_W ? " · export" : ""));
    setEdge("battery", b.power_w, fmtAbsKw(b.power_w), "Battery" + (isNum(b.soc_pct) ? " · " + b.soc_pct.toFixed(0) + " %" : ""));
    setEdge("building", (s.building || {}).power_w, fmtAbsKw((s.building || {}).power_w));
    for (const c of s.chargers || []) {
      setEdge(c.id, c.power_w, fmtAbsKw(c.power_w) + " · " + c.state);
    }
  }

  // ---------------------------------------------------------------- battery

  function setGauge(id, pct) {
    const arc = $(id);
    const circ = 2 * Math.PI * 40;
    const frac = isNum(pct) ? Math.max(0, Math.min(1, pct / 100)) : 0;
    arc.style.strokeDasharray = circ.toFixed(2) + " " + circ.toFixed(2);
    arc.style.strokeDashoffset = (circ * (1 - frac)).toFixed(2);
  }

  function renderBattery(s) {
    const b = s.battery || {};
    setText("battery-soc", fmtPct(b.soc_pct));
    setText("battery-soh", fmtPct(b.soh_pct));
    setGauge("soc-arc", b.soc_pct);
    setGauge("soh-arc", b.soh_pct);
    const dir = !isNum(b.power_w) ? "" : b.power_w > IDLE_W ? " discharging" : b.power_w < -IDLE_W ? " charging" : " idle";
    setText("battery-power-detail", fmtAbsKw(b.power_w) + dir);
    setText("battery-setpoint", isNum(b.setpoint_w)
      ? fmtAbsKw(b.setpoint_w) + (b.setpoint_w > IDLE_W ? " discharge" : b.setpoint_w < -IDLE_W ? " charge" : " hold")
      : "—");
    setText("battery-max-charge", fmtKw(b.max_charge_w));
    setText("battery-max-discharge", fmtKw(b.max_discharge_w));
    setText("battery-temp", fmtNum(b.temp_c, 1, "°C"));
    setText("battery-usable", isNum(b.usable_wh) ? (b.usable_wh / 1000).toFixed(0) + " kWh" : "—");
    setText("battery-state", b.state || "—");

    const list = $("battery-alarms");
    const alarms = isNum(b.alarms) ? b.alarms >>> 0 : 0;
    const key = String(alarms);
    if (list.dataset.key !== key) {
      list.dataset.key = key;
      while (list.firstChild) list.removeChild(list.firstChild);
      if (alarms === 0) {
        html("li", "ok", list, "No alarms");
      } else {
        for (let bit = 0; bit < 32; bit++) {
          if (alarms & (1 << bit)) {
            const name = ALARM_BITS[bit] || "alarm bit " + bit;
            html("li", name.indexOf("warning") >= 0 ? "warn" : "alarm", list, name);
          }
        }
      }
    }
  }

  // ---------------------------------------------------------------- chargers

  function chargerCard(root, id) {
    const card = html("article", "charger-card", root);
    card.dataset.id = id;
    const head = html("div", "charger-head", card);
    html("span", "charger-name", head, id);
    html("span", "pill charger-state", head);
    const big = html("div", "charger-main", card);
    html("span", "charger-current", big);
    html("span", "charger-of", big);
    const bar = html("div", "charger-bar", card);
    html("div", "charger-bar-fill", bar);
    html("div", "charger-bar-set", bar);
    const dl = html("dl", "facts facts-small", card);
    const row = (label, cls) => {
      html("dt", null, dl, label);
      html("dd", cls, dl);
    };
    row("Setpoint", "charger-setpoint");
    row("Power", "charger-power");
    row("Session", "charger-energy");
    row("Green", "charger-green");
    row("Mode", "charger-mode");
    row("Wish", "charger-wish");
    const wishBtn = html("button", "charger-wish-set", card, "Departure & energy…");
    wishBtn.type = "button";
    wishBtn.addEventListener("click", () => askWish(id, card));
    return card;
  }

  function renderChargers(s) {
    const root = $("chargers");
    const chargers = s.chargers || [];
    const seen = new Set();
    chargers.forEach((c, i) => {
      seen.add(c.id);
      let card = root.querySelector('.charger-card[data-id="' + CSS.escape(c.id) + '"]');
      if (!card) card = chargerCard(root, c.id);
      if (root.children[i] !== card) root.insertBefore(card, root.children[i] || null);
      const letter = (c.state || "").charAt(0).toUpperCase();
      const desc = CHARGER_STATES[letter] || "unknown";
      card.dataset.state = c.state;
      card.className = "charger-card st-" + (CHARGER_STATES[letter] ? letter : "U");
      const q = (sel) => card.querySelector(sel);
      q(".charger-state").textContent = c.state + " · " + desc;
      q(".charger-current").textContent = fmtNum(c.current_a, 1, "A");
      q(".charger-of").textContent = isNum(c.rating_a) ? " of " + c.rating_a.toFixed(0) + " A" : "";
      const rating = isNum(c.rating_a) && c.rating_a > 0 ? c.rating_a : 32;
      q(".charger-bar-fill").style.width = (isNum(c.current_a) ? Math.min(100, (100 * c.current_a) / rating) : 0).toFixed(1) + "%";
      q(".charger-bar-set").style.left = (isNum(c.setpoint_a) ? Math.min(100, (100 * c.setpoint_a) / rating) : 0).toFixed(1) + "%";
      q(".charger-setpoint").textContent = isNum(c.setpoint_a)
        ? (c.setpoint_a <= 0 ? "paused" : c.setpoint_a.toFixed(1) + " A") : "—";
      q(".charger-power").textContent = fmtKw(c.power_w) + (c.phases ? " · " + c.phases + "φ" : "");
      q(".charger-energy").textContent = isNum(c.session_wh) ? (c.session_wh / 1000).toFixed(1) + " kWh" : "—";
      q(".charger-green").textContent = fmtPct(c.session_green_pct);
      q(".charger-mode").textContent = c.mode || "—";
      if (!card.dataset.wishError) q(".charger-wish").textContent = wishText(c.wish);
      q(".charger-wish").title = c.wish && c.wish.reason ? c.wish.reason : "";
      card.dataset.wish = c.wish ? c.wish.state : "";
    });
    for (const card of Array.from(root.querySelectorAll(".charger-card"))) {
      if (!seen.has(card.dataset.id)) card.remove();
    }
  }

  // A session wish (planner): departure (HH:MM on the station's clock, the next such time) and
  // energy.
  function wishText(w) {
    if (!w) return "—";
    const by = fmtHour.format(new Date(w.departure));
    const state = w.state === "cannot_meet" ? "cannot be met" : w.state;
    return w.energy_kwh.toFixed(1) + " kWh by " + by + " · " + state;
  }

  async function askWish(id, card) {
    const at = window.prompt(id + ": departure time (HH:MM, station time)");
    if (!at) return;
    const kwh = window.prompt(id + ": energy to deliver, kWh");
    if (!kwh) return;
    const token = window.sessionStorage.getItem("stationToken") || window.prompt("API token");
    if (!token) return;
    const cell = card.querySelector(".charger-wish");
    // The next time the station's clock shows it (right in another zone and in a sped-up demo).
    const d = nextStationTime(at);
    if (!d) { cell.textContent = "departure: expected HH:MM"; return; }
    const r = await fetch("/api/chargers/" + encodeURIComponent(id) + "/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({ departure: d.toISOString(), energy_kwh: Number(kwh) }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      window.sessionStorage.setItem("stationToken", token);
      delete card.dataset.wishError;
      cell.textContent = body.energy_kwh.toFixed(1) + " kWh · " + body.state;
    } else {
      if (r.status === 401) window.sessionStorage.removeItem("stationToken");
      card.dataset.wishError = "1";
      cell.textContent = body.error || "HTTP " + r.status;
      setTimeout(() => delete card.dataset.wishError, 15000);
    }
  }

  // ---------------------------------------------------------------- bookings (planner)

  // The next time the station's clock shows `hhmm` (its zone, from its current time).
  function nextStationTime(hhmm) {
    const m = /^(\d{1,2}):(\d{2})$/.exec(hhmm.trim());
    if (!m || stationNowMs === null) return null;
    const parts = fmtHour.formatToParts(new Date(stationNowMs));
    const part = (k) => Number((parts.find((p) => p.type === k) || {}).value);
    const nowMin = (part("hour") % 24) * 60 + part("minute");
    let delta = (Number(m[1]) * 60 + Number(m[2]) - nowMin + 1440) % 1440;
    if (delta === 0) delta = 1440;
    const at = new Date(stationNowMs + delta * 60000);
    at.setUTCSeconds(0, 0);
    return at;
  }

  function bookingState(b) {
    if (b.state === "fulfilled") return "came (" + (b.fulfilled_by || "?") + ")";
    return b.state;
  }

  function renderBookings(list) {
    const body = $("bookings");
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!list.length) {
      const td = html("td", "muted", html("tr", null, body), "No bookings.");
      td.colSpan = 6;
      return;
    }
    for (const b of list) {
      const tr = html("tr", "booking booking-" + b.state, body);
      tr.dataset.id = String(b.id);
      const at = new Date(b.arrives);
      html("td", null, tr, fmtDate.format(at) + " " + fmtHour.format(at));
      html("td", null, tr, fmtHour.format(new Date(b.departs)));
      html("td", null, tr, b.charger || "any free");
      html("td", null, tr, isNum(b.energy_kwh) ? b.energy_kwh.toFixed(0) + " kWh" : "default");
      html("td", "booking-state", tr, bookingState(b));
      const cancel = html("button", "booking-cancel", html("td", null, tr), "Cancel");
      cancel.type = "button";
      cancel.addEventListener("click", () => cancelBooking(b.id));
    }
  }

  async function loadBookings() {
    const r = await fetch("/api/bookings", { cache: "no-store" }).catch(() => null);
    $("bookings-card").hidden = !r || !r.ok;
    if (r && r.ok) renderBookings((await r.json()).bookings || []);
  }

  async function bookingRequest(method, path, body) {
    const token = window.sessionStorage.getItem("stationToken") || window.prompt("API token");
    if (!token) return;
    const headers = { Authorization: "Bearer " + token };
    if (body) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) {
      window.sessionStorage.setItem("stationToken", token);
      setText("bookings-note", "");
    } else {
      if (r.status === 401) window.sessionStorage.removeItem("stationToken");
      setText("bookings-note", answer.error || "HTTP " + r.status);
    }
    loadBookings();
    loadHistory();
  }

  async function askBooking() {
    const at = window.prompt("The car arrives at (HH:MM, station time; the next such time)");
    if (!at) return;
    const arrives = nextStationTime(at);
    if (!arrives) { setText("bookings-note", "arrives: expected HH:MM"); return; }
    const stay = Number(window.prompt("It stays (hours)", "3"));
    if (!(stay > 0)) { setText("bookings-note", "stay: expected hours above 0"); return; }
    const kwh = window.prompt("Energy it wants, kWh (empty: the planner's default)", "");
    const body = { arrives: arrives.toISOString(), departs: new Date(arrives.getTime() + stay * 3600000).toISOString() };
    if (kwh && kwh.trim()) body.energy_kwh = Number(kwh);
    await bookingRequest("POST", "/api/bookings", body);
  }

  function cancelBooking(id) {
    return bookingRequest("DELETE", "/api/bookings/" + encodeURIComponent(String(id)));
  }

  // ---------------------------------------------------------------- reasons, today, devices

  function renderReasons(s) {
    const list = $("reasons");
    const reasons = s.reasons || [];
    const key = JSON.stringify(reasons);
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    while (list.firstChild) list.removeChild(list.firstChild);
    if (reasons.length === 0) html("li", "muted", list, "No particular reason: normal operation.");
    for (const r of reasons) html("li", null, list, r);
  }

  function renderToday(s) {
    const t = s.today || {};
    setText("today-self-consumption", fmtPct(t.self_consumption_pct));
    setText("today-self-sufficiency", fmtPct(t.self_sufficiency_pct));
    setText("today-peak-import", fmtNum(t.peak_import_kw, 1, "kW"));
    setText("today-ev-energy", fmtNum(t.ev_delivered_kwh, 1, "kWh"));
    setText("today-ev-green", fmtPct(t.ev_green_share_pct));
    setText("today-co2-avoided", fmtNum(t.co2_avoided_kg, 1, "kg"));
    setText("today-cost", isNum(t.cost_cny) ? "¥ " + t.cost_cny.toFixed(2) : "—");
    setText("today-pv", fmtNum(t.pv_kwh, 1, "kWh"));
    setText("today-import", fmtNum(t.grid_import_kwh, 0, "") + " / " + fmtNum(t.grid_export_kwh, 0, "kWh"));
  }

  function renderDevices(s) {
    const body = $("devices");
    const now = new Date(s.time).getTime();
    const devices = s.devices || [];
    const seen = new Set();
    devices.forEach((d, i) => {
      seen.add(d.id);
      let row = body.querySelector('tr[data-id="' + CSS.escape(d.id) + '"]');
      if (!row) {
        row = html("tr", null, body);
        row.dataset.id = d.id;
        html("td", "device-id", row, d.id);
        const link = html("td", null, row);
        html("span", "pill device-link", link);
        html("td", "device-last-ok", row);
        html("td", "device-errors num", row);
        html("td", "device-error", row);
      }
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
      row.dataset.link = d.link;
      const link = row.querySelector(".device-link");
      link.textContent = d.link;
      link.className = "pill device-link link-" + d.link;
      const lastOk = row.querySelector(".device-last-ok");
      if (d.last_ok) {
        const t = new Date(d.last_ok);
        lastOk.textContent = fmtTime.format(t) + " (" + ago(t.getTime(), now) + ")";
      } else {
        lastOk.textContent = "never";
      }
      row.querySelector(".device-errors").textContent = String(d.errors_total);
      row.querySelector(".device-error").textContent = d.warning || d.last_error || "";
    });
    for (const row of Array.from(body.querySelectorAll("tr"))) {
      if (!seen.has(row.dataset.id)) row.remove();
    }
  }

  // ---------------------------------------------------------------- status entry point

  function render(s) {
    if (!s || typeof s !== "object") return;
    lastStatusWall = Date.now();
    setText("station-name", s.station || "Station");
    document.title = (s.station || "Station") + " · dashboard";
    setText("cycle", String(s.cycle));
    setText("cycle-ms", isNum(s.cycle_ms) ? "(" + s.cycle_ms.toFixed(0) + " ms)" : "");
    renderClock(s);
    renderKpis(s);
    renderFlow(s);
    renderBattery(s);
    renderChargers(s);
    renderReasons(s);
    renderToday(s);
    renderDevices(s);
    setText("last-update", "updated " + new Date().toLocaleTimeString());
  }

  // ---------------------------------------------------------------- history chart

  const SERIES = [
    { key: "building_w", cls: "building" },
    { key: "vehicles_w", cls: "vehicles" },
    { key: "battery_w", cls: "battery" },
    { key: "pv_w", cls: "pv" },
    { key: "grid_w", cls: "grid" },
  ];

  function niceStep(range) {
    const raw = range / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  // The plan ahead of now (GET /api/plan): forecast PV and building load, planned grid import,
  // the import ceiling (the demand peak the plan holds every quarter under) and battery SoC
  // (right axis, %), dashed, right of the "now" line.
  const PLAN_SERIES = [
    { key: "pv_forecast_w", cls: "pv" },
    { key: "building_forecast_w", cls: "building" },
    // Signed like the measured grid line: planned export below zero.
    { key: "planned_import_w", cls: "grid", value: (st) => st.planned_import_w - (st.planned_export_w || 0) },
    { key: "import_ceiling_w", cls: "ceiling" },
  ];
  const PLAN_AHEAD_MS = 12 * 3600000;
  const planValue = (s, st) => (s.value ? s.value(st) : st[s.key]);

  function planPoints(plan, fromMs) {
    const steps = plan && Array.isArray(plan.steps) ? plan.steps : [];
    return steps
      .map((st) => Object.assign({}, st, { ms: new Date(st.start).getTime(), endMs: new Date(st.end).getTime() }))
      .filter((st) => st.endMs > fromMs && st.ms < fromMs + PLAN_AHEAD_MS);
  }

  function renderPlan(root, steps, x, y, lo, hi) {
    const g = svg("g", { class: "plan", "data-series": "plan" }, root);
    for (const s of PLAN_SERIES) {
      const pts = [];
      for (const st of steps) {
        const v = planValue(s, st);
        if (isNum(v)) {
          pts.push(x(st.ms).toFixed(1) + "," + y(v).toFixed(1));
          pts.push(x(st.endMs).toFixed(1) + "," + y(v).toFixed(1));
        }
      }
      if (pts.length > 1) svg("polyline", { points: pts.join(" "), class: "line plan-line line-" + s.cls, "data-plan": s.key }, g);
    }
    const soc = (pct) => y(lo + (pct / 100) * (hi - lo));
    const socPts = steps
      .filter((st) => isNum(st.battery_soc_target_pct))
      .map((st) => x(st.endMs).toFixed(1) + "," + soc(st.battery_soc_target_pct).toFixed(1));
    if (socPts.length > 1) svg("polyline", { points: socPts.join(" "), class: "line plan-line line-battery", "data-plan": "battery_soc_target_pct" }, g);
  }

  // The cars the plan expects (booked and forecast): a marker on the time axis at each arrival.
  function renderArrivals(root, plan, fromMs, toMs, x, yBase) {
    const cars = plan && Array.isArray(plan.arrivals) ? plan.arrivals : [];
    const g = svg("g", { class: "arrivals", "data-series": "arrivals" }, root);
    let shown = 0;
    for (const a of cars) {
      const ms = new Date(a.arrives).getTime();
      if (!(ms >= fromMs && ms <= toMs)) continue;
      const px = x(ms);
      const d = "M" + (px - 5).toFixed(1) + "," + yBase + " L" + (px + 5).toFixed(1) + "," + yBase + " L" + px.toFixed(1) + "," + (yBase - 9) + " Z";
      const m = svg("path", { d: d, class: "arrival-marker", "data-energy-kwh": String(a.energy_kwh) }, g);
      svg("title", {}, m).textContent = "car expected " + fmtHour.format(new Date(ms)) + "–" +
        fmtHour.format(new Date(a.departs)) + ", " + (isNum(a.energy_kwh) ? a.energy_kwh.toFixed(0) : "?") + " kWh";
      shown += 1;
    }
    return shown;
  }

  function renderHistory(h, plan) {
    const root = $("history-chart");
    while (root.firstChild) root.removeChild(root.firstChild);
    const W = 1200, H = 300, L = 52, R = 12, T = 12, B = 28;
    const points = (h && Array.isArray(h.points) ? h.points : [])
      .map((p) => Object.assign({}, p, { ms: new Date(p.t).getTime() }))
      .filter((p) => !isNaN(p.ms));
    const limitW = h && isNum(h.import_limit_w) ? h.import_limit_w : null;
    if (points.length === 0) {
      svg("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" }, root).textContent = "No history yet";
      setText("history-note", "");
      return;
    }
    const nowMs = points[points.length - 1].ms;
    const ahead = planPoints(plan, nowMs);
    $("legend-ceiling").hidden = !ahead.length;
    $("legend-arrival").hidden = true;
    const t1 = ahead.length ? Math.max(nowMs, ahead[ahead.length - 1].endMs) : nowMs;
    const t0 = Math.min(points[0].ms, nowMs - 3600000);
    let lo = 0, hi = limitW !== null ? limitW : 1000;
    for (const p of points) for (const s of SERIES) {
      const v = p[s.key];
      if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    for (const st of ahead) for (const s of PLAN_SERIES) {
      const v = planValue(s, st);
      if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    const pad = (hi - lo) * 0.06;
    hi += pad;
    if (lo < 0) lo -= pad;
    const step = niceStep((hi - lo) / 1000) * 1000;
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    const x = (ms) => L + ((ms - t0) / (t1 - t0 || 1)) * (W - L - R);
    const y = (w) => T + (1 - (w - lo) / (hi - lo || 1)) * (H - T - B);

    const axes = svg("g", { class: "axes" }, root);
    for (let v = lo; v <= hi + 1e-6; v += step) {
      svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: Math.abs(v) < 1e-6 ? "zero" : "gridline" }, axes);
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, axes).textContent = (v / 1000).toFixed(0);
    }
    svg("text", { x: 4, y: T + 2, class: "tick unit", "dominant-baseline": "hanging" }, axes).textContent = "kW";
    const hourMs = 3600000;
    const spanH = (t1 - t0) / hourMs;
    const every = spanH > 12 ? 3 : spanH > 4 ? 1 : 0.5;
    const first = Math.ceil(t0 / (every * hourMs)) * every * hourMs;
    for (let t = first; t <= t1; t += every * hourMs) {
      svg("line", { x1: x(t), x2: x(t), y1: T, y2: H - B, class: "gridline vertical" }, axes);
      svg("text", { x: x(t), y: H - 8, "text-anchor": "middle", class: "tick" }, axes).textContent = fmtHour.format(new Date(t));
    }

    if (limitW !== null) {
      svg("line", { id: "import-limit-line", x1: L, x2: W - R, y1: y(limitW), y2: y(limitW), class: "limit-line" }, root);
      svg("text", { x: W - R - 4, y: y(limitW) - 5, "text-anchor": "end", class: "limit-label" }, root).textContent =
        "import limit " + fmtKw(limitW);
    }

    const GAP_MS = 3 * 60000;
    for (const s of SERIES) {
      const g = svg("g", { class: "series series-" + s.cls, "data-series": s.key }, root);
      let seg = [];
      let prev = null;
      const flush = () => {
        if (seg.length > 1) svg("polyline", { points: seg.join(" "), class: "line line-" + s.cls }, g);
        seg = [];
      };
      for (const p of points) {
        const v = p[s.key];
        if (!isNum(v) || (prev !== null && p.ms - prev > GAP_MS)) flush();
        if (isNum(v)) seg.push(x(p.ms).toFixed(1) + "," + y(v).toFixed(1));
        prev = p.ms;
      }
      flush();
    }
    if (ahead.length) {
      svg("line", { x1: x(nowMs), x2: x(nowMs), y1: T, y2: H - B, class: "now-line" }, root);
      renderPlan(root, ahead, x, y, lo, hi);
      $("legend-arrival").hidden = renderArrivals(root, plan, nowMs, t1, x, H - B) === 0;
      svg("text", { x: W - R - 4, y: T + 12, "text-anchor": "end", class: "tick" }, root).textContent = "plan → (SoC: 0–100 % of the axis)";
    }
    setText("history-note", points.length + " points, up to " + fmtHour.format(new Date(nowMs)) +
      (ahead.length ? "; the plan ahead, dashed" : (plan && plan.reason ? "; " + plan.reason : "")));
  }

  async function loadHistory() {
    try {
      const r = await fetch("/api/history?hours=24", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const p = await fetch("/api/plan", { cache: "no-store" }).then((x) => (x.ok ? x.json() : null)).catch(() => null);
      renderHistory(await r.json(), p);
    } catch (e) {
      setText("history-note", "history unavailable (" + e.message + ")");
    }
  }

  // ---------------------------------------------------------------- battery health

  function kwh(wh) {
    return wh === null || wh === undefined ? "—" : (wh / 1000).toFixed(1) + " kWh";
  }

  function renderHealthChart(r) {
    const el = document.getElementById("bh-chart");
    if (!el) return;
    while (el.firstChild) el.removeChild(el.firstChild);
    const pts = (r.samples || []).map(function (p) {
      return { t: Date.parse(p.at), m: p.capacity_wh, b: p.bms_soh_pct === null ? null : r.nameplate_wh * p.bms_soh_pct / 100 };
    });
    if (pts.length < 2) {
      svg("text", { x: 10, y: 70, class: "muted" }, el).textContent = "capacity samples: " + pts.length;
      return;
    }
    const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
    const vals = [];
    pts.forEach(function (p) { vals.push(p.m); if (p.b !== null) vals.push(p.b); });
    const lo = Math.min.apply(null, vals) * 0.98, hi = Math.max.apply(null, vals) * 1.02;
    const x = function (t) { return 10 + 380 * (t - t0) / Math.max(1, t1 - t0); };
    const y = function (v) { return 130 - 120 * (v - lo) / Math.max(1, hi - lo); };
    const line = function (key, cls) {
      const d = pts.filter(function (p) { return p[key] !== null; })
        .map(function (p, i) { return (i ? "L" : "M") + x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1); }).join("");
      if (d) svg("path", { d: d, class: cls, fill: "none" }, el);
    };
    line("b", "line-limit");
    line("m", "line-battery");
  }

  function renderBatteryHealth(r) {
    const e = r.estimate;
    setText("bh-source", r.capacity_source === "measured" ? "measured" : "BMS value");
    setText("bh-measured", e ? kwh(e.capacity_wh) + " ± " + (e.band_wh / 1000).toFixed(1) + (e.confident ? "" : " (not yet trusted)") : "measuring…");
    setText("bh-bms", r.bms_soh_pct === null ? "—" : fmtNum(r.bms_soh_pct, 1, " %") + " → " + kwh(r.bms_capacity_wh));
    setText("bh-in-use", kwh(r.capacity_in_use_wh));
    setText("bh-efc", fmtNum(r.equivalent_full_cycles, 1, ""));
    setText("bh-throughput", (r.throughput_wh / 1e6).toFixed(2) + " MWh");
    setText("bh-spread", r.cell_spread_mv === null ? "—" : fmtNum(r.cell_spread_mv, 0, " mV"));
    setText("bh-temp", r.temp_min_c === null ? "no 803/804" : fmtNum(r.temp_min_c, 1, "") + " … " + fmtNum(r.temp_max_c, 1, " °C"));
    const d = r.derating;
    setText("bh-window", d ? fmtNum(d.soc_min_pct, 1, "") + " – " + fmtNum(d.soc_max_pct, 1, " %") + (d.charge_factor < 1 || d.discharge_factor < 1 ? " · power × " + d.charge_factor.toFixed(2) + " / " + d.discharge_factor.toFixed(2) : "") : "—");
    setText("bh-fade", r.fade ? fmtNum(r.fade.wh_per_day * 365 / 1000, 1, " kWh/year") + " (calendar " + fmtNum(r.fade.calendar_wh_per_day * 365 / 1000, 1, "") + ", cycling " + fmtNum(r.fade.cycle_wh_per_day * 365 / 1000, 1, ")") : "needs 14 days of samples");
    const eol = r.end_of_life;
    setText("bh-eol", eol ? eol.date.slice(0, 10) + " (" + eol.earliest.slice(0, 10) + " … " + (eol.latest ? eol.latest.slice(0, 10) : "open") + ") at " + r.eol_pct + " %" : "—");
    setText("bh-wear", fmtNum(r.wear.cny_per_kwh, 3, " CNY/kWh") + " (" + r.wear.source + (r.wear.reason ? ": " + r.wear.reason : "") + ")");
    const w = document.getElementById("bh-warning");
    if (w) {
      w.hidden = !r.warning;
      w.textContent = r.warning || "";
    }
    renderHealthChart(r);
  }

  async function loadBatteryHealth() {
    try {
      const r = await fetch("/api/battery/health", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      renderBatteryHealth(await r.json());
    } catch (e) {
      setText("bh-measured", "unavailable (" + e.message + ")");
    }
  }

  // ---------------------------------------------------------------- transport

  let source = null;
  let pollTimer = null;
  let sseRetryTimer = null;

  function setConn(state, label) {
    const el = $("conn-state");
    el.dataset.state = state;
    el.className = "conn conn-" + state;
    el.textContent = label || state;
  }

  async function pollOnce() {
    try {
      const r = await fetch("/api/status", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      if (!source) setConn("polling", "polling");
    } catch (_) {
      if (!source) setConn("offline", "offline");
    }
  }

  function startPolling() {
    if (pollTimer === null) pollTimer = setInterval(pollOnce, POLL_MS);
    pollOnce();
  }
  function stopPolling() {
    if (pollTimer !== null) clearInterval(pollTimer);
    pollTimer = null;
  }

  function fallBack() {
    if (source) source.close();
    source = null;
    setConn("polling", "polling");
    startPolling();
    if (sseRetryTimer === null) {
      sseRetryTimer = setTimeout(() => { sseRetryTimer = null; startSse(); }, SSE_RETRY_MS);
    }
  }

  function startSse() {
    if (typeof EventSource === "undefined") {
      startPolling();
      return;
    }
    let es;
    try {
      es = new EventSource("/api/events");
    } catch (_) {
      fallBack();
      return;
    }
    source = es;
    let lastMessage = 0;
    es.addEventListener("status", (ev) => {
      lastMessage = Date.now();
      stopPolling();
      setConn("live", "live");
      try {
        render(JSON.parse(ev.data));
      } catch (_) {
        // A malformed event is skipped; the next cycle brings a fresh one.
      }
    });
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED || lastMessage === 0) {
        fallBack();
        return;
      }
      // The browser reconnects by itself; poll meanwhile if it takes long.
      setConn("connecting", "reconnecting");
      setTimeout(() => {
        if (source === es && Date.now() - lastMessage > 6000) fallBack();
      }, 6000);
    };
  }

  function watchStale() {
    if (lastStatusWall && Date.now() - lastStatusWall > STALE_MS) {
      document.body.classList.add("stale");
    } else {
      document.body.classList.remove("stale");
    }
  }

  pollOnce();
  startSse();
  loadHistory();
  setInterval(loadHistory, HISTORY_REFRESH_MS);
  $("booking-add").addEventListener("click", askBooking);
  loadBookings();
  setInterval(loadBookings, HISTORY_REFRESH_MS);
  loadBatteryHealth();
  setInterval(loadBatteryHealth, HISTORY_REFRESH_MS);
  setInterval(watchStale, 1000);
})();
