// evonas dashboard: plain JavaScript over the JSON API (evonas/dashboard.py), redrawn every
// POLL ms from fresh data; plotly.js draws the figures. Routes live in the URL's hash:
//   #/                  the runs            #/run/NAME        one run
//   #/run/NAME/UID      one individual      #/compare/A,B     several runs side by side
"use strict";

const POLL = 2000;
const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
const table = { sort: "uid", desc: false, filter: "" }; // kept across redraws
let current = null; // the route being shown; a redraw for another route is dropped
let latest = null; // the run last fetched (the filter box redraws from it)
let shown = ""; // the data last drawn: a page is redrawn only when it changed
const changed = (data, fresh) => { const text = JSON.stringify(data); const news = fresh || text !== shown; shown = text; return news; };

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (v) => v === null || v === undefined ? "" : Number.isInteger(v) ? v.toLocaleString("en")
  : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en") : Number(v).toPrecision(4);
const link = (href, text) => `<a href="${esc(href)}">${esc(text)}</a>`;
const runHref = (name) => `#/run/${encodeURIComponent(name)}`;

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error((await response.json()).error || response.statusText);
  return response.json();
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "run" && parts.length === 2) return { page: "run", name: parts[1] };
  if (parts[0] === "run" && parts.length === 3) return { page: "individual", name: parts[1], uid: +parts[2] };
  if (parts[0] === "compare" && parts[1]) return { page: "compare", names: parts[1].split(",") };
  return { page: "runs" };
}

async function refresh(fresh) {
  const here = route();
  const key = JSON.stringify(here);
  if (fresh) { current = key; Object.assign(table, { sort: "uid", desc: false, filter: "" }); }
  try {
    const pages = { runs: showRuns, run: showRun, individual: showIndividual, compare: showCompare };
    await pages[here.page](here, fresh, () => current === key);
    live.classList.remove("stale");
    live.textContent = "live";
  } catch (error) {
    live.classList.add("stale");
    live.textContent = `not updating: ${error.message}`;
    if (fresh) view.innerHTML = `<p class="muted">${esc(error.message)}</p>`;
  }
}

function plot(id, traces, layout) {
  const div = document.getElementById(id);
  if (!div) return;
  Plotly.react(div, traces, { margin: { t: 30, r: 20, b: 45, l: 60 }, hovermode: "closest",
    legend: { orientation: "h" }, ...layout }, { displaylogo: false, responsive: true });
}

// --- the runs -----------------------------------------------------------------------------------

async function showRuns(here, fresh, still) {
  const runs = await api("/api/runs");
  if (!still() || !changed(runs, fresh)) return;
  crumbs.innerHTML = "runs";
  const names = new Set([...document.querySelectorAll("input.pick:checked")].map((i) => i.value));
  const rows = runs.map((r) => {
    const best = Object.entries(r.best || {}).map(([k, v]) => `${esc(k)} ${num(v)}`).join(", ");
    const progress = r.generation === null || r.generation === undefined ? "–"
      : `${num(r.generation)}/${esc(r.generations ?? "?")}`;
    return `<tr><td><input type="checkbox" class="pick" value="${esc(r.name)}"
      ${names.has(r.name) ? "checked" : ""}></td><td>${link(runHref(r.name), r.name)}</td>
      <td class="state ${esc(r.state)}">${esc(r.state)}</td><td>${progress}</td>
      <td>${num(r.evaluations)}</td><td>${num(r.failed)}</td><td>${best || esc(r.error || "")}</td></tr>`;
  }).join("");
  view.innerHTML = `<h1>Runs</h1>
    <div class="toolbar"><button id="compare">compare the checked runs</button></div>
    <table id="runs"><thead><tr><th></th><th>run</th><th>state</th><th>generation</th>
    <th>evaluations</th><th>failed</th><th>best</th></tr></thead><tbody>${rows ||
      '<tr><td colspan="7" class="muted">no runs yet</td></tr>'}</tbody></table>`;
  document.getElementById("compare").onclick = () => {
    const picked = [...document.querySelectorAll("input.pick:checked")].map((i) => i.value);
    if (picked.length) location.hash = `#/compare/${picked.map(encodeURIComponent).join(",")}`;
  };
}

// --- one run ------------------------------------------------------------------------------------

async function showRun(here, fresh, still) {
  const run = await api(`/api/run/${encodeURIComponent(here.name)}`);
  if (!still() || !changed(run, fresh)) return;
  crumbs.innerHTML = `${link("#/", "runs")} / ${esc(run.name)}`;
  if (fresh || !document.getElementById("individuals")) {
    view.innerHTML = `<h1>${esc(run.name)} <span class="state ${esc(run.state)}">${esc(run.state)}</span>
      <span class="muted" id="reason"></span></h1>
      <div class="grid"><div class="card"><div id="progress" class="plot"></div></div>
      <div class="card"><div id="pareto" class="plot"></div></div></div>
      <h2>Individuals <span class="muted" id="count"></span></h2>
      <div class="toolbar"><input type="search" id="filter" placeholder="filter: any text, e.g. ok, conv 32, crossover">
      <a class="button" id="csv" download href="/api/run/${encodeURIComponent(run.name)}/individuals.csv">download CSV</a></div>
      <div class="scroll"><table id="individuals"></table></div>
      <div class="grid"><div><h2>Operators</h2><table id="operators"></table></div>
      <div><h2>Failures</h2><table id="failures"></table></div></div>`;
    const filter = document.getElementById("filter");
    filter.oninput = () => { table.filter = filter.value; drawIndividuals(latest); };
  }
  latest = run;
  document.getElementById("reason").textContent = run.reason && run.state !== "running" ? run.reason : "";
  drawProgress(run);
  drawPareto(run);
  drawIndividuals(run);
  drawOperators(run);
  drawFailures(run);
}

function drawProgress(run) {
  const traces = [];
  for (const o of run.objectives) {
    for (const kind of ["best", "median"]) {
      traces.push({ x: run.generations.map((g) => g.generation), y: run.generations.map((g) => g[`${kind}_${o.name}`]),
        name: `${kind} ${o.name}`, mode: "lines+markers", yaxis: o === run.objectives[0] ? "y" : "y2",
        line: { dash: kind === "best" ? "solid" : "dot" } });
    }
  }
  const second = run.objectives[1];
  plot("progress", traces, { title: { text: "progress per generation", font: { size: 14 } },
    margin: { t: 30, r: second ? 70 : 20, b: 45, l: 60 },
    xaxis: { title: "generation", dtick: 1 }, yaxis: { title: run.objectives[0].name },
    yaxis2: second ? { title: second.name, overlaying: "y", side: "right" } : undefined });
}

function hover(i, run) {
  const metrics = [...run.objectives.map((o) => o.name), "params", "flops"]
    .filter((m, k, all) => all.indexOf(m) === k && i.metrics[m] !== null && i.metrics[m] !== undefined)
    .map((m) => `${m}: ${num(i.metrics[m])}`).join("<br>");
  return `<b>uid ${i.uid}</b> (gen ${i.generation}, ${esc(i.operator)}, ${esc(i.status)})<br>${metrics}<br>${esc(i.genome)}`;
}

function drawPareto(run) {
  const [y, x2] = run.objectives.map((o) => o.name);
  const x = x2 || "uid";
  const value = (i, m) => m === "uid" ? i.uid : i.metrics[m];
  const trained = run.individuals.filter((i) => i.status === "ok" && value(i, y) !== null && value(i, x) !== null);
  const groups = [
    { name: "evaluated", rows: trained.filter((i) => i.feasible && !i.on_front),
      marker: { color: trained.filter((i) => i.feasible && !i.on_front).map((i) => i.generation),
        colorscale: "Viridis", size: 8, colorbar: { title: "gen", thickness: 10 } } },
    { name: "Pareto front", rows: trained.filter((i) => i.on_front),
      marker: { color: "crimson", size: 11, symbol: "diamond" } },
    { name: "infeasible", rows: trained.filter((i) => !i.feasible), marker: { color: "#9ca3af", symbol: "x", size: 8 } },
  ];
  const traces = groups.filter((g) => g.rows.length).map((g) => ({
    type: "scatter", mode: "markers", name: g.name, x: g.rows.map((i) => value(i, x)),
    y: g.rows.map((i) => value(i, y)), customdata: g.rows.map((i) => i.uid),
    text: g.rows.map((i) => hover(i, run)), hovertemplate: "%{text}<extra></extra>", marker: g.marker }));
  plot("pareto", traces, { title: { text: "click a point for its page", font: { size: 14 } },
    xaxis: { title: x, type: ["params", "flops", "size_bytes"].includes(x) ? "log" : "linear" },
    yaxis: { title: y } });
  const div = document.getElementById("pareto");
  if (div && !div.dataset.clicks) {
    div.dataset.clicks = "1";
    div.on("plotly_click", (event) => {
      const uid = event.points[0].customdata;
      location.hash = `${runHref(run.name)}/${uid}`;
    });
  }
}

function drawIndividuals(run) {
  const metrics = run.metrics;
  const columns = ["uid", "generation", "status", "operator", "parents", "genome", ...metrics];
  const cell = (i, c) => c === "parents" ? i.parents.join(" ") : metrics.includes(c) ? i.metrics[c] : i[c];
  const needle = table.filter.trim().toLowerCase();
  let rows = run.individuals.filter((i) => !needle ||
    columns.some((c) => String(cell(i, c) ?? "").toLowerCase().includes(needle)));
  rows = rows.slice().sort((a, b) => {
    const [p, q] = [cell(a, table.sort), cell(b, table.sort)];
    const order = p === q ? a.uid - b.uid : p === null || p === undefined ? 1 : q === null || q === undefined ? -1
      : typeof p === "number" && typeof q === "number" ? p - q : String(p).localeCompare(String(q));
    return table.desc ? -order : order;
  });
  document.getElementById("count").textContent = `${rows.length} of ${run.individuals.length}`;
  const head = columns.map((c) => `<th data-column="${esc(c)}" class="${c === table.sort ?
    (table.desc ? "sorted-desc" : "sorted-asc") : ""}">${esc(c)}</th>`).join("");
  const body = rows.map((i) => `<tr class="${esc(i.status)}${i.feasible || i.status !== "ok" ? "" : " infeasible"}"
    data-uid="${i.uid}">${columns.map((c) => c === "uid" ? `<td>${link(`${runHref(run.name)}/${i.uid}`, i.uid)}</td>`
      : c === "genome" ? `<td class="genome">${esc(i.genome)}</td>`
      : `<td>${typeof cell(i, c) === "number" ? num(cell(i, c)) : esc(cell(i, c))}</td>`).join("")}</tr>`).join("");
  const element = document.getElementById("individuals");
  element.innerHTML = `<thead><tr>${head}</tr></thead><tbody>${body}</tbody>`;
  element.querySelectorAll("th").forEach((th) => th.onclick = () => {
    const column = th.dataset.column;
    table.desc = table.sort === column ? !table.desc : false;
    table.sort = column;
    drawIndividuals(latest);
  });
}

function drawOperators(run) {
  const columns = run.operators.length ? Object.keys(run.operators[0]) : [];
  document.getElementById("operators").innerHTML = columns.length ? `<thead><tr>${columns.map((c) =>
    `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${run.operators.map((o) => `<tr>${columns.map((c) =>
    `<td>${typeof o[c] === "number" ? num(o[c]) : esc(o[c])}</td>`).join("")}</tr>`).join("")}</tbody>`
    : `<tr><td class="muted">no children yet</td></tr>`;
}

function drawFailures(run) {
  document.getElementById("failures").innerHTML = run.failures.length ? `<thead><tr><th>uid</th>
    <th>status</th><th>error</th></tr></thead><tbody>${run.failures.map((f) => `<tr class="failed">
    <td>${link(`${runHref(run.name)}/${f.uid}`, f.uid)}</td><td>${esc(f.status)}</td>
    <td class="genome">${esc(f.error)}</td></tr>`).join("")}</tbody>`
    : `<tr><td class="muted">no failures</td></tr>`;
}

// --- one individual -----------------------------------------------------------------------------

async function showIndividual(here, fresh, still) {
  const ind = await api(`/api/run/${encodeURIComponent(here.name)}/individual/${here.uid}`);
  if (!still() || !changed(ind, fresh)) return;
  crumbs.innerHTML = `${link("#/", "runs")} / ${link(runHref(here.name), here.name)} / uid ${ind.uid}`;
  const metrics = Object.entries(ind.metrics).filter(([, v]) => v !== null)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${num(v)}</td></tr>`).join("");
  const lineage = ind.lineage.map((r) => `<tr><td>${r.depth === 0 ? r.uid : link(`${runHref(here.name)}/${r.uid}`, r.uid)}</td>
    <td>${r.depth}</td><td>${r.generation}</td><td>${esc(r.operator)}</td><td>${esc(r.status)}</td></tr>`).join("");
  view.innerHTML = `<h1>uid ${ind.uid} <span class="muted">${esc(ind.status)}, generation ${ind.generation},
    ${esc(ind.operator)}</span></h1>
    ${ind.error ? `<p class="state failed">${esc(ind.error)}</p>` : ""}
    <p><code>${esc(ind.summary)}</code></p>
    ${ind.trained ? `<p>Export: <code id="export">${esc(ind.export)}</code></p>` : ""}
    <div class="grid"><div class="card"><h2>Genome</h2><div id="genome"></div></div>
    <div class="card"><h2>Learning curve</h2><div id="curve" class="plot"></div></div></div>
    <div class="grid"><div><h2>Metrics</h2><table>${metrics}</table></div>
    <div><h2>Lineage</h2><table><thead><tr><th>uid</th><th>depth</th><th>generation</th><th>operator</th>
    <th>status</th></tr></thead><tbody>${lineage}</tbody></table></div></div>`;
  document.getElementById("genome").innerHTML = genomeSvg(ind.graph);
  const names = ind.curve.length ? Object.keys(ind.curve[0]).filter((k) => k !== "epoch") : [];
  if (names.length) {
    plot("curve", names.map((m, k) => ({ x: ind.curve.map((p) => p.epoch), y: ind.curve.map((p) => p[m]),
      name: m, mode: "lines+markers", yaxis: k ? "y2" : "y" })), { xaxis: { title: "epoch", dtick: 1 },
      yaxis: { title: names[0] }, yaxis2: names[1] ? { title: names[1], overlaying: "y", side: "right" } : undefined });
  } else {
    document.getElementById("curve").innerHTML = '<p class="muted">no learning curve was kept</p>';
  }
}

function genomeSvg(graph) {
  // Layered drawing: a node's layer is one more than its deepest input's; edges as curves.
  const layer = new Map([[0, 0]]);
  for (const [from, to] of graph.edges) layer.set(to, Math.max(layer.get(to) ?? 0, (layer.get(from) ?? 0) + 1));
  const rows = new Map();
  for (const node of graph.nodes) {
    const l = layer.get(node.id) ?? 0;
    rows.set(l, [...(rows.get(l) || []), node]);
  }
  const width = 230, height = 34, gap = 22;
  const where = new Map();
  const widest = Math.max(...[...rows.values()].map((r) => r.length));
  for (const [l, nodes] of rows) {
    nodes.forEach((node, k) => where.set(node.id, { x: 10 + (k + (widest - nodes.length) / 2) * (width + 20),
      y: 10 + l * (height + gap) }));
  }
  const edges = graph.edges.map(([from, to]) => {
    const a = where.get(from), b = where.get(to);
    const x1 = a.x + width / 2, y1 = a.y + height, x2 = b.x + width / 2, y2 = b.y;
    return `<path d="M${x1},${y1} C${x1},${y1 + gap} ${x2},${y2 - gap} ${x2},${y2}"/>`;
  }).join("");
  const nodes = graph.nodes.map((node) => {
    const p = where.get(node.id);
    const label = node.label.length > 32 ? `${node.label.slice(0, 31)}…` : node.label;
    return `<g class="node ${esc(node.op)}" data-id="${node.id}"><title>${esc(node.label)}</title>
      <rect x="${p.x}" y="${p.y}" width="${width}" height="${height}" rx="5"/>
      <text x="${p.x + 8}" y="${p.y + 21}">${esc(label)}</text></g>`;
  }).join("");
  const w = 20 + widest * (width + 20), h = 20 + rows.size * (height + gap);
  return `<svg class="genome" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${edges}${nodes}</svg>`;
}

// --- several runs -------------------------------------------------------------------------------

async function showCompare(here, fresh, still) {
  const data = await api(`/api/compare?runs=${here.names.map(encodeURIComponent).join(",")}`);
  if (!still() || !changed(data, fresh)) return;
  crumbs.innerHTML = `${link("#/", "runs")} / compare`;
  if (fresh || !document.getElementById("by-evaluation")) {
    view.innerHTML = `<h1>${here.names.map(esc).join(" · ")}</h1><div class="grid">
      <div class="card"><div id="by-evaluation" class="plot"></div></div>
      <div class="card"><div id="by-seconds" class="plot"></div></div></div>`;
  }
  for (const [id, x, title] of [["by-evaluation", "evaluation", "evaluations"], ["by-seconds", "seconds", "training seconds"]]) {
    plot(id, here.names.map((name) => {
      const rows = data.filter((r) => r.run === name);
      return { x: rows.map((r) => r[x]), y: rows.map((r) => r.best_so_far), name, mode: "lines", line: { shape: "hv" } };
    }), { title: { text: `best so far against ${title}`, font: { size: 14 } }, xaxis: { title } });
  }
}

window.addEventListener("hashchange", () => refresh(true));
refresh(true);
setInterval(() => refresh(false), POLL);
