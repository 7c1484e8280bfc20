import { getJson, pairPath, query, type Anomaly, type BacktestResult, type NodeView, type PairDetail, type PairSummary, type ReportEntry, type Resource } from "./api.js";
import { Chart, profileChart, timelineChart, tradeoffChart } from "./charts.js";
import { append, clear, h, throttle } from "./dom.js";
import { bytes, number, percent, RESOURCE_NAMES, resourceFormat, time } from "./format.js";

type ViewName = "profiles" | "anomalies" | "nodes" | "backtests";

interface State {
  view: ViewName;
  image: string;
  user: string;
  pair: { image: string; user: string } | null;
  resource: Resource;
  report: string | null;
}

const VIEWS: ViewName[] = ["profiles", "anomalies", "nodes", "backtests"];
const root = document.getElementById("view")!;
const imageInput = document.getElementById("search-image") as HTMLInputElement;
const userInput = document.getElementById("search-user") as HTMLInputElement;
let charts: Chart[] = [];
let render = 0; // guards against a slow answer overwriting a newer view

/** The state lives in the URL's fragment, so a view can be bookmarked and shared. */
function readState(): State {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(search ?? "");
  const view = (VIEWS as string[]).includes(path ?? "") ? (path as ViewName) : "profiles";
  const pair = params.get("pair");
  const at = pair ? pair.indexOf("|") : -1;
  return {
    view,
    image: params.get("image") ?? "",
    user: params.get("user") ?? "",
    pair: pair && at > 0 ? { image: pair.slice(0, at), user: pair.slice(at + 1) } : null,
    resource: (params.get("resource") as Resource | null) ?? "cpu",
    report: params.get("report"),
  };
}

function hashOf(state: State): string {
  const params = new URLSearchParams();
  if (state.image) params.set("image", state.image);
  if (state.user) params.set("user", state.user);
  if (state.pair) params.set("pair", `${state.pair.image}|${state.pair.user}`);
  if (state.resource !== "cpu") params.set("resource", state.resource);
  if (state.report) params.set("report", state.report);
  const text = params.toString();
  return `#/${state.view}${text ? `?${text}` : ""}`;
}

function go(change: Partial<State>): void {
  location.hash = hashOf({ ...readState(), ...change });
}

function resetCharts(): void {
  for (const chart of charts) chart.destroy();
  charts = [];
}

function chartIn(container: HTMLElement, height?: number): Chart {
  const chart = new Chart(container, height);
  charts.push(chart);
  return chart;
}

function failure(error: unknown): HTMLElement {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

function levelBadge(level: string | null | undefined): HTMLElement {
  return h("span", { class: `badge level-${level ?? "none"}`, title: "profile level used" }, level ?? "none");
}

// ---- Profiles ---------------------------------------------------------------

async function showProfiles(state: State, token: number): Promise<void> {
  const list = h("section", { class: "pairs", "aria-label": "(image, user) pairs" });
  const detail = h("section", { class: "detail", "aria-label": "selected pair" });
  const layout = h("div", { class: "split" }, list, detail);
  const { pairs, total } = await getJson<{ pairs: PairSummary[]; total: number }>(`/v1/dashboard/pairs${query({ image: state.image, user: state.user })}`);
  if (token !== render) return;
  clear(root);
  append(root, layout);
  append(list, h("h2", {}, `Pairs `, h("small", {}, `${total}${total > pairs.length ? `, newest ${pairs.length} shown` : ""}`)));
  if (pairs.length === 0) append(list, h("p", { class: "empty" }, state.image || state.user ? "No pair matches the filter." : "No windows yet: profiles appear once the first windows close."));
  const table = h("table", { class: "pair-list" }, h("thead", {}, h("tr", {}, h("th", {}, "image"), h("th", {}, "user"), h("th", {}, "level"), h("th", { title: "anomalies" }, "⚠"))));
  const body = h("tbody");
  for (const pair of pairs) {
    const selected = state.pair?.image === pair.image && state.pair?.user === pair.user;
    const row = h(
      "tr",
      { class: selected ? "selected" : null, tabindex: 0, "data-image": pair.image, "data-user": pair.user, onclick: () => go({ pair: { image: pair.image, user: pair.user } }), onkeydown: (e: Event) => (e as KeyboardEvent).key === "Enter" && go({ pair: { image: pair.image, user: pair.user } }) },
      h("td", { class: "mono", title: pair.image }, pair.image),
      h("td", { class: "mono", title: pair.user }, pair.user),
      h("td", {}, levelBadge(pair.lastAllocation?.level ?? pair.forecastLevel)),
      h("td", { class: pair.anomalies > 0 ? "alarm" : "" }, pair.anomalies || ""),
    );
    body.appendChild(row);
  }
  table.appendChild(body);
  append(list, table);
  const chosen = state.pair ?? (pairs[0] ? { image: pairs[0].image, user: pairs[0].user } : null);
  if (!chosen) return;
  try {
    const detailData = await getJson<PairDetail>(pairPath(chosen.image, chosen.user));
    if (token !== render) return;
    showPair(detail, detailData, state.resource);
  } catch (error) {
    append(detail, failure(error));
  }
}

function showPair(container: HTMLElement, pair: PairDetail, wanted: Resource): void {
  clear(container);
  const resources = new Set<Resource>();
  for (const point of pair.usage) for (const r of Object.keys(point.usage)) resources.add(r as Resource);
  for (const point of pair.forecast) for (const r of Object.keys(point.resources)) resources.add(r as Resource);
  const available = [...resources];
  const resource = available.includes(wanted) ? wanted : (available[0] ?? "cpu");
  const forecast = pair.forecast.length > 0 ? pair.forecast : (pair.fallback?.forecast ?? []);
  const latest = pair.profile?.resources[resource];
  const format = resourceFormat(resource);
  append(
    container,
    h("h2", { class: "pair-title" }, h("span", { class: "mono" }, pair.image), h("span", { class: "sep" }, " run by "), h("span", { class: "mono" }, pair.user)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "next allocation from"),
      h("dd", {}, levelBadge(pair.nextLevel), pair.fallback ? h("span", { class: "muted" }, ` (${pair.fallback.image}, ${pair.fallback.user})`) : null),
      h("dt", {}, "windows in profile"),
      h("dd", {}, pair.profile ? number(pair.profile.windows, 0) : "none yet"),
      h("dt", {}, "model"),
      h("dd", {}, latest?.model ?? "–"),
      h("dt", {}, "request / limit now"),
      h("dd", {}, latest ? `${format(latest.request)} / ${format(latest.limit)}` : "–"),
      h("dt", {}, "allocations shown"),
      h("dd", {}, String(pair.allocations.length)),
    ),
  );
  const tabs = h("div", { class: "tabs", role: "tablist" });
  for (const r of available) tabs.appendChild(h("button", { role: "tab", "aria-selected": r === resource ? "true" : "false", class: r === resource ? "active" : null, onclick: () => go({ resource: r }) }, RESOURCE_NAMES[r] ?? r));
  append(container, tabs);
  const chartBox = h("div", { class: "chart", "data-chart": "profile", "data-resource": resource });
  append(container, chartBox);
  if (pair.usage.length === 0 && forecast.length === 0 && pair.allocations.length === 0) {
    append(chartBox, h("p", { class: "empty" }, "Nothing to plot yet."));
  } else {
    profileChart(chartIn(chartBox), resource, pair.usage, forecast, pair.allocations);
  }
  if (pair.allocations.length > 0) {
    const rows = pair.allocations.slice(-8).reverse();
    append(
      container,
      h("h3", {}, "Latest allocations"),
      h(
        "table",
        { class: "allocations" },
        h("thead", {}, h("tr", {}, ...["time", "node", "level", "cpu request / limit", "memory request / limit", "outcome"].map((title) => h("th", {}, title)))),
        h(
          "tbody",
          {},
          ...rows.map((a) =>
            h(
              "tr",
              {},
              h("td", {}, time(a.t)),
              h("td", { class: "mono" }, a.node),
              h("td", {}, levelBadge(a.level)),
              h("td", {}, a.cpu ? `${number(a.cpu.request, 3)} / ${number(a.cpu.limit, 3)}` : "–"),
              h("td", {}, a.memory ? `${bytes(a.memory.request)} / ${bytes(a.memory.limit)}` : "–"),
              h("td", { class: a.ok ? "" : "alarm" }, a.ok ? "ok" : a.reason),
            ),
          ),
        ),
      ),
    );
  }
}

// ---- Anomalies --------------------------------------------------------------

async function showAnomalies(state: State, token: number): Promise<void> {
  const { anomalies } = await getJson<{ anomalies: Anomaly[] }>(`/v1/dashboard/anomalies${query({ image: state.image, user: state.user })}`);
  if (token !== render) return;
  clear(root);
  append(root, h("h2", {}, "Anomalies ", h("small", {}, String(anomalies.length))));
  if (anomalies.length === 0) {
    append(root, h("p", { class: "empty" }, "No anomaly detected (detection runs when detect.enabled is on)."));
    return;
  }
  const types = [...new Set(anomalies.map((a) => a.type))].sort();
  const chartBox = h("div", { class: "chart", "data-chart": "timeline" });
  append(root, chartBox);
  timelineChart(chartIn(chartBox, 80 + 36 * types.length), types, anomalies.map((a) => ({ t: a.detectedTs, category: a.type })));
  const body = h("tbody");
  for (const a of anomalies) {
    const format = resourceFormat(a.resource);
    const actions = a.actions.length === 0 ? h("span", { class: "muted" }, "none") : h("ul", { class: "actions" }, ...a.actions.map((x) => h("li", { class: x.ok ? "" : "alarm", title: x.reason }, `${x.action}${x.dryRun ? " (dry run)" : ""}${x.ok ? "" : " failed"} at ${time(x.ts)}`)));
    body.appendChild(
      h(
        "tr",
        { class: `severity-${a.severity}`, "data-type": a.type },
        h("td", {}, time(a.detectedTs)),
        h("td", {}, h("span", { class: `badge type` }, a.type)),
        h("td", {}, a.severity),
        h("td", { class: "mono", title: a.workload }, a.workload),
        h("td", { class: "mono" }, h("a", { href: hashOf({ ...readState(), view: "profiles", pair: { image: a.image, user: a.user } }) }, `${a.image} / ${a.user}`)),
        h("td", {}, `${format(a.observed)} vs ${format(a.expected)}`),
        h("td", {}, `${time(a.startTs)}`),
        h("td", {}, actions),
      ),
    );
  }
  append(root, h("table", { class: "anomalies" }, h("thead", {}, h("tr", {}, ...["detected", "type", "severity", "workload", "(image, user)", "observed vs expected", "started", "action taken"].map((t) => h("th", {}, t)))), body));
}

// ---- Nodes ------------------------------------------------------------------

function meter(label: string, used: number, capacity: number, format: (v: number) => string): HTMLElement {
  const share = capacity > 0 ? Math.min(1, used / capacity) : 0;
  const fill = h("div", { class: share > 0.9 ? "fill hot" : "fill" });
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  return h("div", { class: "meter", role: "meter", "aria-label": label, "aria-valuenow": used, "aria-valuemax": capacity }, h("div", { class: "meter-label" }, h("span", {}, label), h("span", {}, `${format(used)} of ${format(capacity)}`)), h("div", { class: "bar" }, fill));
}

async function showNodes(_state: State, token: number): Promise<void> {
  const { nodes } = await getJson<{ nodes: NodeView[] }>("/v1/dashboard/nodes");
  if (token !== render) return;
  clear(root);
  append(root, h("h2", {}, "Nodes"));
  const grid = h("div", { class: "cards" });
  for (const node of nodes) {
    const card = h("article", { class: "card", "data-node": node.node }, h("h3", { class: "mono" }, node.node, node.local ? h("small", {}, " this node") : null));
    if (node.capacity && node.allocated) {
      append(card, meter("CPU (cores)", node.allocated.cpu, node.capacity.cpu, (v) => number(v, 2)), meter("memory", node.allocated.memory, node.capacity.memory, bytes));
      if (node.capacity.gpus > 0) append(card, meter("GPUs", node.allocated.gpus, node.capacity.gpus, (v) => number(v, 0)));
      append(card, h("p", {}, `${node.live} live allocations`));
    } else append(card, h("p", { class: "muted" }, "capacity is known on the node itself"));
    append(card, h("p", { class: "muted" }, `${node.decisions} decisions seen, ${node.refused} refused${node.last ? `, last ${time(node.last)}` : ""}`));
    grid.appendChild(card);
  }
  append(root, grid);
}

// ---- Backtests --------------------------------------------------------------

async function showBacktests(state: State, token: number): Promise<void> {
  const listing = await getJson<{ reports: ReportEntry[]; refused: Array<{ file: string; reason: string }>; configured: boolean }>("/v1/dashboard/reports");
  if (token !== render) return;
  clear(root);
  append(root, h("h2", {}, "Backtests"));
  if (!listing.configured) {
    append(root, h("p", { class: "empty" }, "No reports directory: set dashboard.reports in the pipeline file (or augur run --reports DIR) and write results there with augur backtest --out DIR/NAME.json --report DIR/NAME.html."));
    return;
  }
  if (listing.reports.length === 0) append(root, h("p", { class: "empty" }, "No backtest results in the reports directory yet."));
  const chosen = state.report ?? listing.reports[0]?.name ?? null;
  const select = h("select", { "aria-label": "backtest report", onchange: (e: Event) => go({ report: (e.target as HTMLSelectElement).value }) });
  for (const report of listing.reports) select.appendChild(h("option", { value: report.name, selected: report.name === chosen }, `${report.name} — ${report.trace} (${number(report.samples, 0)} samples)`));
  if (listing.reports.length > 0) append(root, h("label", { class: "picker" }, "Trace ", select));
  if (listing.refused.length > 0) append(root, h("details", { class: "muted" }, h("summary", {}, `${listing.refused.length} files not shown`), h("ul", {}, ...listing.refused.map((r) => h("li", {}, `${r.file}: ${r.reason}`)))));
  if (!chosen) return;
  const result = await getJson<BacktestResult>(`/v1/dashboard/reports/${encodeURIComponent(chosen)}`);
  if (token !== render) return;
  const policies = Object.keys(result.policies);
  const resources = [...new Set(policies.flatMap((p) => Object.keys(result.policies[p]!)))];
  append(root, h("p", {}, `${result.trace}: ${number(result.samples, 0)} samples, ${number(result.workloads, 0)} workloads${result.elapsed_ms ? `, replayed in ${number(result.elapsed_ms / 1000, 1)} s` : ""}.`));
  const head = h("tr", {}, h("th", {}, "resource"), h("th", {}, "policy"), ...["slack", "violation rate", "unmet", "changes / day", "cold-start slack", "cold-start violations", "OOM events"].map((t) => h("th", {}, t)));
  const body = h("tbody");
  for (const resource of resources) {
    const best = Math.min(...policies.map((p) => result.policies[p]![resource]?.slack ?? Infinity));
    for (const policy of policies) {
      const m = result.policies[policy]![resource];
      if (!m) continue;
      body.appendChild(
        h(
          "tr",
          { "data-policy": policy, "data-resource": resource },
          h("td", {}, RESOURCE_NAMES[resource] ?? resource),
          h("td", { class: policy === "augur" ? "strong" : "" }, policy),
          h("td", { class: m.slack === best ? "strong" : "" }, percent(m.slack)),
          h("td", {}, percent(m.violation_rate)),
          h("td", {}, number(m.unmet ?? null, 3)),
          h("td", {}, number(m.changes_per_day ?? null, 1)),
          h("td", {}, percent(m.cold_start?.slack ?? null)),
          h("td", {}, percent(m.cold_start?.violation_rate ?? null)),
          h("td", {}, m.oom_events === undefined ? "" : number(m.oom_events, 0)),
        ),
      );
    }
  }
  append(root, h("table", { class: "backtest" }, h("thead", {}, head), body));
  const plots = h("div", { class: "cards" });
  append(root, h("h3", {}, "Slack against violations"), plots);
  for (const resource of resources) {
    const points = policies.flatMap((p) => {
      const m = result.policies[p]![resource];
      return m && m.slack !== null && m.violation_rate !== null ? [{ name: p, slack: m.slack, violations: m.violation_rate }] : [];
    });
    const box = h("div", { class: "chart small", "data-chart": `tradeoff-${resource}` });
    plots.appendChild(h("article", { class: "card" }, h("h4", {}, RESOURCE_NAMES[resource] ?? resource), box));
    if (points.length > 0) tradeoffChart(chartIn(box, 220), points);
  }
  const entry = listing.reports.find((r) => r.name === chosen);
  if (entry?.html) append(root, h("h3", {}, "Full report"), h("iframe", { class: "report", title: `backtest report ${chosen}`, src: `/v1/dashboard/reports/${encodeURIComponent(chosen)}/html`, sandbox: "" }));
}

// ---- Shell ------------------------------------------------------------------

const VIEW_RENDERERS: Record<ViewName, (state: State, token: number) => Promise<void>> = {
  profiles: showProfiles,
  anomalies: showAnomalies,
  nodes: showNodes,
  backtests: showBacktests,
};

async function refresh(): Promise<void> {
  const state = readState();
  const token = ++render;
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) link.classList.toggle("active", link.dataset.view === state.view);
  if (document.activeElement !== imageInput) imageInput.value = state.image;
  if (document.activeElement !== userInput) userInput.value = state.user;
  try {
    resetCharts();
    await VIEW_RENDERERS[state.view](state, token);
    if (token === render) document.body.dataset.ready = state.view;
  } catch (error) {
    if (token !== render) return;
    clear(root);
    append(root, failure(error));
  }
}

function onSearch(): void {
  const state = readState();
  if (state.image === imageInput.value && state.user === userInput.value) return;
  go({ image: imageInput.value, user: userInput.value, pair: null });
}

let searchTimer: ReturnType<typeof setTimeout> | null = null;
for (const input of [imageInput, userInput]) {
  input.addEventListener("input", () => {
    if (searchTimer) clearTimeout(searchTimer);
    searchTimer = setTimeout(onSearch, 250);
  });
}
document.querySelector("form.search")!.addEventListener("submit", (event) => {
  event.preventDefault();
  onSearch();
});

/** Live updates: the server says what changed; the view in front is fetched again, at most every 2 s. */
function live(): void {
  const dot = document.getElementById("live")!;
  const again = throttle(() => void refresh(), 2000);
  const source = new EventSource("/v1/dashboard/stream");
  source.addEventListener("open", () => dot.classList.add("on"));
  source.addEventListener("error", () => dot.classList.remove("on"));
  source.addEventListener("update", (event) => {
    const change = JSON.parse((event as MessageEvent<string>).data) as { pairs: string[]; anomalies: boolean; allocations: boolean };
    const state = readState();
    if (state.view === "profiles" && change.pairs.length > 0) again();
    else if (state.view === "anomalies" && change.anomalies) again();
    else if (state.view === "nodes" && change.allocations) again();
  });
}

async function start(): Promise<void> {
  window.addEventListener("hashchange", () => void refresh());
  try {
    const summary = await getJson<{ node: string }>("/v1/dashboard/summary");
    document.getElementById("node")!.textContent = `node ${summary.node}`;
  } catch {
    /* the view shows the error */
  }
  await refresh();
  live();
}

void start();
