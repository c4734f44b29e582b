// LSM explorer front end: plain JavaScript over the /api endpoints (see lsm/explore/app.py).
// Libraries are vendored files: uPlot (charts), graphology + sigma (the WebGL social graph).
"use strict";

const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"];
const TIE_COLORS = { household: "#e45756", friend: "#4c78a8", professional: "#54a24b", weak_tie: "#bab0ac", media: "#b279a2" };
const $ = (id) => document.getElementById(id);
const state = { files: [], a: null, b: null, overview: null, graph: null, sigma: null, charts: {} };
window.lsm = state; // the browser tests read the renderer and the loaded data from here

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function pct(x) { return x == null ? "–" : (100 * x).toFixed(1) + "%"; }
function num(x, d = 3) { return x == null ? "–" : Number(x).toFixed(d); }
function status(msg) { $("status").textContent = msg || ""; }

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ------------------------------------------------------------------ charts
function chart(id, title, xs, series, opts = {}) {
  const el = $(id);
  if (state.charts[id]) state.charts[id].destroy();
  el.innerHTML = "";
  const width = Math.max(520, Math.min(760, el.parentElement.clientWidth - 16 || 600));
  const o = {
    width, height: 260, title: "",
    scales: { x: { time: false }, ...(opts.scales || {}) },
    axes: [opts.xlabel ? { label: opts.xlabel } : { label: "tick", incrs: [1, 2, 5, 10, 20, 50, 100] }, { label: opts.ylabel || "" }],
    series: [{ label: opts.xlabel || "tick" }, ...series.map((s, k) => ({
      label: s.label, stroke: s.color || PALETTE[k % PALETTE.length], width: s.width || 2, dash: s.dash,
      points: { show: xs.length < 20 }, value: (u, v) => (v == null ? "–" : v.toFixed(3)),
    }))],
    bands: opts.bands, hooks: opts.hooks || {},
  };
  const u = new uPlot(o, [xs, ...series.map((s) => s.data)], el);
  state.charts[id] = u;
  el.dataset.rendered = "1";
  return u;
}

function eventLines(events) {
  // uPlot draw hook: a dashed vertical line at each event's tick
  return { draw: [(u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#999"; ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
    for (const t of new Set(events.map((e) => e.tick))) {
      const x = u.valToPos(t, "x", true);
      ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    }
    ctx.restore();
  }] };
}

function differenceSeries(c) {
  // solid: the share choosing each action; dashed: its mean probability (moves where draws may not)
  const shares = c.actions.map((a, k) => ({ label: `${a} share`, data: column(c.share_difference, k), color: PALETTE[k] }));
  const probs = c.prob_difference ? c.actions.map((a, k) => ({ label: `p(${a})`, data: column(c.prob_difference, k), color: PALETTE[k], dash: [6, 4], width: 1.5 })) : [];
  return shares.concat(probs);
}

function symmetric(u, min, max) {
  // a difference axis centred on 0, at least ±0.05 (an all-zero difference stays readable)
  const m = Math.max(Math.abs(min || 0), Math.abs(max || 0), 0.05) * 1.1;
  return [-m, m];
}
function ticksOf(n) { return Array.from({ length: n }, (_, t) => t); }
function column(rows, k) { return rows.map((r) => (r == null ? null : r[k])); }

// ------------------------------------------------------------------ files
async function loadFiles() {
  const r = await api("/api/files");
  state.files = r.files;
  fillFileMenus(r.files);
  const traces = r.files.filter((f) => f.kind !== "world");
  const rollouts = traces.filter((f) => f.kind === "student_rollout");
  const params = new URLSearchParams(location.search);
  const first = params.get("file") || (rollouts.find((f) => !f.name.includes("whatif/")) || traces[0] || {}).name;
  if (first) $("file-a").value = first;
  if (params.get("compare")) $("file-b").value = params.get("compare");
  await selectFile();
  if (params.get("tab")) showTab(params.get("tab"));
}

function fillFileMenus(files) {
  // the file menus (A, compare-with B, what-if base, new base's world), keeping what each had selected
  const label = (f) => `${f.name} — ${f.kind.replace("_", " ")}, ${f.agents.toLocaleString()} agents × ${f.ticks} ticks` +
    (f.scenario ? `, ${f.scenario}` : "") + (f.llm_seed != null ? `, LLM seed ${f.llm_seed}` : "");
  const opt = (f) => `<option value="${esc(f.name)}">${esc(label(f))}</option>`;
  const traces = files.filter((f) => f.kind !== "world");
  const menus = [[$("file-a"), traces, ""], [$("file-b"), traces, `<option value="">(none)</option>`],
    [$("wi-base"), traces.filter((f) => f.kind === "student_rollout"), ""], [$("nb-world"), files.filter((f) => f.kind === "world"), ""]];
  for (const [sel, list, head] of menus) {
    const was = sel.value;
    sel.innerHTML = head + list.map(opt).join("");
    if ([...sel.options].some((o) => o.value === was)) sel.value = was;
  }
}

async function selectFile() {
  state.a = $("file-a").value;
  state.b = $("file-b").value || null;
  state.graph = null;
  if (!state.a) { status("no trace or rollout file in the served folders"); return; }
  status("loading " + state.a + " …");
  const t0 = performance.now();
  state.overview = await api("/api/overview?file=" + encodeURIComponent(state.a));
  renderOverview();
  if (state.b) await renderCompare(); else $("ov-compare").hidden = true;
  state.firstPaintMs = performance.now() - t0;
  state.loaded = state.a;
  status(`${state.a}: overview in ${(state.firstPaintMs / 1000).toFixed(2)} s`);
  const active = document.querySelector("#tabs button.active").dataset.tab;
  if (active === "society") await renderSociety();
  if (active === "whatif") await loadBase();
}

// ------------------------------------------------------------------ overview
function renderOverview() {
  const o = state.overview;
  const xs = ticksOf(o.ticks);
  const meanValid = o.valid_share.reduce((a, b) => a + b, 0) / Math.max(o.valid_share.length, 1);
  $("ov-summary").innerHTML = `<b>${esc(o.kind.replace("_", " "))}</b> · scenario <b>${esc(o.scenario)}</b> · ` +
    `${o.agents.toLocaleString()} agents × ${o.ticks} ticks · valid ${pct(meanValid)} · actions: ${o.actions.map(esc).join(", ")}`;
  chart("ov-shares", "decision shares", xs, o.actions.map((a, k) => ({ label: a, data: column(o.decision_shares, k) })),
    { ylabel: "share", scales: { y: { range: [0, 1] } }, hooks: eventLines(o.events) });
  $("ov-action").innerHTML = o.actions.map((a, k) => `<option value="${k}">${esc(a)}</option>`).join("");
  const attrs = Object.keys(o.by);
  $("ov-attr").innerHTML = attrs.map((a) => `<option>${esc(a)}</option>`).join("");
  if (attrs.includes("party")) $("ov-attr").value = "party";
  renderBy();
  chart("ov-channels", "channels", xs, o.channels.map((c, k) => ({ label: c, data: column(o.channel_mean, k) })),
    { ylabel: "0..1", scales: { y: { range: [0, 1] } } });
  $("ov-channel").innerHTML = o.channels.map((c, k) => `<option value="${k}">${esc(c)}</option>`).join("");
  renderSpread();
  $("ov-events").innerHTML = "<tr><th>tick</th><th>origin</th><th>source</th><th>valence</th><th>credibility</th><th>reach</th><th>text</th></tr>" +
    o.events.map((e) => `<tr><td>${e.tick}</td><td>${esc(e.origin)}</td><td>${esc(e.source)}</td><td>${num(e.valence, 2)}</td>` +
      `<td>${num(e.credibility, 2)}</td><td>${e.reach == null ? "–" : `${e.reach.toLocaleString()} (${pct(e.reach / o.agents)})`}</td>` +
      `<td class="text">${esc(e.text)}</td></tr>`).join("");
  $("ov-triggers").textContent = o.triggers_fired.length
    ? o.triggers_fired.map((e) => `tick ${e.tick}: ${e.origin.replace("trigger:", "")} — “${e.text}” (reached ${e.reach ?? "?"})`).join(" · ")
    : "No trigger fired in this run.";
}

function renderBy() {
  const o = state.overview;
  const attr = $("ov-attr").value, k = Number($("ov-action").value || 0);
  if (!attr) return;
  const by = o.by[attr];
  chart("ov-by", "by group", ticksOf(o.ticks), by.groups.map((g, gi) => ({
    label: `${g} (${by.size[gi]})`, data: by.shares.map((tick) => tick[gi][k]),
  })), { ylabel: `share ${o.actions[k]}`, scales: { y: { range: [0, 1] } } });
}

function renderSpread() {
  const o = state.overview, c = Number($("ov-channel").value || 0);
  chart("ov-spread", "spread", ticksOf(o.ticks), [
    { label: "mean", data: column(o.channel_mean, c), color: "#1f2a44" },
    { label: "75th percentile", data: o.channel_quartiles.map((q) => q[c][2]), color: "#9ecae9", width: 1 },
    { label: "median", data: o.channel_quartiles.map((q) => q[c][1]), color: "#4c78a8", dash: [5, 5] },
    { label: "25th percentile", data: o.channel_quartiles.map((q) => q[c][0]), color: "#9ecae9", width: 1 },
    { label: "std", data: column(o.channel_std, c), color: "#e45756", width: 1, dash: [2, 3] },
  ], { ylabel: "0..1", scales: { y: { range: [0, 1] } }, bands: [{ series: [2, 4], fill: "rgba(76,120,168,0.15)" }] });
}

async function renderCompare() {
  const c = await api(`/api/compare?a=${encodeURIComponent(state.a)}&b=${encodeURIComponent(state.b)}`);
  state.compare = c;
  $("ov-compare").hidden = false;
  $("cmp-title").textContent = `A = ${state.a}, B = ${state.b}`;
  const xs = ticksOf(c.ticks);
  chart("cmp-diff", "difference", xs, differenceSeries(c), { ylabel: "Δ (B − A)", scales: { y: { range: symmetric } } });
  chart("cmp-b", "B", ticksOf(c.b.ticks), c.actions.map((a, k) => ({ label: a, data: column(c.b.decision_shares, k) })),
    { ylabel: "share", scales: { y: { range: [0, 1] } }, hooks: eventLines(c.b.events) });
  $("cmp-metrics").innerHTML = "<tr><th>metric</th><th>B vs A</th><th>better</th></tr>" +
    (c.metrics.length ? c.metrics.map((m) => `<tr><td>${esc(m.metric)}</td><td>${num(m.value, 4)}</td><td>${m.better}</td></tr>`).join("")
      : "<tr><td colspan=3>(not computed above 200,000 agents)</td></tr>");
}

// ------------------------------------------------------------------ society
function decisionColor(d) { return d == null || d < 0 ? "#cccccc" : PALETTE[d % PALETTE.length]; }

async function renderSociety() {
  if (!state.a) return;
  const nodes = $("soc-nodes").value;
  if (!state.graph || state.graph.nodesAsked !== nodes || state.graph.file !== state.a) {
    $("soc-info").textContent = "sampling and laying out the graph …";
    const t0 = performance.now();
    const g = await api(`/api/graph?file=${encodeURIComponent(state.a)}&nodes=${nodes}`);
    g.nodesAsked = nodes; g.file = state.a; g.ms = performance.now() - t0;
    state.graph = g;
    buildSigma();
  }
  const g = state.graph, o = state.overview;
  $("soc-tick").max = Math.max(0, o.ticks - 1);
  if (Number($("soc-tick").value) > o.ticks - 1) $("soc-tick").value = o.ticks - 1;
  $("soc-info").textContent = `${g.sampled.toLocaleString()} of ${g.agents.toLocaleString()} agents (snowball sample), ` +
    `${g.edges.length.toLocaleString()} ties; click a node for its agent`;
  $("soc-legend").innerHTML = "Nodes: " + o.actions.map((a, k) => `<span><i style="background:${decisionColor(k)}"></i>${esc(a)}</span>`).join("") +
    `<span><i style="background:#ccc"></i>invalid</span> · Edges: ` +
    g.edge_types.map((t) => `<span><i style="background:${TIE_COLORS[t]}"></i>${esc(t)}</span>`).join("");
  const attrs = Object.keys(g.nodes[0] ? g.nodes[0].attrs : {});
  const keep = $("soc-attr").value;
  $("soc-attr").innerHTML = `<option value="">(everyone)</option>` + attrs.map((a) => `<option>${esc(a)}</option>`).join("");
  $("soc-attr").value = attrs.includes(keep) ? keep : "";
  fillFilterValues();
  recolor();
}

function buildSigma() {
  const g = state.graph;
  if (state.sigma) { state.sigma.kill(); state.sigma = null; }
  const graph = new graphology.Graph({ type: "undirected", multi: false });
  const size = g.sampled > 2500 ? 2 : g.sampled > 800 ? 3 : 5;
  g.nodes.forEach((n, k) => graph.addNode(String(k), { x: n.x, y: n.y, size, label: `${n.name} (${n.id})`, color: "#ccc", agent: n.id }));
  g.edges.forEach(([s, t, typ]) => {
    if (!graph.hasEdge(String(s), String(t))) graph.addEdge(String(s), String(t), { color: TIE_COLORS[g.edge_types[typ]] + "99", size: 0.5 });
  });
  state.sigma = new Sigma(graph, $("soc-graph"), { renderLabels: true, labelRenderedSizeThreshold: 8, allowInvalidContainer: true });
  state.sigma.on("clickNode", ({ node }) => openAgent(graph.getNodeAttribute(node, "agent")));
}

function fillFilterValues() {
  const attr = $("soc-attr").value, g = state.graph;
  const values = attr ? [...new Set(g.nodes.map((n) => n.attrs[attr]))].sort() : [];
  $("soc-value").innerHTML = values.map((v) => `<option>${esc(v)}</option>`).join("");
  $("soc-value").hidden = !attr;
}

function recolor() {
  const g = state.graph, s = state.sigma;
  if (!g || !s) return;
  const t = Number($("soc-tick").value);
  $("soc-tick-label").textContent = `${t} (${state.overview.tick_length || "tick"})`;
  const attr = $("soc-attr").value, value = $("soc-value").value;
  const graph = s.getGraph();
  g.nodes.forEach((n, k) => {
    const d = g.decision && g.decision[t] ? g.decision[t][k] : null;
    const dim = attr && n.attrs[attr] !== value;
    graph.setNodeAttribute(String(k), "color", dim ? "#eeeeee" : decisionColor(d));
    graph.setNodeAttribute(String(k), "zIndex", dim ? 0 : 1);
  });
  s.refresh();
}

// ------------------------------------------------------------------ agent
function openAgent(id) {
  $("ag-id").value = id;
  showTab("agent");
  loadAgent();
}

async function loadAgent() {
  const id = Number($("ag-id").value);
  $("ag-info").textContent = "loading …";
  let r;
  try {
    r = await api(`/api/agent?file=${encodeURIComponent(state.a)}&id=${id}`);
  } catch (e) { $("ag-info").textContent = e.message; $("ag-panel").hidden = true; return; }
  state.agent = r;
  $("ag-info").textContent = `${r.kind.replace("_", " ")} ${state.a}`;
  $("ag-panel").hidden = false;
  $("ag-name").textContent = `${r.identity.name} (agent ${r.agent})`;
  $("ag-identity").innerHTML = Object.entries(r.identity).filter(([k]) => k !== "name")
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v)}</td></tr>`).join("");
  $("ag-persona").textContent = r.backstory || r.persona;
  $("ag-ties").textContent = "Ties: " + Object.entries(r.ties).map(([t, c]) => `${t} ${c}`).join(", ");
  chart("ag-channels", "channels", ticksOf(r.ticks.length), r.channels.map((c, k) => ({ label: c, data: r.ticks.map((t) => t.channels[k]) })),
    { ylabel: "0..1", scales: { y: { range: [0, 1] } } });
  const hasText = r.ticks.some((t) => t.reasoning || t.expression);
  $("ag-ticks").innerHTML = `<tr><th>tick</th><th>decision</th><th>probabilities</th><th>stance</th><th>memory</th><th>neighbours shown (tie: their last decision)</th><th>events seen</th>` +
    (hasText ? "<th>reasoning</th><th>message</th>" : "") + "</tr>" +
    r.ticks.map((t) => {
      const probs = t.decision_dist ? t.decision_dist.map((p, k) => `${esc(r.actions[k])} ${pct(p)}<span class="bar" style="width:${Math.round(60 * p)}px"></span>`).join("<br>") : "–";
      const shown = (t.shown || []).map((s) => `${esc(s.name)} (${esc(s.tie)}${s.their_decision ? ": " + esc(s.their_decision) : ""})`).join("<br>") || "–";
      const events = (t.events || []).map((e) => `<i>${esc(e.source)}</i>: ${esc(e.text)}`).join("<br>") || "–";
      const memory = t.salient_memory ? esc(t.salient_memory) : `salience ${num(t.salience, 2)}`;
      return `<tr><td>${t.tick}</td><td><b>${esc(t.decision_label ?? "invalid")}</b>${t.error ? `<br><span class="note">${esc(t.error)}</span>` : ""}</td>` +
        `<td>${probs}</td><td>${num(t.stance, 2)}</td><td class="text">${memory}</td><td>${shown}</td><td class="text">${events}</td>` +
        (hasText ? `<td class="text">${esc(t.reasoning)}</td><td class="text">${esc(t.expression)}</td>` : "") + "</tr>";
    }).join("");
  const student = r.kind === "student_rollout";
  $("ag-narrate").disabled = $("ag-ask").disabled = false;
  $("ag-narration").textContent = "";
  $("ag-attention").textContent = student ? "replaying the rollout for attention …" : "Attention exists only in student rollouts.";
  if (student) loadAttention(id);
}

async function loadAttention(id) {
  try {
    const r = await api(`/api/attention?file=${encodeURIComponent(state.a)}&id=${id}`);
    if (Number($("ag-id").value) !== id) return;
    const ties = [...new Set(r.ticks.flatMap((t) => Object.keys(t.by_tie)))];
    $("ag-attention").innerHTML = `<table class="grid small"><tr><th>tick</th>${ties.map((t) => `<th>${esc(t)}</th>`).join("")}<th>most attended</th><th>memory write (slot, salience)</th></tr>` +
      r.ticks.map((t) => `<tr><td>${t.tick}</td>${ties.map((k) => `<td>${t.by_tie[k] == null ? "–" : num(t.by_tie[k], 2)}</td>`).join("")}` +
        `<td>${t.top.slice(0, 3).map((a) => `${esc(a.name)} (${esc(a.tie)}, ${num(a.weight, 2)})`).join("; ")}</td>` +
        `<td>slot ${t.write_slot} (${num(t.salience, 2)})</td></tr>`).join("") + "</table>";
  } catch (e) { $("ag-attention").textContent = e.message; }
}

async function narrate(question) {
  const out = $("ag-narration");
  out.textContent = "queued …";
  $("ag-narrate").disabled = $("ag-ask").disabled = true;
  try {
    const r = await fetch("/api/narrate", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file: state.a, agent: Number($("ag-id").value), ...(question ? { question } : {}) }) });
    if (!r.ok) { out.textContent = (await r.json()).error; return; }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)); buf = buf.slice(nl + 1);
        if (ev.state === "done") showNarration(ev.result);
        else if (ev.state === "failed") out.textContent = "failed: " + ev.error;
        else out.textContent = ev.message + " …";
      }
    }
  } finally { $("ag-narrate").disabled = $("ag-ask").disabled = false; }
}

function showNarration(n) {
  const checks = Object.entries(n.checks).map(([c, ok]) =>
    `<span class="check ${ok ? "verdict-ok" : "verdict-flag"}" data-check="${esc(c)}">${esc(c)} ${ok ? "✓" : "✗"}</span>`).join(" ");
  const how = n.fallback
    ? `<p class="verdict-flag fallback">The LLM's answer failed its checks after ${n.attempts} attempts; the record's facts are shown as plain text.</p>` +
      `<details><summary>the LLM's answer and why it failed</summary><p class="note">${esc(n.llm_text)}</p><ul>${n.problems.map((p) => `<li>${esc(p)}</li>`).join("")}</ul></details>`
    : `<p class="note">phrased by the LLM, attempt ${n.attempts}</p>`;
  $("ag-narration").innerHTML = (n.question ? `<p><b>Asked</b> (${esc(n.kind)}): ${esc(n.question)}</p>` : "") +
    `<p class="answer">${esc(n.text)}</p><p class="checks">${checks}</p>${how}<p class="note">${n.seconds} s</p>`;
}

// ------------------------------------------------------------------ what-if
async function loadScenarios() {
  if ($("nb-scenario").options.length) return;
  const r = await api("/api/scenarios");
  $("nb-scenario").innerHTML = r.scenarios.map((n) => `<option>${esc(n)}</option>`).join("");
  $("nb-run").disabled = !$("nb-world").options.length;
  if (!$("nb-world").options.length) $("nb-msg").textContent = "no world file in the served folders";
}

async function runBase() {
  $("nb-run").disabled = true;
  try {
    const job = await api("/api/rollout", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ world: $("nb-world").value, scenario: $("nb-scenario").value }) });
    const res = await follow(job, $("nb-progress"), $("nb-msg"));
    await refreshFileList();
    $("wi-base").value = res.file;
    $("nb-msg").textContent = "written " + res.file;
    await loadBase();
  } catch (e) { $("nb-msg").textContent = e.message; } finally { $("nb-run").disabled = false; }
}

async function loadBase() {
  loadScenarios().catch((e) => { $("nb-msg").textContent = e.message; });
  const base = $("wi-base").value;
  if (!base) { $("wi-info").textContent = "No student rollout here: a what-if starts from one."; $("wi-run").disabled = true; return; }
  const b = await api("/api/whatif/base?file=" + encodeURIComponent(base));
  state.base = b;
  $("wi-run").disabled = $("sw-run").disabled = !b.checkpoint;
  $("wi-info").textContent = b.checkpoint ? `${b.agents.toLocaleString()} agents × ${b.ticks} ticks; checkpoint ${b.checkpoint}`
    : "The checkpoint that wrote this rollout is not found: start lsm explore with --ckpt DIR.";
  $("wi-events").innerHTML = "<tr><th>#</th><th>source</th><th>text</th><th>tick</th><th>credibility</th><th>valence</th><th>reach</th></tr>" +
    b.events.map((e) => `<tr><td>${e.index}</td><td>${esc(e.source)}</td><td class="text">${esc(e.text)}</td>` +
      `<td><input type="number" min="0" max="${b.ticks - 1}" step="1" value="${e.tick}" data-event="${e.index}" data-field="tick" data-base="${e.tick}"></td>` +
      ["credibility", "valence", "reach"].map((f) => `<td><input type="number" step="0.05" min="${f === "valence" ? -1 : 0}" max="1" value="${e[f]}" ` +
        `data-event="${e.index}" data-field="${f}" data-base="${e[f]}" aria-label="event ${e.index} ${f}"></td>`).join("") + "</tr>").join("");
  $("wi-sever").innerHTML = b.edge_types.map((t) => `<label><input type="checkbox" value="${esc(t)}"> ${esc(t)}</label>`).join(" ");
  $("sw-event").innerHTML = b.events.map((e) => `<option value="${e.index}">${e.index}: ${esc(e.source)} (tick ${e.tick})</option>`).join("");
  $("sw-field").innerHTML = b.fields.map((f) => `<option>${f}</option>`).join("");
}

async function follow(job, bar, msg) {
  for (;;) {
    bar.value = job.progress; msg.textContent = job.message;
    if (job.state === "done") return job.result;
    if (job.state === "failed") throw new Error(job.error);
    await new Promise((r) => setTimeout(r, 300));
    job = await api("/api/jobs/" + job.id);
  }
}

async function runWhatif() {
  const edits = [...document.querySelectorAll("#wi-events input")]
    .filter((i) => Number(i.value) !== Number(i.dataset.base))
    .map((i) => ({ event: Number(i.dataset.event), field: i.dataset.field, value: Number(i.value) }));
  const sever = [...document.querySelectorAll("#wi-sever input:checked")].map((i) => i.value);
  const base = $("wi-base").value;
  $("wi-run").disabled = true;
  const t0 = performance.now();
  try {
    const job = await api("/api/whatif", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ base, edits, sever }) });
    const res = await follow(job, $("wi-progress"), $("wi-msg"));
    const c = await api(`/api/compare?a=${encodeURIComponent(base)}&b=${encodeURIComponent(res.file)}`);
    $("wi-result").hidden = false;
    chart("wi-diff", "what-if − base", ticksOf(c.ticks), differenceSeries(c), { ylabel: "Δ (what-if − base)", scales: { y: { range: symmetric } } });
    state.whatifMs = performance.now() - t0;
    $("wi-file").textContent = `Written: ${res.file} (round trip ${(state.whatifMs / 1000).toFixed(1)} s). ` +
      `Open it in the file menu to explore it; agent decisions that changed: ${pct(1 - (c.metrics.find((m) => m.metric === "agent_decision_agreement") || {}).value)}.`;
    $("wi-msg").textContent = "done";
    await refreshFileList();
  } catch (e) { $("wi-msg").textContent = e.message; } finally { $("wi-run").disabled = false; }
}

function parseValues(spec) {
  if (spec.includes(":")) {
    const [lo, hi, n] = spec.split(":").map(Number);
    return Array.from({ length: n }, (_, k) => Number((lo + (n > 1 ? (hi - lo) * k / (n - 1) : 0)).toFixed(6)));
  }
  return spec.split(",").filter((s) => s.trim()).map(Number);
}

async function runSweep() {
  const body = { base: $("wi-base").value, event: Number($("sw-event").value), field: $("sw-field").value,
    values: parseValues($("sw-values").value), sever: [...document.querySelectorAll("#wi-sever input:checked")].map((i) => i.value) };
  $("sw-run").disabled = true;
  try {
    const job = await api("/api/sweep", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const r = await follow(job, $("sw-progress"), $("sw-msg"));
    $("sw-figure").hidden = false;
    chart("sw-chart", "sweep", r.values, r.actions.map((a, k) => ({ label: a, data: r.final_shares.map((s) => s[k]) })),
      { xlabel: `event ${r.event} ${r.field}`, ylabel: "final share", scales: { y: { range: [0, 1] } } });
    $("sw-msg").textContent = `done; written whatif/${r.written}`;
  } catch (e) { $("sw-msg").textContent = e.message; } finally { $("sw-run").disabled = false; }
}

async function refreshFileList() {
  const r = await api("/api/files");
  state.files = r.files;
  fillFileMenus(r.files);
}

// ------------------------------------------------------------------ tabs and wiring
function showTab(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === "tab-" + name));
  if (name === "society") renderSociety().catch((e) => status(e.message));
  if (name === "whatif" && !state.base) loadBase().catch((e) => status(e.message));
}

function guard(fn) { return (...a) => Promise.resolve(fn(...a)).catch((e) => status("error: " + e.message)); }

document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
$("file-a").addEventListener("change", guard(selectFile));
$("file-b").addEventListener("change", guard(selectFile));
$("ov-attr").addEventListener("change", renderBy);
$("ov-action").addEventListener("change", renderBy);
$("ov-channel").addEventListener("change", renderSpread);
$("soc-tick").addEventListener("input", recolor);
$("soc-attr").addEventListener("change", () => { fillFilterValues(); recolor(); });
$("soc-value").addEventListener("change", recolor);
$("soc-nodes").addEventListener("change", guard(renderSociety));
$("ag-load").addEventListener("click", guard(loadAgent));
$("ag-narrate").addEventListener("click", guard(() => narrate(null)));
$("ag-ask").addEventListener("click", guard(() => narrate($("ag-question").value)));
$("wi-base").addEventListener("change", guard(loadBase));
$("wi-run").addEventListener("click", guard(runWhatif));
$("sw-run").addEventListener("click", guard(runSweep));
$("nb-run").addEventListener("click", guard(runBase));
loadFiles().catch((e) => status("error: " + e.message));
