// The Market data view: each panel reads its JSON API (same origin, the Airflow session's cookie)
// and draws with plotly.js, served by this app from the plotly package (no CDN).
"use strict";

const STATE_COLOURS = {
  complete: "#2e7d32", partial: "#f9a825", missing: "#c62828",
  no_trading: "#9e9e9e", open_gap: "#ef6c00", unfillable: "#6a1b9a",
};

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  return body;
}

function cell(value, numeric) {
  const td = document.createElement("td");
  if (numeric) td.className = "num";
  td.textContent = value === null || value === undefined ? "" : String(value);
  return td;
}

// A table from rows: columns are [header, key or function, numeric?].
function fillTable(table, columns, rows, onClick) {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const [title] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    head.appendChild(th);
  }
  const body = table.createTBody();
  if (!rows.length) {
    const tr = body.insertRow();
    const td = cell("none");
    td.colSpan = columns.length;
    tr.appendChild(td);
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const [, key, numeric] of columns) {
      tr.appendChild(cell(typeof key === "function" ? key(row) : row[key], numeric));
    }
    if (onClick) {
      tr.className = "clickable";
      tr.addEventListener("click", () => onClick(row, tr));
    }
  }
}

// Plotly renders hover text as markup: text from the warehouse (an error message, a symbol) is escaped.
function escaped(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fixed(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : value;
}

function showError(element, error) {
  element.textContent = String(error.message || error);
  element.className = "error";
}

// ---- coverage -----------------------------------------------------------------------------

let coverageAsked = 0; // the latest request wins: an earlier, slower answer is dropped

async function loadCoverage(event) {
  if (event) event.preventDefault();
  const ticket = ++coverageAsked;
  const form = document.getElementById("coverage-form");
  const query = new URLSearchParams();
  for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
  const summary = document.getElementById("coverage-summary");
  summary.className = "summary";
  summary.textContent = "loading...";
  let data;
  try {
    data = await getJson(`api/coverage?${query}`);
  } catch (error) {
    if (ticket === coverageAsked) showError(summary, error);
    return;
  }
  if (ticket !== coverageAsked) return;
  // Show the window the defaults resolved to, never over a date typed while the answer was coming.
  if (!form.first.value) form.first.value = data.first;
  if (!form.last.value) form.last.value = data.last;
  const counts = Object.entries(data.counts).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`);
  summary.textContent = `${data.symbols.length} symbols x ${data.sessions.length} sessions of ` +
    `${data.dataset} ${data.timeframe}: ${counts.join(", ") || "no cells"}`;
  drawCoverage(data);
}

function drawCoverage(data) {
  const gaps = new Map(data.gaps.map((g) => [`${g.symbol} ${g.session}`, g]));
  const hover = data.symbols.map((symbol, row) => data.sessions.map((session, col) => {
    const state = data.states[data.state[row][col]];
    let text = `${escaped(symbol)} ${session}: ${state}<br>bars ${data.found[row][col]} of ` +
      `${data.expected[row][col]} expected`;
    const gap = gaps.get(`${symbol} ${session}`);
    if (gap) {
      text += `<br>gap ${gap.status} (${escaped(gap.kind)}), attempts ${gap.attempts}`;
      if (gap.last_error) text += `<br>last error: ${escaped(gap.last_error)}`;
      if (gap.status === "open") text += `<br>next retry ${gap.next_retry_at}`;
    }
    return text;
  }));
  const n = data.states.length;
  const colorscale = [];
  data.states.forEach((state, i) => {
    colorscale.push([i / n, STATE_COLOURS[state]], [(i + 1) / n, STATE_COLOURS[state]]);
  });
  const trace = {
    type: "heatmap", x: data.sessions, y: data.symbols, z: data.state, zmin: -0.5, zmax: n - 0.5,
    colorscale, text: hover, hoverinfo: "text", xgap: 1, ygap: 1,
    colorbar: { tickvals: data.states.map((_, i) => i), ticktext: data.states },
  };
  const height = Math.max(320, 22 * data.symbols.length + 120);
  Plotly.react("coverage-heatmap", [trace], {
    height, margin: { l: 80, r: 20, t: 10, b: 60 }, yaxis: { autorange: "reversed", type: "category" },
    xaxis: { type: "category", nticks: 20 },
  }, { displaylogo: false, responsive: true });
}

// ---- freshness ----------------------------------------------------------------------------

async function loadFreshness() {
  const summary = document.getElementById("freshness-summary");
  try {
    const data = await getJson("api/freshness");
    summary.className = "summary";
    summary.textContent = `Latest closed session: ${data.expected_session} (as of ${data.as_of})`;
    fillTable(document.getElementById("freshness-table"), [
      ["dataset", "dataset"], ["timeframe", "timeframe"], ["latest session loaded", "latest_session"],
      ["expected", "expected_session"], ["symbols", "symbols", true],
      ["state", (r) => (r.fresh ? "fresh" : `${r.behind.length} behind`)],
      ["behind", (r) => r.behind.slice(0, 12).join(", ") + (r.behind.length > 12 ? " ..." : "")],
    ], data.rows);
  } catch (error) {
    showError(summary, error);
  }
}

// ---- ledgers ------------------------------------------------------------------------------

async function loadLedgers() {
  let data;
  try {
    data = await getJson("api/ledgers");
  } catch (error) {
    showError(document.getElementById("gaps-table"), error);
    return;
  }
  fillTable(document.getElementById("gaps-table"), [
    ["symbol", "symbol"], ["timeframe", "timeframe"], ["session", "session"], ["status", "status"],
    ["kind", "kind"], ["bars", (g) => `${g.found} / ${g.expected}`, true], ["attempts", "attempts", true],
    ["last error", "last_error"], ["next retry", "next_retry_at"],
  ], data.gaps);
  fillTable(document.getElementById("loads-table"), [
    ["loaded at", "loaded_at"], ["dataset", "dataset"], ["timeframe", "timeframe"],
    ["session", "session_date"], ["rows loaded", "rows_loaded", true],
    ["quarantined", "rows_quarantined", true], ["ETag", "etag"], ["object", "s3_key"],
  ], data.file_loads);
  fillTable(document.getElementById("quarantine-table"), [
    ["reason", "reason"], ["rows", "rows", true], ["sessions", (q) => `${q.first_session}..${q.last_session}`],
    ["sample", (q) => `${q.sample.symbol || ""} ${q.sample.session} line ${q.sample.line}: ${q.sample.raw}`],
  ], data.quarantine);
  fillTable(document.getElementById("actions-table"), [
    ["kind", "kind"], ["symbol", "symbol"], ["day", "day"], ["reason", "reason"],
    ["held back at", "quarantined_at"],
  ], data.corporate_actions_held_back);
}

// ---- backtests ----------------------------------------------------------------------------

async function loadBacktests() {
  let data;
  try {
    data = await getJson("api/backtests");
  } catch (error) {
    showError(document.getElementById("runs-table"), error);
    return;
  }
  fillTable(document.getElementById("runs-table"), [
    ["run", "run_id"], ["window", (r) => `${r.timeframe} ${r.start_date}..${r.end_date}`],
    ["symbols", "symbols", true], ["detectors", (r) => r.detectors.length, true], ["status", "status"],
    ["data", (r) => (r.stale === null ? "" : r.stale ? "stale: reloaded since" : "current")],
    ["search", (r) => (r.searched ? "yes" : "")], ["finished", "finished_at"],
  ], data.runs, (row, tr) => {
    for (const other of tr.parentNode.children) other.classList.remove("selected");
    tr.classList.add("selected");
    loadRun(row.run_id);
  });
  if (data.runs.length) loadRun(data.runs[0].run_id);
}

let runAsked = 0; // the run clicked last wins

async function loadRun(runId) {
  const ticket = ++runAsked;
  const title = document.getElementById("run-title");
  let data;
  try {
    data = await getJson(`api/backtests/${encodeURIComponent(runId)}`);
  } catch (error) {
    if (ticket === runAsked) {
      showError(title, error);
      for (const id of ["ranking-table", "folds-table", "search-table"]) document.getElementById(id).replaceChildren();
      Plotly.purge("equity-chart");
    }
    return;
  }
  if (ticket !== runAsked) return;
  title.className = "";
  title.textContent = `${runId}: detectors ranked by expectancy (R a trade), then profit factor`;
  fillTable(document.getElementById("ranking-table"), [
    ["#", "rank", true], ["detector", "detector"], ["trades", "trades", true],
    ["win rate", (r) => fixed(r.win_rate, 3), true], ["expectancy R", (r) => fixed(r.expectancy_r, 3), true],
    ["profit factor", (r) => fixed(r.profit_factor, 2), true], ["net P&L", (r) => fixed(r.net_pnl, 0), true],
    ["flags", (r) => r.flags.join("; ")],
  ], data.ranking);
  const traces = data.equity.map((c) => ({
    type: "scatter", mode: "lines", line: { shape: "hv", width: 1 }, x: c.times, y: c.returns,
    name: `${escaped(c.detector)} (${c.trades})`,
  }));
  Plotly.react("equity-chart", traces, {
    height: 420, margin: { l: 60, r: 20, t: 10, b: 40 }, yaxis: { title: { text: "return on capital (%)" } },
    xaxis: { title: { text: "exit time (UTC)" } },
    legend: { font: { size: 10 } },
  }, { displaylogo: false, responsive: true });
  const search = data.search;
  document.getElementById("search-title").textContent = search
    ? `Search of ${search.detector}: ranked out of sample (walk-forward expectancy ` +
      `${fixed(search.walk_forward.expectancy_r, 3)} R over ${search.walk_forward.trades} trades)`
    : "No parameter search in this run";
  document.getElementById("search-warnings").textContent = search ? search.warnings.join(" ") : "";
  fillTable(document.getElementById("folds-table"), search ? [
    ["fold", "fold", true], ["training", (f) => f.train.join("..")], ["test", (f) => f.test.join("..")],
    ["chosen in training", (f) => JSON.stringify(f.chosen)],
    ["in-sample R", (f) => fixed(f.in_sample.expectancy_r, 3), true],
    ["out-of-sample R", (f) => fixed(f.out_of_sample.expectancy_r, 3), true],
  ] : [], search ? search.folds : []);
  fillTable(document.getElementById("search-table"), search ? [
    ["#", (r) => search.ranking.indexOf(r) + 1, true], ["parameters", (r) => JSON.stringify(r.parameters)],
    ["out-of-sample R", (r) => fixed(r.out_of_sample.expectancy_r, 3), true],
    ["trades", (r) => r.out_of_sample.trades, true],
    ["in-sample R", (r) => fixed(r.in_sample.expectancy_r, 3), true],
  ] : [], search ? search.ranking.slice(0, 50) : []);
}

// ---- wiring -------------------------------------------------------------------------------

const LOADERS = { coverage: loadCoverage, freshness: loadFreshness, ledgers: loadLedgers, backtests: loadBacktests };
const loaded = new Set();

function show(panel) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.panel === panel);
  }
  for (const section of document.querySelectorAll(".panel")) {
    section.classList.toggle("active", section.id === panel);
  }
  if (!loaded.has(panel)) {
    loaded.add(panel);
    LOADERS[panel]();
  }
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => show(button.dataset.panel));
}
document.getElementById("coverage-form").addEventListener("submit", loadCoverage);
show("coverage");
