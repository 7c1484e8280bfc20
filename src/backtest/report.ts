// A self-contained HTML report: inline SVG plots, no scripts, no external files.
import type { Resource } from "../core/types.js";
import type { ResourceScore } from "./metrics.js";
import type { ReplayResult, SeriesPoint } from "./replay.js";

export interface BacktestResult {
  trace: string;
  train: string | null;
  format: string;
  samples: number;
  workloads: number;
  elapsed_ms: number;
  rejected: number;
  /** How long augur held each limit decision (0: decided every step). */
  decision_seconds?: number;
  /** augur's service level: the fractions of steps it aims to keep above the memory and rate limits. */
  service_level?: { memory_miss_rate: number; rate_miss_rate: number };
  policies: Record<string, Partial<Record<Resource, ResourceScore>>>;
  /** Slack of clairvoyant per-period peak limits (no overruns), per resource and period: references, not policies. */
  clairvoyant?: Partial<Record<Resource, Record<string, number | null>>>;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const escape = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (value: number | null | undefined, digits = 4) => (value === null || value === undefined ? "–" : value.toFixed(digits));

function scatter(resource: string, points: Array<{ name: string; slack: number; violation: number }>): string {
  const width = 360;
  const height = 260;
  const pad = 44;
  const maxX = Math.max(1e-4, ...points.map((p) => p.violation)) * 1.15;
  const x = (v: number) => pad + (v / maxX) * (width - pad - 12);
  const y = (s: number) => height - pad - s * (height - pad - 12);
  const dots = points
    .map(
      (p, i) =>
        `<circle cx="${x(p.violation).toFixed(1)}" cy="${y(p.slack).toFixed(1)}" r="5" fill="${COLORS[i % COLORS.length]}"><title>${escape(p.name)}: slack ${fmt(p.slack)}, violations ${fmt(p.violation, 5)}</title></circle>` +
        // Labels stack by index so policies at the same spot stay readable.
        `<text x="${(x(p.violation) + 7).toFixed(1)}" y="${(y(p.slack) + 4 + i * 11).toFixed(1)}" font-size="11">${escape(p.name)}</text>`,
    )
    .join("");
  return `<svg width="${width}" height="${height}" role="img" aria-label="slack vs violations, ${escape(resource)}">
<rect x="${pad}" y="12" width="${width - pad - 12}" height="${height - pad - 12}" fill="none" stroke="#ccc"/>
<text x="${width / 2}" y="${height - 8}" font-size="11" text-anchor="middle">violation rate (0 – ${fmt(maxX, 4)})</text>
<text x="12" y="${height / 2}" font-size="11" transform="rotate(-90 12 ${height / 2})" text-anchor="middle">slack (0 – 1)</text>
${dots}</svg>`;
}

function timeline(title: string, points: SeriesPoint[], policies: string[]): string {
  const width = 780;
  const height = 220;
  const pad = 60;
  const step = Math.max(1, Math.ceil(points.length / 1500));
  const shown = points.filter((_, i) => i % step === 0);
  if (shown.length < 2) return "";
  const t0 = shown[0]!.ts;
  const t1 = shown[shown.length - 1]!.ts;
  const maxY = Math.max(...shown.map((p) => Math.max(p.usage, ...policies.map((name) => Math.max(p.limits[name] ?? 0, p.forecasts?.[name] ?? 0))))) * 1.05 || 1;
  const x = (ts: number) => pad + ((ts - t0) / Math.max(1, t1 - t0)) * (width - pad - 10);
  const y = (v: number) => height - pad - (Math.min(v, maxY) / maxY) * (height - pad - 10);
  const line = (values: Array<[number, number]>, color: string, dash = "") =>
    `<polyline fill="none" stroke="${color}" stroke-width="1.2"${dash ? ` stroke-dasharray="${dash}"` : ""} points="${values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`;
  const lines = [line(shown.map((p) => [p.ts, p.usage]), "#000")];
  policies.forEach((name, i) => {
    const color = COLORS[i % COLORS.length]!;
    lines.push(line(shown.map((p) => [p.ts, p.limits[name] ?? 0]), color, "4 2"));
    // The forecast, dotted, over the steps that had one (a policy has none before its first data).
    let run: Array<[number, number]> = [];
    for (const p of [...shown, null]) {
      const forecast = p?.forecasts?.[name];
      if (p && forecast !== undefined) run.push([p.ts, forecast]);
      else {
        if (run.length > 1) lines.push(line(run, color, "1 2"));
        run = [];
      }
    }
  });
  const legend = ["usage", ...policies]
    .map((name, i) => `<tspan fill="${i === 0 ? "#000" : COLORS[(i - 1) % COLORS.length]}">■ ${escape(name)} </tspan>`)
    .join("");
  return `<h3>${escape(title)}</h3><svg width="${width}" height="${height}" role="img" aria-label="${escape(title)}">
<rect x="${pad}" y="10" width="${width - pad - 10}" height="${height - pad - 10}" fill="none" stroke="#ccc"/>
<text x="${pad}" y="${height - 22}" font-size="10">${escape(new Date(t0).toISOString())}</text>
<text x="${width - 10}" y="${height - 22}" font-size="10" text-anchor="end">${escape(new Date(t1).toISOString())}</text>
<text x="${pad - 4}" y="16" font-size="10" text-anchor="end">${maxY.toPrecision(3)}</text>
<text x="${pad}" y="${height - 6}" font-size="11">${legend}</text>
${lines.join("\n")}</svg>`;
}

export function renderReport(result: BacktestResult, series: ReplayResult["series"]): string {
  const policies = Object.keys(result.policies);
  const resources = [...new Set(policies.flatMap((p) => Object.keys(result.policies[p]!)))] as Resource[];
  const table = resources
    .map((resource) => {
      const rows = policies
        .map((policy) => {
          const s = result.policies[policy]![resource];
          if (!s) return "";
          return `<tr><td>${escape(policy)}</td><td>${fmt(s.slack)}</td><td>${fmt(s.violation_rate, 5)}</td><td>${fmt(s.unmet, 5)}</td><td>${fmt(s.changes_per_day, 2)}</td><td>${fmt(s.cold_start.slack)}</td><td>${fmt(s.cold_start.violation_rate, 5)}</td><td>${s.oom_events ?? "–"}</td></tr>`;
        })
        .join("");
      const plot = scatter(
        resource,
        policies.filter((p) => result.policies[p]![resource]).map((p) => ({ name: p, slack: result.policies[p]![resource]!.slack, violation: result.policies[p]![resource]!.violation_rate })),
      );
      const clairvoyant = result.clairvoyant?.[resource];
      const references = clairvoyant
        ? `<p>Clairvoyant references (each workload's peak of the period as its limit, known in advance, never overrun): ${Object.entries(clairvoyant)
            .map(([period, slack]) => `${escape(period)} ${fmt(slack)}`)
            .join(" · ")}.</p>`
        : "";
      return `<section><h2>${escape(resource)}</h2><div class="row"><table><thead><tr><th>policy</th><th>slack</th><th>violation rate</th><th>unmet</th><th>changes/day</th><th>cold slack</th><th>cold violations</th><th>OOM events</th></tr></thead><tbody>${rows}</tbody></table>${plot}</div>${references}</section>`;
    })
    .join("");
  const timelines = series.map((s) => timeline(`${s.workload} — ${s.resource}`, s.points, policies)).join("");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>augur backtest — ${escape(result.trace)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin-right:24px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.row{display:flex;flex-wrap:wrap;align-items:flex-start}</style></head>
<body><h1>augur backtest</h1>
<p>Trace <code>${escape(result.trace)}</code> (${escape(result.format)})${result.train ? `, trained on <code>${escape(result.train)}</code>` : ""}: ${result.samples.toLocaleString("en")} samples, ${result.workloads} workloads, ${result.rejected} rows rejected, replayed in ${(result.elapsed_ms / 1000).toFixed(1)} s${result.decision_seconds ? `; augur held each limit decision for ${result.decision_seconds} s` : ""}${result.service_level ? `; augur's service level: ${result.service_level.memory_miss_rate} of steps above the memory limit, ${result.service_level.rate_miss_rate} above a rate limit` : ""}.</p>
<p>slack = Σ max(limit − usage, 0) / Σ limit; violation rate = steps with usage &gt; limit / steps; unmet = Σ max(usage − limit, 0) / Σ usage; cold = each workload's first hour.</p>
${table}<h2>Sample workloads</h2><p>Usage (black), each policy's limit (dashed) and its forecast (dotted: the usage its model expects at the step, before the margin or rule that makes the limit; vpa: the recommender's P90, autopilot: the newest window's percentile, augur and augur-live: the chosen forecaster's source).</p>${timelines}</body></html>`;
}
