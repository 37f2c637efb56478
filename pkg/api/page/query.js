// skyhouse query page: lists the tables, runs read-only SQL through
// POST /v1/sql, shows the answer as a table and, for a time column with
// numeric columns, as a chart. No dependencies, no build step.
"use strict";

// Example queries: [label, SQL]. Each reads an aggregate or a view whose
// cost follows its window or one account (README "Views"), except where the
// label says it scans a table.
const EXAMPLES = [
  ["Daily posts and posting accounts, last 30 days (daily_stats)",
    "SELECT day, records AS posts, actors AS accounts\nFROM daily_stats FINAL\nWHERE collection = 'app.bsky.feed.post' AND day >= today() - 30\nORDER BY day"],
  ["Daily records per collection, last 30 days (daily_stats)",
    "SELECT day, collection, records\nFROM daily_stats FINAL\nWHERE day >= today() - 30\n  AND collection IN ('app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.feed.repost', 'app.bsky.graph.follow')\nORDER BY day, collection"],
  ["Posts per hour, last 72 hours (recent_posts_72h)",
    "SELECT toStartOfHour(tid_time) AS hour, count() AS posts, uniqExact(did) AS accounts\nFROM recent_posts_72h\nGROUP BY hour\nORDER BY hour"],
  ["Top hashtags, last 72 hours (recent_posts_72h)",
    "SELECT lowerUTF8(arrayJoin(tags)) AS tag, count() AS posts\nFROM recent_posts_72h\nGROUP BY tag\nORDER BY posts DESC, tag\nLIMIT 20"],
  ["Languages, last 72 hours (recent_posts_72h)",
    "SELECT arrayJoin(langs) AS lang, count() AS posts\nFROM recent_posts_72h\nGROUP BY lang\nORDER BY posts DESC, lang\nLIMIT 20"],
  ["Trending now: the whats-hot order (recent_posts_with_score)",
    "SELECT uri, likes, reposts, round(score, 3) AS score, substring(text, 1, 80) AS text\nFROM recent_posts_with_score\nWHERE likes + reposts > 0\nORDER BY score DESC, uri DESC\nLIMIT 30"],
  ["An account's followers and follows (follower_counts, following_counts)",
    "SELECT 'followers' AS count, followers AS accounts FROM follower_counts WHERE did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'\nUNION ALL\nSELECT 'follows', follows FROM following_counts WHERE did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'"],
  ["An account's latest posts (posts_live)",
    "SELECT created_at, rkey, text\nFROM posts_live\nWHERE did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'\nORDER BY rkey DESC\nLIMIT 20"],
  ["JSONBench Q1: records per collection (daily_stats)",
    "SELECT collection, sum(records) AS records\nFROM daily_stats FINAL\nGROUP BY collection\nHAVING records > 0\nORDER BY records DESC, collection"],
  ["JSONBench Q2: records and distinct accounts per collection (daily_stats)",
    "SELECT collection, sum(records) AS records, uniqMerge(actors_state) AS accounts\nFROM daily_stats FINAL\nGROUP BY collection\nHAVING records > 0\nORDER BY records DESC, collection"],
  ["JSONBench Q3: posts, reposts and likes by hour of the day (daily_stats)",
    "SELECT collection, h.1 AS hour, h.2 AS records\nFROM (\n  SELECT collection, sumForEach(hour_counts) AS per_hour\n  FROM daily_stats FINAL\n  WHERE collection IN ('app.bsky.feed.post', 'app.bsky.feed.repost', 'app.bsky.feed.like')\n    AND length(hour_counts) = 24\n  GROUP BY collection\n) ARRAY JOIN arrayMap((c, i) -> (i, c), per_hour, range(24)) AS h\nORDER BY hour, collection"],
  ["JSONBench Q4: the 3 accounts that posted first (scans posts)",
    "SELECT did, min(created_at) AS first_post\nFROM posts_live\nGROUP BY did\nORDER BY first_post, did\nLIMIT 3"],
  ["JSONBench Q5: the 3 longest posting spans (scans posts)",
    "SELECT did, toUInt32(max(created_at)) - toUInt32(min(created_at)) AS span_secs\nFROM posts_live\nGROUP BY did\nORDER BY span_secs DESC, did\nLIMIT 3"],
];

const KEY = "skyhouse.key";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
/// At most this many rows go into the table (the chart uses them all).
const SHOWN_ROWS = 2000;
/// At most this many lines in a chart.
const MAX_SERIES = 8;
const COLORS = ["#0a66c2", "#e8590c", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#5c940d", "#d6336c"];

let tablesLoaded = false;

function key() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

function setKey(value, remember) {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  if (value) (remember ? localStorage : sessionStorage).setItem(KEY, value);
}

/// Runs `sql` through the explorer: {rows, columns, data}, or throws an Error
/// whose message is the server's one line.
async function runSql(sql) {
  let resp;
  try {
    resp = await fetch("/v1/sql", {
      method: "POST",
      headers: { "authorization": "Bearer " + key(), "content-type": "application/json" },
      body: JSON.stringify({ query: sql }),
    });
  } catch (e) {
    throw new Error("the server did not answer: " + e.message);
  }
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON: said below */ }
  if (!resp.ok) {
    throw new Error(body && body.message ? body.message : "HTTP " + resp.status);
  }
  if (!body || !Array.isArray(body.data)) throw new Error("the answer is not rows");
  return body;
}

// ---------------------------------------------------------------------------
// tables

async function loadTables() {
  const box = $("tables");
  if (!key()) {
    box.className = "hint";
    box.textContent = "Enter a key to list the tables.";
    tablesLoaded = false;
    return;
  }
  box.className = "hint";
  box.textContent = "Loading…";
  try {
    const [tables, columns] = await Promise.all([
      runSql("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name NOT LIKE '.inner%'"),
      runSql("SELECT table, name, type FROM system.columns WHERE database = currentDatabase() AND table NOT LIKE '.inner%'"),
    ]);
    const byTable = new Map();
    for (const t of tables.data) byTable.set(t.name, { engine: t.engine, columns: [] });
    for (const c of columns.data) {
      const t = byTable.get(c.table);
      if (t) t.columns.push([c.name, c.type]);
    }
    box.className = "";
    box.textContent = "";
    // Views first: they are where exploring starts.
    const order = (e) => (e === "View" ? 0 : e === "MaterializedView" ? 2 : 1);
    const names = [...byTable.keys()].sort((a, b) =>
      order(byTable.get(a).engine) - order(byTable.get(b).engine) || a.localeCompare(b));
    for (const name of names) box.appendChild(tableEntry(name, byTable.get(name)));
    tablesLoaded = true;
    filterTables();
  } catch (e) {
    box.className = "hint";
    box.textContent = "";
    showError(e.message);
  }
}

function tableEntry(name, t) {
  const d = document.createElement("details");
  d.dataset.table = name;
  const s = document.createElement("summary");
  s.textContent = name;
  s.title = "Click the name twice to query the table";
  const engine = document.createElement("span");
  engine.className = "engine";
  engine.textContent = t.engine === "View" ? "view" : t.engine === "MaterializedView" ? "mat. view" : "";
  s.appendChild(engine);
  s.addEventListener("dblclick", (ev) => {
    ev.preventDefault();
    setQuery("SELECT *\nFROM " + name + "\nLIMIT 100");
    run();
  });
  d.appendChild(s);
  const ul = document.createElement("ul");
  for (const [col, type] of t.columns) {
    const li = document.createElement("li");
    const c = document.createElement("span");
    c.className = "col";
    c.textContent = col;
    const ty = document.createElement("span");
    ty.className = "type";
    ty.textContent = type;
    ty.title = type;
    li.append(c, ty);
    li.title = "Insert " + col;
    li.addEventListener("click", () => insertAtCursor(col));
    ul.appendChild(li);
  }
  d.appendChild(ul);
  return d;
}

function filterTables() {
  const f = $("table-filter").value.trim().toLowerCase();
  for (const d of $("tables").querySelectorAll("details")) {
    const cols = [...d.querySelectorAll("li .col")].map((c) => c.textContent.toLowerCase());
    const hit = !f || d.dataset.table.toLowerCase().includes(f) || cols.some((c) => c.includes(f));
    d.hidden = !hit;
  }
}

function insertAtCursor(text) {
  const ta = $("sql");
  const [a, b] = [ta.selectionStart, ta.selectionEnd];
  ta.value = ta.value.slice(0, a) + text + ta.value.slice(b);
  ta.selectionStart = ta.selectionEnd = a + text.length;
  ta.focus();
}

// ---------------------------------------------------------------------------
// the query, the URL

function setQuery(sql) {
  $("sql").value = sql;
}

/// The query of the URL's fragment (#q=…), or "".
function queryFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  return params.get("q") || "";
}

function keepInUrl(sql) {
  const hash = "#" + new URLSearchParams({ q: sql }).toString();
  if (location.hash !== hash) history.pushState(null, "", hash);
}

let running = 0;

async function run() {
  const sql = $("sql").value.trim();
  if (!sql) return;
  keepInUrl(sql);
  hideError();
  if (!key()) {
    showError("an API key is required: enter an admin key above");
    return;
  }
  const mine = ++running;
  $("run").disabled = true;
  $("status").textContent = "Running…";
  const started = performance.now();
  try {
    const answer = await runSql(sql);
    if (mine !== running) return;
    const ms = Math.round(performance.now() - started);
    const n = answer.data.length;
    $("status").textContent = `${n} row${n === 1 ? "" : "s"} in ${ms} ms` +
      (n > SHOWN_ROWS ? ` (the table shows the first ${SHOWN_ROWS})` : "");
    const columns = answer.columns && answer.columns.length ? answer.columns
      : Object.keys(answer.data[0] || {});
    showTable(columns, answer.data);
    showChart(columns, answer.data);
    if (!tablesLoaded) loadTables();
  } catch (e) {
    if (mine !== running) return;
    $("status").textContent = "";
    $("result").textContent = "";
    hideChart();
    showError(e.message);
  } finally {
    if (mine === running) $("run").disabled = false;
  }
}

function showError(message) {
  const box = $("error");
  // One line, as the server says it.
  box.textContent = String(message).split("\n")[0];
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---------------------------------------------------------------------------
// the table

function cellText(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function showTable(columns, rows) {
  const box = $("result");
  box.textContent = "";
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const row of rows.slice(0, SHOWN_ROWS)) {
    const tr = body.insertRow();
    for (const c of columns) {
      const td = tr.insertCell();
      const v = row[c];
      td.textContent = cellText(v);
      if (typeof v === "number") td.className = "num";
      else if (v === null) td.className = "null";
      if (td.textContent.length > 60) td.title = td.textContent;
    }
  }
  box.appendChild(table);
}

// ---------------------------------------------------------------------------
// the chart

const TIME = /^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?Z?$/;

/// Milliseconds of a ClickHouse Date or DateTime (read as UTC).
function timeOf(s) {
  const iso = s.length === 10 ? s + "T00:00:00Z" : s.replace(" ", "T").replace(/Z?$/, "Z");
  return Date.parse(iso);
}

/// What to draw, or null: the first column whose values are all dates or
/// times is x; each numeric column is a line, or, with exactly one numeric
/// and one text column, each value of the text column is a line.
function chartPlan(columns, rows) {
  if (rows.length < 1) return null;
  const all = (c, ok) => rows.every((r) => ok(r[c]));
  const time = columns.find((c) => all(c, (v) => typeof v === "string" && TIME.test(v)));
  if (!time) return null;
  const numeric = columns.filter((c) => c !== time && all(c, (v) => typeof v === "number"));
  if (numeric.length === 0) return null;
  const text = columns.filter((c) => c !== time && !numeric.includes(c));
  const series = new Map();
  const add = (name, t, y) => {
    if (!series.has(name)) series.set(name, []);
    series.get(name).push([t, y]);
  };
  if (numeric.length === 1 && text.length === 1) {
    for (const r of rows) add(cellText(r[text[0]]), timeOf(r[time]), r[numeric[0]]);
  } else {
    for (const r of rows) for (const c of numeric) add(c, timeOf(r[time]), r[c]);
  }
  // The largest lines when there are too many.
  const total = (pts) => pts.reduce((s, p) => s + Math.abs(p[1]), 0);
  const lines = [...series.entries()]
    .sort((a, b) => total(b[1]) - total(a[1]))
    .slice(0, MAX_SERIES)
    .map(([name, pts]) => ({ name, pts: pts.sort((a, b) => a[0] - b[0]) }));
  const dropped = series.size - lines.length;
  const dateOnly = rows.every((r) => r[time].length === 10);
  return { time, lines, dropped, dateOnly };
}

/// About `n` round steps from lo (rounded down) to hi (rounded up).
function ticks(lo, hi, n) {
  if (hi === lo) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  const top = Math.ceil(hi / step) * step;
  for (let v = Math.floor(lo / step) * step; v <= top + step / 1e6; v += step) out.push(v);
  return out;
}

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function hideChart() {
  $("chart").hidden = true;
  $("chart").textContent = "";
}

function showChart(columns, rows) {
  const plan = chartPlan(columns, rows);
  const fig = $("chart");
  fig.textContent = "";
  if (!plan) {
    fig.hidden = true;
    return;
  }
  const W = 960, H = 280, L = 56, R = 16, T = 14, B = 28;
  // Loops, not Math.min(...xs): an answer may have 10,000 rows.
  let [x0, x1, ylo, yhi] = [Infinity, -Infinity, 0, -Infinity];
  for (const l of plan.lines) {
    for (const [t, v] of l.pts) {
      x0 = Math.min(x0, t); x1 = Math.max(x1, t);
      ylo = Math.min(ylo, v); yhi = Math.max(yhi, v);
    }
  }
  if (x0 === x1) { x0 -= 86400000 / 2; x1 += 86400000 / 2; }
  const yt = ticks(ylo, Math.max(yhi, ylo + 1), 5);
  const y0 = yt[0], top = yt[yt.length - 1];
  const sx = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => H - B - ((v - y0) / (top - y0)) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "chart of " + plan.time });
  for (const v of yt) {
    svg.appendChild(el("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    svg.appendChild(el("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, compact(v)));
  }
  svg.appendChild(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const fmt = (t) => {
    const iso = new Date(t).toISOString();
    return plan.dateOnly || x1 - x0 > 3 * 86400000 ? iso.slice(0, 10) : iso.slice(5, 16).replace("T", " ");
  };
  const nx = 6;
  for (let i = 0; i <= nx; i++) {
    const t = x0 + ((x1 - x0) * i) / nx;
    const anchor = i === 0 ? "start" : i === nx ? "end" : "middle";
    svg.appendChild(el("text", { x: sx(t), y: H - 8, "text-anchor": anchor }, fmt(t)));
  }
  plan.lines.forEach((line, i) => {
    const color = COLORS[i % COLORS.length];
    const points = line.pts.map(([t, v]) => `${sx(t).toFixed(1)},${sy(v).toFixed(1)}`).join(" ");
    const pl = el("polyline", { points, fill: "none", stroke: color, "stroke-width": 2, "data-series": line.name });
    svg.appendChild(pl);
    if (line.pts.length <= 60) {
      for (const [t, v] of line.pts) {
        const dot = el("circle", { cx: sx(t), cy: sy(v), r: 3, fill: color });
        dot.appendChild(el("title", {}, `${line.name}: ${v} at ${fmt(t)}`));
        svg.appendChild(dot);
      }
    }
  });
  fig.appendChild(svg);
  const cap = document.createElement("figcaption");
  plan.lines.forEach((line, i) => {
    const item = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = COLORS[i % COLORS.length];
    item.append(sw, line.name);
    cap.appendChild(item);
  });
  if (plan.dropped > 0) {
    const more = document.createElement("span");
    more.className = "hint";
    more.textContent = `(${plan.dropped} smaller lines not drawn)`;
    cap.appendChild(more);
  }
  fig.appendChild(cap);
  fig.hidden = false;
}

// ---------------------------------------------------------------------------
// wiring

function start() {
  const select = $("examples");
  EXAMPLES.forEach(([label], i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = label;
    select.appendChild(o);
  });
  select.addEventListener("change", () => {
    const ex = EXAMPLES[Number(select.value)];
    if (!select.value || !ex) return;
    setQuery(ex[1]);
    select.value = "";
    run();
  });
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("key").value.trim();
    setKey(value, $("remember").checked);
    $("key").value = "";
    $("key").placeholder = value ? "key set (enter another to replace it)" : "an admin key (sh_…)";
    hideError();
    loadTables();
    if (value && $("sql").value.trim()) run();
  });
  $("forget-key").addEventListener("click", () => {
    setKey("", false);
    $("key").placeholder = "an admin key (sh_…)";
    loadTables();
  });
  $("run").addEventListener("click", run);
  $("sql").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run();
    }
  });
  $("table-filter").addEventListener("input", filterTables);
  window.addEventListener("popstate", fromUrl);
  window.addEventListener("hashchange", fromUrl);
  if (key()) {
    $("key").placeholder = "key set (enter another to replace it)";
    $("remember").checked = !!localStorage.getItem(KEY);
  }
  loadTables();
  fromUrl();
}

/// Shows (and, with a key, runs) the query the URL holds.
function fromUrl() {
  const q = queryFromUrl();
  if (!q || q === $("sql").value.trim()) return;
  setQuery(q);
  if (key()) run();
}

start();
