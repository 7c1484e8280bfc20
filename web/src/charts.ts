import uPlot from "uplot";
import type { AllocationPoint, ForecastPoint, Resource, UsagePoint } from "./api.js";
import { resourceFormat, time } from "./format.js";

const COLORS = {
  usage: "#1f6feb",
  peak: "#8cb8ff",
  band: "rgba(120, 120, 120, 0.18)",
  median: "#6e7781",
  limit: "#d97706",
  request: "#a16207",
  allocation: "#cf222e",
};

const NO_POINTS = { show: false };
const timeValue = (_u: uPlot, v: number | null) => (v === null ? "–" : time(v * 1000));

/** A uPlot chart that follows its container's width. */
export class Chart {
  private plot: uPlot | null = null;
  private readonly observer: ResizeObserver;

  constructor(
    private readonly container: HTMLElement,
    private readonly height = 280,
  ) {
    this.observer = new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: this.height }));
    this.observer.observe(container);
  }

  private width(): number {
    return Math.max(320, this.container.clientWidth);
  }

  render(options: Omit<uPlot.Options, "width" | "height">, data: uPlot.AlignedData): void {
    this.plot?.destroy();
    this.plot = new uPlot({ ...options, width: this.width(), height: this.height }, data, this.container);
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

/** Fills forward: a forecast or an allocation holds until the next one. */
function holdForward(xs: number[], points: Array<{ t: number; value: number | null }>): Array<number | null> {
  const out: Array<number | null> = new Array(xs.length).fill(null);
  let j = 0;
  let current: number | null = null;
  for (let i = 0; i < xs.length; i++) {
    while (j < points.length && points[j]!.t / 1000 <= xs[i]!) current = points[j++]!.value;
    out[i] = current;
  }
  return out;
}

function allocationLimit(point: AllocationPoint, resource: Resource): number | null {
  if (!point.ok) return null;
  if (resource === "cpu") return point.cpu?.limit ?? null;
  if (resource === "mem") return point.memory?.limit ?? null;
  if (resource === "gpu_util") return point.gpus;
  return null;
}

/**
 * One resource of one pair over time: usage (95th percentile and peak per
 * window), the forecast band (median to 99th percentile) with its request
 * and limit, and the limit of each allocation decision.
 */
export function profileChart(chart: Chart, resource: Resource, usage: UsagePoint[], forecast: ForecastPoint[], allocations: AllocationPoint[]): void {
  const times = new Set<number>();
  for (const point of usage) if (point.usage[resource]) times.add(point.t / 1000);
  for (const point of forecast) if (point.resources[resource]) times.add(point.t / 1000);
  // Allocations are stamped with wall time, windows with event time: when a
  // replayed trace lies far in the past, its allocations are listed, not plotted.
  const span = [...times];
  const near = (t: number) => span.length === 0 || (t / 1000 >= Math.min(...span) - 86_400 && t / 1000 <= Math.max(...span) + 86_400);
  const allocated = allocations.map((point) => ({ t: point.t, value: allocationLimit(point, resource) })).filter((point) => point.value !== null && near(point.t));
  for (const point of allocated) times.add(point.t / 1000);
  const xs = [...times].sort((a, b) => a - b);
  const byTime = new Map(usage.map((point) => [point.t / 1000, point.usage[resource]]));
  const bands = forecast.filter((point) => point.resources[resource]);
  const band = (field: "p50" | "p99" | "request" | "limit") => holdForward(xs, bands.map((point) => ({ t: point.t, value: point.resources[resource]![field] })));
  const format = resourceFormat(resource);
  const data: uPlot.AlignedData = [
    xs,
    xs.map((x) => byTime.get(x)?.[1] ?? null),
    xs.map((x) => byTime.get(x)?.[2] ?? null),
    band("p50"),
    band("p99"),
    band("request"),
    band("limit"),
    holdForward(xs, allocated),
  ];
  const value = (_u: uPlot, v: number | null) => format(v);
  chart.render(
    {
      legend: { live: true },
      cursor: { sync: { key: "augur" } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { values: (_u, splits) => splits.map((v) => format(v)), size: 90 }],
      series: [
        { value: timeValue },
        { label: "usage p95", stroke: COLORS.usage, width: 2, value, points: NO_POINTS },
        { label: "usage peak", stroke: COLORS.peak, width: 1, value, points: NO_POINTS },
        { label: "forecast p50", stroke: COLORS.median, dash: [4, 4], width: 1, value, spanGaps: true, points: NO_POINTS },
        { label: "forecast p99", stroke: COLORS.median, width: 1, value, spanGaps: true, points: NO_POINTS },
        { label: "request", stroke: COLORS.request, dash: [6, 3], width: 1, value, spanGaps: true, paths: uPlot.paths.stepped!({ align: 1 }), points: NO_POINTS },
        { label: "predicted limit", stroke: COLORS.limit, width: 2, value, spanGaps: true, paths: uPlot.paths.stepped!({ align: 1 }), points: NO_POINTS },
        // Drawn last, over the predicted limit it usually equals; each decision is a marker.
        { label: "allocated limit", stroke: COLORS.allocation, width: 3, value, spanGaps: true, paths: uPlot.paths.stepped!({ align: 1 }), points: { show: (u: uPlot, seriesIdx: number) => u.data[seriesIdx]!.some((v, i) => v !== null && (i === 0 || u.data[seriesIdx]![i - 1] !== v)), size: 9, fill: COLORS.allocation } },
      ],
      bands: [{ series: [4, 3], fill: COLORS.band }],
    },
    data,
  );
}

/** Points on a time axis, one row per category (anomaly types, or policies). */
export function timelineChart(chart: Chart, categories: string[], points: Array<{ t: number; category: string }>): void {
  const xs = [...new Set(points.map((point) => point.t / 1000))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const series = categories.map((category, row) => {
    const ys: Array<number | null> = new Array(xs.length).fill(null);
    for (const point of points) if (point.category === category) ys[index.get(point.t / 1000)!] = row + 1;
    return ys;
  });
  const palette = ["#cf222e", "#bc4c00", "#8250df", "#1f6feb", "#1a7f37", "#6e7781", "#9a6700"];
  chart.render(
    {
      legend: { show: true },
      // A lone event, or a few close together, get an hour either side rather than an axis of years.
      scales: { x: { time: true, range: (_u, min, max) => [Math.min(min, max - 3600) - 300, Math.max(max, min + 3600) + 300] }, y: { range: [0, categories.length + 1] } },
      axes: [{}, { values: (_u, splits) => splits.map((v) => categories[v - 1] ?? ""), size: 110, splits: () => categories.map((_c, i) => i + 1) }],
      series: [{ value: timeValue }, ...categories.map((category, i) => ({ label: category, stroke: palette[i % palette.length], paths: () => null, points: { show: true, size: 9, fill: palette[i % palette.length] } }))],
    },
    [xs, ...series],
  );
}

/** Policies as points: slack (x) against violation rate (y), one chart per resource. */
export function tradeoffChart(chart: Chart, policies: Array<{ name: string; slack: number; violations: number }>): void {
  const sorted = [...policies].sort((a, b) => a.slack - b.slack);
  const palette = ["#6e7781", "#1f6feb", "#8250df", "#1a7f37", "#bc4c00"];
  const xs = sorted.map((policy) => policy.slack);
  chart.render(
    {
      legend: { show: true },
      scales: { x: { time: false, range: (_u, _min, max) => [0, Math.max(max * 1.1, 0.01)] }, y: { range: (_u, _min, max) => [0, Math.max(max * 1.2, 0.001)] } },
      axes: [{ label: "slack", values: (_u, splits) => splits.map((v) => `${(v * 100).toFixed(0)} %`) }, { label: "violation rate", values: (_u, splits) => splits.map((v) => `${(v * 100).toFixed(2)} %`), size: 80 }],
      series: [{ label: "slack" }, ...sorted.map((policy, i) => ({ label: policy.name, stroke: palette[i % palette.length], paths: () => null, points: { show: true, size: 12, fill: palette[i % palette.length] } }))],
    },
    [xs, ...sorted.map((policy, i) => xs.map((_x, j) => (j === i ? policy.violations : null)))],
  );
}
