// The Fine-tune tab: polls the plugin's JSON API (same origin, the Airflow session cookie) and draws
// the job's status, a loss chart (SVG), its checkpoints and newest events. No library, no network
// beyond the api-server.
"use strict";

(function () {
  const POLL_MS = 3000;
  const MAX_EVENTS = 50;
  const WAIT_CODES = new Set(["job_id_unknown"]);
  const SERIES = ["train_loss", "valid_loss", "full_valid_loss"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const config = JSON.parse(document.getElementById("ftevents-config").textContent);
  const taskPath =
    config.api +
    "/dags/" + encodeURIComponent(config.dag_id) +
    "/runs/" + encodeURIComponent(config.run_id) +
    "/tasks/" + encodeURIComponent(config.task_id);

  const state = {
    points: [], // oldest step first; only ever appended to
    lastStep: -Infinity,
    totalSteps: null, // what the job announces; the x axis spans it, so the line grows to the right
    events: [], // newest first, at most MAX_EVENTS
    cursor: null,
    job: null,
    jobFetchedAt: 0,
    stopped: false,
    polls: 0,
  };

  const $ = (id) => document.getElementById(id);

  function text(node, value) {
    node.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function showError(message) {
    const box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function time(seconds) {
    if (typeof seconds !== "number") return "–";
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || seconds < 0) return "–";
    const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600);
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.detail) || "HTTP " + status);
      this.status = status;
      this.code = body && body.code;
    }
  }

  async function getJson(path, params) {
    const query = new URLSearchParams({ map_index: String(config.map_index), ...(params || {}) });
    const response = await fetch(taskPath + path + "?" + query.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // -- job summary and checkpoints -------------------------------------------------------------

  function renderJob(summary) {
    const job = summary.job;
    state.job = summary;
    state.jobFetchedAt = Date.now();
    text($("job-id"), job.id);
    const badge = $("status");
    badge.textContent = job.status || "unknown";
    badge.className = "badge " + (job.status || "");
    text($("model"), job.model);
    text($("fine-tuned-model"), job.fine_tuned_model);
    text($("conn-id"), summary.task.conn_id);
    $("live").hidden = job.terminal;
    renderElapsed();
    renderCheckpoints(summary.checkpoints, summary.checkpoints_error);
    if (job.error && job.error.message) showError("Job failed: " + job.error.message);
  }

  function renderElapsed() {
    const summary = state.job;
    if (!summary || typeof summary.elapsed_seconds !== "number") return;
    let elapsed = summary.elapsed_seconds;
    if (!summary.job.terminal) elapsed += (Date.now() - state.jobFetchedAt) / 1000;
    $("elapsed").textContent = duration(elapsed);
  }

  function cell(row, value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "–" : String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function renderCheckpoints(checkpoints, note) {
    const body = $("checkpoints").tBodies[0];
    body.replaceChildren();
    $("checkpoints-note").hidden = !note;
    $("checkpoints-note").textContent = note || "";
    if (!checkpoints.length) {
      const row = body.insertRow();
      row.className = "empty";
      cell(row, "None yet").colSpan = 5;
      return;
    }
    for (const c of checkpoints) {
      const row = body.insertRow();
      const metrics = c.metrics || {};
      cell(row, c.step_number, "num");
      cell(row, c.fine_tuned_model_checkpoint);
      cell(row, metrics.train_loss, "num");
      cell(row, metrics.valid_loss, "num");
      cell(row, time(c.created_at));
    }
  }

  // -- events ----------------------------------------------------------------------------------

  function addEvents(body) {
    let added = 0;
    for (const point of body.points) {
      if (point.step > state.lastStep) {
        state.points.push(point);
        state.lastStep = point.step;
        added += 1;
      }
    }
    state.events = body.events.concat(state.events).slice(0, MAX_EVENTS);
    state.cursor = body.cursor;
    if (typeof body.total_steps === "number" && body.total_steps !== state.totalSteps) {
      state.totalSteps = body.total_steps;
      added += 1; // the axis changes
    }
    if (added) drawChart();
    if (body.events.length || !state.polls) renderEvents();
    const last = state.points[state.points.length - 1];
    text($("step"), last ? last.step : null);
  }

  function renderEvents() {
    const body = $("events").tBodies[0];
    body.replaceChildren();
    if (!state.events.length) {
      const row = body.insertRow();
      row.className = "empty";
      cell(row, "None yet").colSpan = 3;
      return;
    }
    for (const e of state.events) {
      const row = body.insertRow();
      row.className = "level-" + (e.level || "info");
      row.dataset.eventId = e.id || "";
      cell(row, time(e.created_at));
      cell(row, e.level);
      cell(row, e.message);
    }
  }

  // -- the chart -------------------------------------------------------------------------------

  function svg(name, attrs, parent) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * p) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const chart = $("chart");
    const W = 760, H = 300, L = 48, R = 12, T = 10, B = 28;
    const points = state.points;
    chart.replaceChildren();
    chart.dataset.points = String(points.length);
    chart.dataset.lastStep = points.length ? String(points[points.length - 1].step) : "";
    if (!points.length) return;
    const first = Math.min(1, points[0].step);
    const last = Math.max(points[points.length - 1].step, state.totalSteps || 0, first + 1);
    let top = 0;
    for (const p of points) for (const k of SERIES) if (typeof p[k] === "number") top = Math.max(top, p[k]);
    top = niceMax(top);
    const x = (step) => L + ((step - first) / (last - first)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const axis = svg("g", { class: "axis" }, chart);
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }, axis);
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = v.toFixed(2);
    }
    for (let i = 0; i <= 4; i++) {
      const step = Math.round(first + ((last - first) * i) / 4);
      svg("text", { x: x(step), y: H - 8, "text-anchor": "middle" }, axis).textContent = String(step);
    }
    for (const key of SERIES) {
      const coords = points.filter((p) => typeof p[key] === "number").map((p) => x(p.step).toFixed(1) + "," + y(p[key]).toFixed(1));
      if (!coords.length) continue;
      svg("polyline", { class: key, points: coords.join(" "), "data-count": coords.length }, chart);
      if (key !== "train_loss" && coords.length < 40) {
        for (const c of coords) {
          const [cx, cy] = c.split(",");
          svg("circle", { class: key, cx, cy, r: 2.5 }, chart);
        }
      }
    }
  }

  // -- polling ---------------------------------------------------------------------------------

  function cursorParams() {
    const c = state.cursor;
    if (!c || !c.last_id) return {};
    const params = { last_id: c.last_id, count: String(c.count || 0) };
    if (c.last_created_at !== null && c.last_created_at !== undefined) params.last_created_at = String(c.last_created_at);
    return params;
  }

  async function poll() {
    try {
      const summary = await getJson("/job");
      const events = await getJson("/events", cursorParams());
      renderJob(summary);
      addEvents(events);
      if (!summary.job.error) showError("");
      state.polls += 1;
      document.body.dataset.polls = String(state.polls);
      if (summary.job.terminal) {
        // One last read after the end: events written with the final status are not missed.
        if (state.finalRead) return stop();
        state.finalRead = true;
      }
    } catch (error) {
      showError(error.message);
      // A task that has not started yet gets its job id soon; a missing job or a refused user does
      // not fix itself; a flaky API or network may.
      const waiting = error instanceof ApiError && WAIT_CODES.has(error.code);
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && !waiting) return stop();
    }
    if (!state.stopped) setTimeout(poll, POLL_MS);
  }

  function stop() {
    state.stopped = true;
    $("live").hidden = true;
    document.body.dataset.stopped = "true";
  }

  setInterval(renderElapsed, 1000);
  drawChart();
  poll();
})();
