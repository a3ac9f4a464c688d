// echotrace explorer: the live lists (/), a cascade's view (/view/cascades/{id}) and an alert's
// view (/view/alerts/{id}), over the instance's JSON API. No dependencies. Every text that comes
// from a post or the API is put in the page with textContent, never parsed as markup.
"use strict";

const API_TOKEN_KEY = "echotrace.apiToken";
const REVIEWER_TOKEN_KEY = "echotrace.reviewerToken";
const LIST_REFRESH_MS = 2000;
const VIEW_REFRESH_MS = 3000;
/** Past this many posts a cascade is drawn as groups (generation × platform), not posts. */
const MAX_DRAWN_POSTS = 400;
/** The timeline has at most this many bars; longer cascades get wider bins. */
const MAX_TIMELINE_BINS = 240;

const EDGE_KINDS = {
  repost: { dash: "", mark: "R", label: "repost" },
  quote: { dash: "8 3", mark: "Q", label: "quote" },
  reply: { dash: "2 3", mark: "Y", label: "reply" },
  shared_url: { dash: "10 3 2 3", mark: "U", label: "shared URL" },
  near_duplicate: { dash: "4 2", mark: "N", label: "near-duplicate" },
  paraphrase: { dash: "1 2", mark: "P", label: "paraphrase" },
  summary: { dash: "12 4", mark: "S", label: "summary" },
};
const PLATFORM_COLOURS = ["#1f4e99", "#a4161a", "#2d6a4f", "#7b3294", "#8a4b08", "#00606b", "#5c5c5c", "#b3005c"];
const DECISIONS = [
  ["confirmed_campaign", "Confirmed campaign"],
  ["organic", "Organic"],
  ["benign", "Benign"],
  ["needs_escalation", "Needs escalation"],
];

// ---------------------------------------------------------------- DOM helpers

/** An HTML element with attributes and children (strings become text nodes). */
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

/** An SVG element with attributes and children. */
function svgEl(tag, attributes, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function main() {
  return document.getElementById("main");
}

function setStatus(text) {
  document.getElementById("updated").textContent = text;
}

function time(value) {
  return value ? new Date(value).toISOString().replace("T", " ").slice(0, 19) : "";
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Fetches JSON from the API, with the API token when the page has one. */
async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  // A review carries the reviewer's token instead (or none, and is refused with a reason).
  const token = sessionStorage.getItem(API_TOKEN_KEY);
  if (token && !options.reviewer) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { ...options, headers });
  const body = await response.text();
  let data = null;
  try {
    data = body ? JSON.parse(body) : null;
  } catch (_) {
    data = { error: body };
  }
  if (!response.ok) {
    if (response.status === 401 && !options.reviewer) askForApiToken();
    throw new ApiError(response.status, (data && data.error) || response.statusText);
  }
  return data;
}

function askForApiToken() {
  const form = document.getElementById("api-token-form");
  if (!form.hidden) return;
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(API_TOKEN_KEY, document.getElementById("api-token").value.trim());
    form.hidden = true;
    route();
  });
  document.getElementById("api-token").focus();
}

let refreshTimer = null;

/** Runs `load` now and every `interval` ms; shows when it last worked. */
function poll(load, interval) {
  clearTimeout(refreshTimer);
  const tick = async () => {
    try {
      await load();
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      setStatus("not updated: " + error.message);
    }
    refreshTimer = setTimeout(tick, interval);
  };
  return tick();
}

// ---------------------------------------------------------------- the lists

const filters = { rule: "", platform: "", state: "" };

async function showLists() {
  document.title = "echotrace explorer";
  const root = main();
  shownSignature = "";
  root.replaceChildren(
    el("h1", {}, "Cascades and alerts, live"),
    el("div", { class: "filters", role: "group", "aria-label": "Filters" },
      filterSelect("filter-rule", "Rule", "rule"),
      filterSelect("filter-platform", "Platform", "platform"),
      filterSelect("filter-state", "Alert state", "state", [["firing", "firing"], ["resolved", "resolved"], ["none", "no alert"]])),
    el("h2", { id: "alerts-heading" }, "Alerts"),
    el("div", { id: "alerts" }),
    el("h2", { id: "cascades-heading" }, "Largest cascades in the window"),
    el("div", { id: "cascades" }),
  );
  await poll(refreshLists, LIST_REFRESH_MS);
}

function filterSelect(id, label, key, fixed) {
  const select = el("select", { id, "data-filter": key, onchange: () => { filters[key] = select.value; renderLists(); } },
    el("option", { value: "" }, "any"),
    (fixed || []).map(([value, text]) => el("option", { value }, text)));
  select.value = filters[key];
  return el("label", { for: id }, label, select);
}

/** Keeps a select's options to `values` (plus "any"), keeping its choice. */
function fillOptions(id, values) {
  const select = document.getElementById(id);
  if (!select) return;
  const have = [...select.options].map((o) => o.value).slice(1).join("\n");
  if (have === values.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "any"), ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(chosen) ? chosen : "";
}

let lastLists = { cascades: [], alerts: [] };
/** What the lists show now: they are rebuilt only when it changes, so focus stays put. */
let shownSignature = "";

async function refreshLists() {
  if (location.pathname !== "/") return;
  const [cascades, alerts] = await Promise.all([api("/cascades?top=200"), api("/alerts")]);
  lastLists = { cascades, alerts };
  renderLists();
}

function renderLists() {
  const { cascades, alerts } = lastLists;
  const signature = JSON.stringify([cascades, alerts, filters]);
  if (signature === shownSignature) return;
  shownSignature = signature;
  // The link that has the focus gets it back once the tables are rebuilt.
  const focused = document.activeElement && document.activeElement.closest("#alerts, #cascades") ? document.activeElement.getAttribute("href") : null;
  fillOptions("filter-rule", [...new Set(alerts.map((a) => a.rule))].sort());
  fillOptions("filter-platform", [...new Set(cascades.flatMap((c) => c.platforms).concat(alerts.flatMap((a) => a.platforms)))].sort());
  const byCascade = new Map();
  for (const alert of alerts) {
    if (!byCascade.has(alert.cascade_id)) byCascade.set(alert.cascade_id, []);
    byCascade.get(alert.cascade_id).push(alert);
  }
  const alertShown = (a) =>
    (!filters.rule || a.rule === filters.rule) &&
    (!filters.platform || a.platforms.includes(filters.platform)) &&
    (!filters.state || filters.state === a.state);
  const shownAlerts = alerts.filter(alertShown);
  const cascadeShown = (c) => {
    const own = byCascade.get(c.cascade_id) || [];
    const state = own.some((a) => a.state === "firing") ? "firing" : own.length ? "resolved" : "none";
    return (!filters.platform || c.platforms.includes(filters.platform)) &&
      (!filters.rule || own.some((a) => a.rule === filters.rule)) &&
      (!filters.state || filters.state === state);
  };
  const shownCascades = cascades.filter(cascadeShown);

  const alertRows = shownAlerts.map((a) => el("tr", { "data-alert-id": a.alert_id, "data-state": a.state },
    el("td", { class: "state-" + a.state }, a.state),
    el("td", {}, el("a", { href: "/view/alerts/" + encodeURIComponent(a.alert_id), class: "alert-link" }, a.rule)),
    el("td", {}, a.severity, a.shadow ? " (shadow)" : "", a.held ? " (held)" : ""),
    el("td", {}, el("a", { href: "/view/cascades/" + encodeURIComponent(a.cascade_id) }, a.cascade_id)),
    el("td", { class: "number" }, a.cascade_size),
    el("td", {}, a.platforms.join(", ")),
    el("td", {}, time(a.started_at)),
  ));
  document.getElementById("alerts").replaceChildren(alertRows.length
    ? el("table", { "aria-labelledby": "alerts-heading" },
      el("thead", {}, el("tr", {}, ["State", "Rule", "Severity", "Cascade", "Posts", "Platforms", "Started (event time)"].map((h) => el("th", { scope: "col", class: h === "Posts" ? "number" : undefined }, h)))),
      el("tbody", {}, alertRows))
    : el("p", { class: "note" }, alerts.length ? "No alert matches the filters." : "No alert raised since this instance started."));

  const cascadeRows = shownCascades.map((c) => {
    const own = byCascade.get(c.cascade_id) || [];
    const firing = own.filter((a) => a.state === "firing");
    const state = firing.length ? "firing" : own.length ? "resolved" : "";
    const severities = [...new Set((firing.length ? firing : own).map((a) => a.severity))].join(", ");
    return el("tr", { "data-cascade-id": c.cascade_id },
      el("td", {}, el("a", { href: "/view/cascades/" + encodeURIComponent(c.cascade_id), class: "cascade-link" }, c.cascade_id)),
      el("td", { class: "number" }, c.size),
      el("td", {}, c.platforms.join(", ")),
      el("td", { class: "number" }, c.depth),
      el("td", { class: "number" }, c.summary_depth),
      el("td", { class: state ? "state-" + state : undefined }, state || "none"),
      el("td", {}, severities),
      el("td", {}, time(c.last_seen)),
    );
  });
  document.getElementById("cascades").replaceChildren(cascadeRows.length
    ? el("table", { "aria-labelledby": "cascades-heading" },
      el("thead", {}, el("tr", {}, ["Cascade", "Posts", "Platforms", "Generations", "Summary rounds", "Alert", "Severity", "Last post"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, cascadeRows))
    : el("p", { class: "note" }, "No cascade matches the filters."));
  if (focused) {
    const again = [...document.querySelectorAll("#alerts a, #cascades a")].find((a) => a.getAttribute("href") === focused);
    if (again) again.focus();
  }
}

// ---------------------------------------------------------------- a cascade's view

async function showCascade(id) {
  document.title = "Cascade " + id + " · echotrace";
  const root = main();
  root.replaceChildren(el("p", {}, "Loading cascade " + id + "…"));
  let drawnSize = -1;
  let selected = null;
  await poll(async () => {
    const view = await api("/cascades/" + encodeURIComponent(id)).catch((error) => {
      if (drawnSize < 0) root.replaceChildren(el("p", {}, el("a", { href: "/" }, "← all cascades and alerts")), el("p", { class: "error" }, error.message));
      throw error;
    });
    // Redrawn only when the cascade changed, so focus and the chosen path stay put.
    if (view.nodes.length === drawnSize) return;
    drawnSize = view.nodes.length;
    const reviews = await api("/reviews?cascade_id=" + encodeURIComponent(view.cascade.cascade_id));
    selected = renderCascade(view, reviews, selected);
  }, VIEW_REFRESH_MS);
}

/** Indexes a cascade: nodes by id, primary children, the root and the longest summary chain. */
function analyse(view) {
  const byId = new Map(view.nodes.map((n) => [n.post_id, n]));
  const root = view.nodes.find((n) => n.post_id === view.cascade.root_post_id) ||
    view.nodes.find((n) => !n.parent_id) || view.nodes[0];
  let deepest = root;
  for (const node of view.nodes) {
    if (node.summary_depth > deepest.summary_depth ||
      (node.summary_depth === deepest.summary_depth && node.summary_depth > 0 && node.generation > deepest.generation)) deepest = node;
  }
  return { byId, root, chain: pathTo(byId, deepest) };
}

/** The primary path from the root to `node`, root first. */
function pathTo(byId, node) {
  const path = [];
  const seen = new Set();
  while (node && !seen.has(node.post_id)) {
    seen.add(node.post_id);
    path.unshift(node);
    node = node.parent_id ? byId.get(node.parent_id) : null;
  }
  return path;
}

function platformColour(platforms, platform) {
  const index = platforms.indexOf(platform);
  return PLATFORM_COLOURS[(index < 0 ? platforms.length : index) % PLATFORM_COLOURS.length];
}

function renderCascade(view, reviews, selectedId) {
  const cascade = view.cascade;
  const facts = analyse(view);
  const platforms = cascade.platforms;
  const selected = (selectedId && facts.byId.get(selectedId)) || facts.chain[facts.chain.length - 1];
  const aggregated = view.nodes.length > MAX_DRAWN_POSTS;
  const graph = aggregated ? groupGraph(view, platforms) : postGraph(view, facts, platforms, (node) => {
    renderPath(pathTo(facts.byId, node), platforms);
  });

  main().replaceChildren(
    el("p", {}, el("a", { href: "/" }, "← all cascades and alerts")),
    el("h1", {}, "Cascade ", el("span", { id: "cascade-id" }, cascade.cascade_id)),
    el("div", { class: "summary-line" },
      fact("Posts", cascade.size, "cascade-size"),
      fact("Platforms", platforms.join(", ")),
      fact("Generations", cascade.depth),
      fact("Summary rounds", cascade.summary_depth),
      fact("Bot summary rounds", cascade.automated_summary_depth),
      fact("First post", time(cascade.first_seen)),
      fact("Last post", time(cascade.last_seen)),
      fact("Root", cascade.root_post_id)),
    el("h2", { id: "graph-heading" }, "Derivation graph"),
    el("p", { class: "note" }, aggregated
      ? `This cascade has ${view.nodes.length} posts in the window: drawn as one box per generation and platform (the number is its posts), edges counted by kind. The path, timeline and accounts below cover every post.`
      : "Left to right by time, one row per generation. Tab to an edge or a post for its evidence; Enter on a post shows its path from the origin."),
    legend(platforms),
    el("div", { class: "graph-box", id: "graph" }, graph),
    el("div", { id: "edge-info", role: "status", "aria-live": "polite" }, "Focus or hover an edge to see its evidence."),
    el("div", { class: "toolbar" },
      el("button", { id: "export-json", type: "button", onclick: () => download(cascade.cascade_id + ".json", "application/json", JSON.stringify(view, null, 2)) }, "Export JSON"),
      el("button", { id: "export-graphml", type: "button", onclick: () => download(cascade.cascade_id + ".graphml", "application/xml", graphml(view)) }, "Export GraphML"),
      el("button", { id: "export-svg", type: "button", onclick: () => download(cascade.cascade_id + ".svg", "image/svg+xml", svgText()) }, "Export SVG")),
    el("h2", { id: "path-heading" }, "Texts along a path"),
    el("p", { class: "note" }, "From the origin to the chosen post (at first, the longest chain of summaries). Excerpts: the full texts are in posts/."),
    el("div", { id: "path", class: "path", "aria-labelledby": "path-heading" }),
    el("h2", { id: "timeline-heading" }, "Posts over time"),
    el("div", { id: "timeline" }, timeline(view, platforms)),
    el("h2", { id: "accounts-heading" }, "Accounts"),
    accounts(view),
    reviewSection(cascade.cascade_id, null, reviews),
  );
  renderPath(pathTo(facts.byId, selected), platforms);
  return selected && selected.post_id;
}

function fact(label, value, id) {
  return el("div", {}, el("span", {}, label), el("strong", { id }, String(value)));
}

function legend(platforms) {
  const items = platforms.map((p) => el("span", {},
    svgEl("svg", { width: 16, height: 16, "aria-hidden": "true" },
      svgEl("circle", { cx: 8, cy: 8, r: 7, fill: platformColour(platforms, p) })),
    " " + p[0].toUpperCase() + " = " + p));
  const kinds = Object.entries(EDGE_KINDS).map(([, k]) => el("span", {},
    svgEl("svg", { width: 34, height: 10, "aria-hidden": "true" },
      svgEl("line", { x1: 0, y1: 5, x2: 34, y2: 5, stroke: "#1b1f24", "stroke-width": 2, "stroke-dasharray": k.dash || undefined })),
    " " + k.mark + " " + k.label));
  return el("div", { class: "legend", "aria-label": "Legend" }, items, kinds,
    el("span", {}, "thick ring: origin; thick edges: the longest chain of summaries"));
}

/** The graph of posts: x by time, one lane per generation. */
function postGraph(view, facts, platforms, choose) {
  const laneHeight = 56;
  const gap = 26;
  const times = view.nodes.map((n) => Date.parse(n.created_at));
  const start = Math.min(...times);
  const span = Math.max(1, Math.max(...times) - start);
  const byGeneration = new Map();
  for (const node of view.nodes) {
    if (!byGeneration.has(node.generation)) byGeneration.set(node.generation, []);
    byGeneration.get(node.generation).push(node);
  }
  const generations = [...byGeneration.keys()].sort((a, b) => a - b);
  const width = Math.max(640, 80 + view.nodes.length * 12);
  const position = new Map();
  let maxX = 0;
  generations.forEach((generation, lane) => {
    let lastX = -Infinity;
    for (const node of byGeneration.get(generation).sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at))) {
      const x = Math.max(60 + ((Date.parse(node.created_at) - start) / span) * (width - 100), lastX + gap);
      position.set(node.post_id, { x, y: 30 + lane * laneHeight });
      lastX = x;
      maxX = Math.max(maxX, x);
    }
  });
  const chainEdges = new Set(facts.chain.slice(1).map((n) => n.parent_id + "→" + n.post_id));
  const svg = svgEl("svg", {
    width: maxX + 60, height: 30 + generations.length * laneHeight, role: "group",
    "aria-labelledby": "graph-heading", "data-posts": view.nodes.length, "data-edges": view.edges.length,
    xmlns: "http://www.w3.org/2000/svg",
  });
  generations.forEach((generation, lane) => svg.append(svgEl("text", { x: 4, y: 34 + lane * laneHeight, "font-size": 11, fill: "#545b64" }, "gen " + generation)));
  const info = () => document.getElementById("edge-info");
  for (const edge of view.edges) {
    const from = position.get(edge.parent_id);
    const to = position.get(edge.child_id);
    if (!from || !to) continue;
    const kind = EDGE_KINDS[edge.kind] || { dash: "", mark: "?", label: edge.kind };
    const onChain = edge.is_primary && chainEdges.has(edge.parent_id + "→" + edge.child_id);
    const parent = facts.byId.get(edge.parent_id);
    const child = facts.byId.get(edge.child_id);
    const delta = parent && child ? Math.round((Date.parse(child.created_at) - Date.parse(parent.created_at)) / 1000) : null;
    const words = `${kind.label} ${edge.parent_id} → ${edge.child_id}: ${edge.evidence || (edge.is_primary ? "" : "bridge between cascades")}` +
      (delta !== null ? ` · ${delta} s later` : "");
    const middleX = (from.x + to.x) / 2;
    const d = `M${from.x},${from.y} C${middleX},${from.y} ${middleX},${to.y} ${to.x},${to.y}`;
    const show = () => { info().textContent = words; };
    svg.append(svgEl("path", {
      class: "edge" + (onChain ? " chain" : ""), d, fill: "none", stroke: onChain ? "#1b1f24" : "#6b7280",
      "stroke-width": onChain ? 3.5 : 1.5, "stroke-dasharray": kind.dash || undefined, tabindex: 0,
      "data-child": edge.child_id, "data-parent": edge.parent_id, "data-kind": edge.kind,
      "aria-label": words, onfocus: show, onmouseenter: show,
    }, svgEl("title", {}, words)));
    svg.append(svgEl("text", { x: middleX, y: (from.y + to.y) / 2 - 3, "font-size": 10, fill: "#1b1f24", "aria-hidden": "true" }, kind.mark));
  }
  for (const node of view.nodes) {
    const at = position.get(node.post_id);
    const isRoot = node.post_id === facts.root.post_id;
    const label = `${node.platform || "unseen"} post ${node.post_id} by @${node.author_handle || "?"} at ${time(node.created_at)}, generation ${node.generation}` +
      (node.parent_kind ? `, ${node.parent_kind} of ${node.parent_id}` : ", origin") + (node.automated_account ? ", automated-looking account" : "");
    const group = svgEl("g", {
      class: "node" + (isRoot ? " root" : ""), tabindex: 0, role: "button", "data-post-id": node.post_id,
      "data-platform": node.platform, "aria-label": label,
      onclick: () => choose(node),
      onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(node); } },
      onfocus: () => { info().textContent = label + (node.parent_evidence ? ": " + node.parent_evidence : ""); },
    },
    svgEl("title", {}, label + "\n" + node.excerpt),
    svgEl("circle", { cx: at.x, cy: at.y, r: isRoot ? 11 : 9, fill: node.seen ? platformColour(view.cascade.platforms, node.platform) : "#ffffff", stroke: "#1b1f24", "stroke-width": isRoot ? 4 : 1 }),
    svgEl("text", { x: at.x, y: at.y + 4, "text-anchor": "middle", "font-size": 10, "font-weight": 700, fill: node.seen ? "#ffffff" : "#1b1f24", "aria-hidden": "true" },
      node.seen ? node.platform[0].toUpperCase() : "?"));
    svg.append(group);
  }
  return svg;
}

/** A large cascade as groups of posts by generation and platform, edges counted by kind. */
function groupGraph(view, platforms) {
  const key = (n) => n.generation + "|" + (n.platform || "unseen");
  const groups = new Map();
  for (const node of view.nodes) {
    if (!groups.has(key(node))) groups.set(key(node), { generation: node.generation, platform: node.platform || "unseen", count: 0, first: node.created_at });
    groups.get(key(node)).count += 1;
  }
  const nodeGroup = new Map(view.nodes.map((n) => [n.post_id, key(n)]));
  const links = new Map();
  for (const edge of view.edges) {
    const from = nodeGroup.get(edge.parent_id);
    const to = nodeGroup.get(edge.child_id);
    if (!from || !to) continue;
    const id = from + ">" + to + ">" + edge.kind;
    if (!links.has(id)) links.set(id, { from, to, kind: edge.kind, count: 0 });
    links.get(id).count += 1;
  }
  const generations = [...new Set([...groups.values()].map((g) => g.generation))].sort((a, b) => a - b);
  const position = new Map();
  for (const [id, group] of groups) {
    position.set(id, { x: 90 + generations.indexOf(group.generation) * 170, y: 40 + Math.max(0, platforms.indexOf(group.platform)) * 70 });
  }
  const svg = svgEl("svg", {
    width: 120 + generations.length * 170, height: 60 + Math.max(1, platforms.length) * 70, role: "group",
    "aria-labelledby": "graph-heading", "data-posts": view.nodes.length, "data-groups": groups.size, xmlns: "http://www.w3.org/2000/svg",
  });
  const info = () => document.getElementById("edge-info");
  for (const link of links.values()) {
    const a = position.get(link.from);
    const b = position.get(link.to);
    const kind = EDGE_KINDS[link.kind] || { dash: "", label: link.kind };
    const words = `${link.count} ${kind.label} edge(s) from ${link.from.replace("|", " on ")} to ${link.to.replace("|", " on ")}`;
    const show = () => { info().textContent = words; };
    svg.append(svgEl("path", {
      class: "edge group-edge", d: `M${a.x},${a.y} L${b.x},${b.y}`, stroke: "#6b7280", fill: "none",
      "stroke-width": Math.min(8, 1 + Math.log2(link.count)), "stroke-dasharray": kind.dash || undefined,
      tabindex: 0, "aria-label": words, onfocus: show, onmouseenter: show,
    }, svgEl("title", {}, words)));
  }
  for (const [id, group] of groups) {
    const at = position.get(id);
    const words = `${group.count} post(s) on ${group.platform} in generation ${group.generation}`;
    svg.append(svgEl("g", { class: "group", tabindex: 0, "aria-label": words, "data-count": group.count },
      svgEl("title", {}, words),
      svgEl("rect", { x: at.x - 40, y: at.y - 16, width: 80, height: 32, rx: 5, fill: platformColour(platforms, group.platform), stroke: "#1b1f24" }),
      svgEl("text", { x: at.x, y: at.y + 5, "text-anchor": "middle", "font-size": 12, fill: "#ffffff", "font-weight": 700 },
        group.platform[0].toUpperCase() + " " + group.count)));
  }
  return svg;
}

function renderPath(path, platforms) {
  const box = document.getElementById("path");
  if (!box) return;
  box.replaceChildren(...path.map((node, index) => el("article", { "data-post-id": node.post_id },
    el("div", { class: "via" }, index === 0 ? "origin" : "↳ " + (EDGE_KINDS[node.parent_kind] || { label: node.parent_kind }).label + (node.parent_evidence ? " (" + node.parent_evidence + ")" : "")),
    el("h3", {},
      svgEl("svg", { width: 12, height: 12, "aria-hidden": "true" }, svgEl("circle", { cx: 6, cy: 6, r: 6, fill: platformColour(platforms, node.platform) })),
      ` ${node.platform || "unseen"} · @${node.author_handle || "?"}`),
    el("div", { class: "via" }, time(node.created_at) + " · " + node.post_id),
    el("p", {}, node.excerpt || "(not seen: named by a later post)"))));
}

/** Posts per time bin by platform, as stacked bars with a table for screen readers. */
function timeline(view, platforms) {
  const times = view.nodes.map((n) => Date.parse(n.created_at));
  const start = Math.floor(Math.min(...times) / 60000) * 60000;
  const minutes = Math.max(1, Math.ceil((Math.max(...times) - start + 1) / 60000));
  const binMinutes = Math.max(1, Math.ceil(minutes / MAX_TIMELINE_BINS));
  const bins = Math.ceil(minutes / binMinutes);
  const counts = Array.from({ length: bins }, () => new Map());
  view.nodes.forEach((node, i) => {
    const bin = Math.min(bins - 1, Math.floor((times[i] - start) / (binMinutes * 60000)));
    counts[bin].set(node.platform, (counts[bin].get(node.platform) || 0) + 1);
  });
  const highest = Math.max(1, ...counts.map((c) => [...c.values()].reduce((a, b) => a + b, 0)));
  const barWidth = Math.max(3, Math.min(24, Math.floor(900 / bins)));
  const height = 120;
  const svg = svgEl("svg", { width: 40 + bins * barWidth, height: height + 24, role: "img", "aria-label": `Posts per ${binMinutes} minute(s) by platform` });
  counts.forEach((count, bin) => {
    let y = height;
    for (const platform of platforms.concat([""])) {
      const n = count.get(platform) || 0;
      if (!n) continue;
      const h = (n / highest) * (height - 10);
      y -= h;
      svg.append(svgEl("rect", { x: 30 + bin * barWidth, y, width: barWidth - 1, height: h, fill: platformColour(platforms, platform) },
        svgEl("title", {}, `${time(new Date(start + bin * binMinutes * 60000))}: ${n} on ${platform || "unseen"}`)));
    }
  });
  svg.append(svgEl("text", { x: 0, y: 12, "font-size": 10 }, String(highest)));
  svg.append(svgEl("text", { x: 30, y: height + 16, "font-size": 10 }, time(new Date(start)).slice(11, 16)));
  const rows = counts.map((count, bin) => [bin, [...count.entries()]]).filter(([, entries]) => entries.length);
  return el("div", {}, svg, el("details", {}, el("summary", {}, "As a table"),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "From"), el("th", { scope: "col" }, "Posts by platform"))),
      el("tbody", {}, rows.map(([bin, entries]) => el("tr", {},
        el("td", {}, time(new Date(start + bin * binMinutes * 60000))),
        el("td", {}, entries.map(([p, n]) => `${p || "unseen"} ${n}`).join(", "))))))));
}

function accounts(view) {
  const byAccount = new Map();
  for (const node of view.nodes.filter((n) => n.seen)) {
    const id = node.platform + "/" + node.author_handle;
    const entry = byAccount.get(id) || { platform: node.platform, handle: node.author_handle, posts: 0, first: node.created_at, created: node.account_created_at, automated: node.automated_account };
    entry.posts += 1;
    if (node.created_at < entry.first) entry.first = node.created_at;
    byAccount.set(id, entry);
  }
  const rows = [...byAccount.values()].sort((a, b) => b.posts - a.posts || a.first.localeCompare(b.first));
  const shown = rows.slice(0, 300);
  const ageDays = (a) => a.created ? Math.floor((Date.parse(a.first) - Date.parse(a.created)) / 86400000) + " days" : "unknown";
  return el("div", { id: "accounts" },
    el("table", { "aria-labelledby": "accounts-heading" },
      el("thead", {}, el("tr", {}, ["Account", "Platform", "Posts", "Account age at first post", "Automated-looking"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, shown.map((a) => el("tr", {},
        el("td", {}, "@" + a.handle), el("td", {}, a.platform), el("td", { class: "number" }, a.posts),
        el("td", {}, ageDays(a)), el("td", {}, a.automated ? "yes" : "no"))))),
    rows.length > shown.length ? el("p", { class: "note" }, `${rows.length - shown.length} more accounts with fewer posts.`) : null);
}

function xmlEscape(text) {
  return String(text).replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]);
}

function graphml(view) {
  const keys = [["platform", "node"], ["author", "node"], ["created_at", "node"], ["generation", "node"], ["excerpt", "node"], ["kind", "edge"], ["evidence", "edge"], ["primary", "edge"]];
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'];
  for (const [name, scope] of keys) lines.push(`  <key id="${name}" for="${scope}" attr.name="${name}" attr.type="string"/>`);
  lines.push(`  <graph id="${xmlEscape(view.cascade.cascade_id)}" edgedefault="directed">`);
  for (const n of view.nodes) {
    lines.push(`    <node id="${xmlEscape(n.post_id)}"><data key="platform">${xmlEscape(n.platform)}</data><data key="author">${xmlEscape(n.author_handle)}</data>` +
      `<data key="created_at">${xmlEscape(n.created_at)}</data><data key="generation">${n.generation}</data><data key="excerpt">${xmlEscape(n.excerpt)}</data></node>`);
  }
  for (const e of view.edges) {
    lines.push(`    <edge source="${xmlEscape(e.parent_id)}" target="${xmlEscape(e.child_id)}"><data key="kind">${e.kind}</data>` +
      `<data key="evidence">${xmlEscape(e.evidence || "")}</data><data key="primary">${e.is_primary}</data></edge>`);
  }
  lines.push("  </graph>", "</graphml>");
  return lines.join("\n");
}

function svgText() {
  const svg = document.querySelector("#graph svg").cloneNode(true);
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(svg);
}

// ---------------------------------------------------------------- an alert's view

async function showAlert(id) {
  document.title = "Alert " + id + " · echotrace";
  main().replaceChildren(el("p", {}, "Loading alert " + id + "…"));
  let shownChanges = -1;
  await poll(async () => {
    const alert = await api("/alerts/" + encodeURIComponent(id)).catch((error) => {
      if (shownChanges < 0) main().replaceChildren(el("p", {}, el("a", { href: "/" }, "← all cascades and alerts")), el("p", { class: "error" }, error.message));
      throw error;
    });
    const changes = alert.lifecycle.length * 1000 + alert.reviews.length;
    if (changes === shownChanges) return;
    shownChanges = changes;
    renderAlert(alert);
  }, VIEW_REFRESH_MS);
}

function renderAlert(alert) {
  const root = main();
  const lifecycle = alert.lifecycle.map((step) => el("tr", {},
    el("td", {}, time(step.event_time)),
    el("td", { class: "state-" + step.state }, step.starts ? "started" : step.state === "resolved" ? "resolved" : "grew"),
    el("td", { class: "number" }, step.cascade_size),
    el("td", {}, step.triggered_by || ""),
    el("td", {}, step.held ? "held by the circuit breaker" : step.merged_into ? "merged into " + step.merged_into : "")));
  const conditions = Object.entries(alert.conditions).map(([feature, condition]) => el("tr", {},
    el("td", {}, feature), el("td", {}, condition),
    el("td", { class: "number" }, feature in alert.evidence ? String(Math.round(alert.evidence[feature] * 1000) / 1000) : "")));
  const features = Object.entries(alert.features).map(([name, value]) => el("tr", {},
    el("td", {}, name), el("td", {}, typeof value === "object" ? JSON.stringify(value) : String(value))));
  const copy = el("button", {
    id: "copy-sql", type: "button", onclick: async () => {
      try {
        await navigator.clipboard.writeText(alert.sql);
        copy.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(document.getElementById("alert-sql"));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    },
  }, "Copy SQL");
  root.replaceChildren(
    el("p", {}, el("a", { href: "/" }, "← all cascades and alerts")),
    el("h1", {}, "Alert ", el("span", { id: "alert-rule" }, alert.rule), " ", el("span", { class: "state-" + alert.state, id: "alert-state" }, alert.state)),
    el("p", {}, alert.summary),
    el("div", { class: "summary-line" },
      fact("Severity", alert.severity + (alert.shadow ? " (shadow)" : "") + (alert.held ? " (held)" : "")),
      fact("Started (event time)", time(alert.started_at)),
      fact("Last change", time(alert.last_change_at)),
      fact("Platforms", alert.platforms.join(", ")),
      el("div", {}, el("span", {}, "Cascade"), el("a", { id: "alert-cascade", href: "/view/cascades/" + encodeURIComponent(alert.cascade_id) }, alert.cascade_id))),
    el("h2", { id: "lifecycle-heading" }, "Lifecycle"),
    el("table", { id: "alert-lifecycle", "aria-labelledby": "lifecycle-heading" },
      el("thead", {}, el("tr", {}, ["Event time", "Change", "Posts", "Triggered by", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, lifecycle)),
    alert.lifecycle_truncated ? el("p", { class: "note" }, "Older growth updates are left out here; the SQL below reads them all.") : null,
    el("h2", { id: "conditions-heading" }, "What crossed the rule"),
    el("table", { id: "alert-conditions", "aria-labelledby": "conditions-heading" },
      el("thead", {}, el("tr", {}, ["Feature", "Condition", "Value at the last change"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, conditions)),
    el("details", {}, el("summary", {}, "Every feature at the last change"), el("table", {}, el("tbody", {}, features))),
    el("h2", { id: "sql-heading" }, "Reproduce it"),
    el("p", { class: "note" }, "Run with echotrace query --data <output dir> over the stored datasets."),
    el("pre", { class: "sql", id: "alert-sql" }, alert.sql),
    copy,
    reviewSection(alert.cascade_id, alert.alert_id, alert.reviews),
  );
}

// ---------------------------------------------------------------- reviews

function reviewSection(cascadeId, alertId, reviews) {
  const message = el("p", { id: "review-message", role: "status", "aria-live": "polite" });
  const decision = el("select", { id: "review-decision", required: true }, DECISIONS.map(([value, text]) => el("option", { value }, text)));
  const note = el("textarea", { id: "review-note", maxlength: 4000 });
  const token = el("input", { id: "review-token", type: "password", autocomplete: "off" });
  token.value = sessionStorage.getItem(REVIEWER_TOKEN_KEY) || "";
  const list = el("ul", { id: "reviews" }, reviews.map(reviewItem));
  const form = el("form", {
    class: "review", id: "review-form", onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(REVIEWER_TOKEN_KEY, token.value.trim());
      message.textContent = "Recording…";
      try {
        const headers = { "Content-Type": "application/json" };
        if (token.value.trim()) headers.Authorization = "Bearer " + token.value.trim();
        const review = await api("/reviews", {
          method: "POST", reviewer: true, headers,
          body: JSON.stringify({ cascade_id: cascadeId, alert_id: alertId, decision: decision.value, note: note.value }),
        });
        message.textContent = `Recorded: ${review.decision} by ${review.reviewer}.`;
        message.className = "";
        note.value = "";
        list.append(reviewItem(review));
      } catch (error) {
        message.textContent = "Not recorded: " + error.message;
        message.className = "error";
      }
    },
  },
  el("label", { for: "review-decision" }, "Decision"), decision,
  el("label", { for: "review-note" }, "Note (why)"), note,
  el("label", { for: "review-token" }, "Your reviewer token (names you; kept for this tab only)"), token,
  el("button", { id: "review-submit", type: "submit" }, "Record decision"));
  return el("section", { "aria-labelledby": "reviews-heading" },
    el("h2", { id: "reviews-heading" }, alertId ? "Review this alert" : "Review this cascade"),
    el("p", { class: "note" }, "Decisions are appended to the reviews dataset, never edited; the reviewer is the one whose token is given."),
    list, form, message);
}

function reviewItem(review) {
  return el("li", { "data-review-id": review.review_id },
    el("strong", {}, review.decision), ` by ${review.reviewer} at ${time(review.reviewed_at)}`,
    review.alert_id ? ` (alert ${review.alert_id})` : "", review.note ? ": " + review.note : "");
}

// ---------------------------------------------------------------- routing

function route() {
  const path = location.pathname;
  const cascade = path.match(/^\/view\/cascades\/(.+)$/);
  const alert = path.match(/^\/view\/alerts\/(.+)$/);
  if (cascade) return showCascade(decodeURIComponent(cascade[1]));
  if (alert) return showAlert(decodeURIComponent(alert[1]));
  return showLists();
}

document.addEventListener("DOMContentLoaded", route);
