// The web dashboard in a real browser: Debian's headless Chromium, driven by
// playwright-core, against `augur run`'s embedded pipeline fed with samples
// through its own topic. Screenshots go to test-artifacts/.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { runBacktest } from "../../src/backtest/run.js";
import { loadPipeline } from "../../src/config/pipeline.js";
import { pairKey } from "../../src/core/keys.js";
import type { Sample } from "../../src/core/types.js";
import { startEmbeddedPipeline, type RunningPipeline } from "../../src/pipeline/embedded.js";
import { TOPICS } from "../../src/transport/topic.js";
import { eventually, sample, tempDir } from "../helpers.js";

// What the callbacks given to page.evaluate see runs in the browser; the
// tests are compiled without the DOM library, so these names stand in for it.
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any;
declare const window: any;
declare const location: any;
type HTMLElement = any;
type HTMLCanvasElement = any;

const CHROMIUM = process.env.AUGUR_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(process.cwd(), "test-artifacts");
const TOKEN = "dashboard-it-token-0123456789";
const STEP = 60_000;
// Event time ends about now, so the allocations (stamped with wall time) fall at the charts' right edge.
const START = Math.floor((Date.now() - 72 * STEP) / STEP) * STEP;
const WEB = "registry.example/web:1.4";
const BATCH = "registry.example/batch:7";
/** Names that would run script if the page ever treated data as markup. */
const HOSTILE_IMAGE = `<img src=x onerror="window.__xss=1">`;
const HOSTILE_USER = `"><script>window.__xss=2</script>`;

const skip = !existsSync(CHROMIUM) && `needs Chromium at ${CHROMIUM} (Debian's chromium package)`;

interface Series {
  image: string;
  user: string;
  workload: string;
  cpu: (step: number) => number;
  mem: (step: number) => number;
  cpuLimit?: number;
}

function samplesOf(series: Series[], from: number, to: number): Sample[] {
  const out: Sample[] = [];
  for (let step = from; step < to; step++) {
    for (const s of series) {
      out.push(
        sample({
          ts: START + step * STEP + 5_000,
          workload: s.workload,
          image: s.image,
          user: s.user,
          host: "dash-node",
          source: "test",
          cpuCores: s.cpu(step),
          memoryWorkingSetBytes: s.mem(step),
          cpuLimitCores: s.cpuLimit ?? null,
        }),
      );
    }
  }
  return out.sort((a, b) => a.ts - b.ts);
}

const wave = (base: number, amplitude: number, period: number) => (step: number) => base + amplitude * Math.sin((2 * Math.PI * step) / period);

const SERIES: Series[] = [
  { image: WEB, user: "alice", workload: "alice-w1", cpu: wave(0.3, 0.05, 30), mem: wave(200e6, 10e6, 40) },
  { image: WEB, user: "alice", workload: "alice-w2", cpu: wave(0.32, 0.04, 25), mem: wave(210e6, 8e6, 35) },
  // An idle-ish workload that turns into something burning all its CPU from step 60.
  { image: WEB, user: "bob", workload: "bob-w1", cpu: (step) => (step >= 60 ? 3.95 : wave(0.05, 0.01, 20)(step)), mem: wave(150e6, 5e6, 30), cpuLimit: 4 },
  { image: BATCH, user: "carol", workload: "carol-w1", cpu: wave(1, 0.2, 15), mem: wave(1.2e9, 50e6, 20) },
  { image: HOSTILE_IMAGE, user: HOSTILE_USER, workload: "hostile-w1", cpu: wave(0.1, 0.02, 10), mem: wave(50e6, 1e6, 10) },
];

describe("dashboard in headless Chromium", { skip }, () => {
  const { dir, cleanup } = tempDir("augur-dashboard-");
  let running: RunningPipeline;
  let browser: Browser;
  let page: Page;
  let base: string;

  const publish = (samples: Sample[]) => running.transport.topic<Sample>(TOPICS.samples).publish(samples.map((s) => ({ key: pairKey(s.image, s.user), value: s, timestamp: s.ts })));
  const allocate = async (image: string, user: string, requestId: string) => {
    const response = await fetch(`${base}/v1/allocations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ image, user, requestId }),
    });
    assert.equal(response.status, 201, await response.text());
  };
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `dashboard-${name}.png`), fullPage: true });
  /** Pixels of the chart's canvas drawn in a colour close to `hex`. */
  const pixelsOf = (selector: string, hex: string) =>
    page.evaluate(
      ([sel, color]) => {
        const canvas = document.querySelector(`${sel} canvas`) as HTMLCanvasElement;
        if (!canvas) return -1;
        const { data } = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height);
        const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16)) as [number, number, number];
        let n = 0;
        for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i]! - r) < 24 && Math.abs(data[i + 1]! - g) < 24 && Math.abs(data[i + 2]! - b) < 24 && data[i + 3]! > 200) n++;
        return n;
      },
      [selector, hex] as const,
    );

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const reports = join(dir, "reports");
    mkdirSync(reports);
    // A real backtest result and report for the Backtests view, plus a file that is not one.
    await runBacktest({ trace: "test/fixtures/bitbrains", format: "bitbrains", policies: ["static", "vpa", "autopilot"], resources: ["cpu", "mem"], out: join(reports, "bitbrains-slice.json"), report: join(reports, "bitbrains-slice.html") });
    writeFileSync(join(reports, "broken.json"), "{ not json");
    const config = join(dir, "dash.yaml");
    writeFileSync(
      config,
      `name: dash
node: dash-node
dataDir: ${join(dir, "data")}
transport: { kind: embedded }
aggregate: { window: { sizeSeconds: 60 }, idleWatermarkSeconds: 1 }
allocate: { minWindows: 3, inventory: { cpu: 16, memory: 68719476736, gpus: 0 }, reserveFraction: 0 }
detect:
  enabled: true
  monitor: { warmupSteps: 20, recentSteps: 6, clearSteps: 3 }
  sinks: []
dashboard: { reports: ${reports} }
api: { listen: "127.0.0.1:0", tokenEnv: AUGUR_IT_DASHBOARD_TOKEN }
`,
    );
    process.env.AUGUR_IT_DASHBOARD_TOKEN = TOKEN;
    running = await startEmbeddedPipeline(loadPipeline(config));
    base = running.address;
    // The first hour, two allocations on the way, then the rest.
    await publish(samplesOf(SERIES, 0, 30));
    await eventually(async () => ((await (await fetch(`${base}/v1/profiles/${encodeURIComponent(WEB)}/alice`)).json()) as { windows?: number }).windows! >= 20 || undefined, 30_000, "a profile of (web, alice)");
    await allocate(WEB, "alice", "alloc-1");
    await publish(samplesOf(SERIES, 30, 70));
    await eventually(async () => ((await (await fetch(`${base}/v1/dashboard/anomalies`)).json()) as { anomalies: unknown[] }).anomalies.length > 0 || undefined, 30_000, "an anomaly");
    await allocate(WEB, "alice", "alloc-2");
    await allocate(WEB, "bob", "alloc-3");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on("pageerror", (error) => assert.fail(`page error: ${error.message}`));
  });

  after(async () => {
    await browser?.close();
    await running?.stop();
    delete process.env.AUGUR_IT_DASHBOARD_TOKEN;
    cleanup();
  });

  it("loads and lists the pairs, hostile names as plain text", async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector("body[data-ready=profiles]");
    const users = await page.$$eval(".pair-list tbody tr", (rows) => rows.map((row) => (row as HTMLElement).dataset.user));
    assert.deepEqual([...users].sort(), ["alice", "bob", "carol", HOSTILE_USER].sort());
    const shown = await page.$$eval(".pair-list tbody td", (cells) => cells.map((cell) => cell.textContent));
    assert.ok(shown.includes(HOSTILE_IMAGE), "the hostile image name is shown as text");
    assert.equal(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss), undefined);
    assert.equal(await page.$$eval("script", (scripts) => scripts.length), 1, "no script element was injected");
  });

  it("shows a pair's usage with the forecast band and the allocations", async () => {
    await page.click(`.pair-list tr[data-user="alice"]`);
    await page.waitForSelector(".chart[data-chart=profile][data-resource=cpu] canvas");
    await page.waitForSelector("body[data-ready=profiles]");
    assert.match(await page.textContent(".pair-title") ?? "", /registry\.example\/web:1\.4 run by alice/);
    assert.equal(await page.textContent(".facts .level-exact"), "exact");
    const legend = await page.$$eval(".chart[data-chart=profile] .u-legend .u-label", (labels) => labels.map((label) => label.textContent));
    for (const label of ["usage p95", "forecast p50", "forecast p99", "predicted limit", "allocated limit"]) assert.ok(legend.includes(label), `legend has ${label}: ${legend.join(", ")}`);
    await shot("profile");
    assert.ok((await pixelsOf(".chart[data-chart=profile]", "#1f6feb")) > 200, "usage is drawn");
    assert.ok((await pixelsOf(".chart[data-chart=profile]", "#d97706")) > 200, "the predicted limit is drawn");
    assert.ok((await pixelsOf(".chart[data-chart=profile]", "#cf222e")) > 20, "the allocated limit is drawn");
    assert.equal(await page.$$eval("table.allocations tbody tr", (rows) => rows.length), 2);
    await page.click(".tabs button:has-text('memory')");
    await page.waitForSelector(".chart[data-chart=profile][data-resource=mem] canvas");
    assert.ok((await pixelsOf(".chart[data-chart=profile]", "#d97706")) > 200, "the memory limit is drawn");
  });

  it("filters by user", async () => {
    await page.fill("#search-user", "bob");
    await page.waitForFunction(() => location.hash.includes("user=bob") && document.body.dataset.ready === "profiles" && document.querySelectorAll(".pair-list tbody tr").length === 1);
    const users = await page.$$eval(".pair-list tbody tr", (rows) => rows.map((row) => (row as HTMLElement).dataset.user));
    assert.deepEqual(users, ["bob"]);
    await page.waitForSelector(".pair-title:has-text('bob')");
    await shot("filter-bob");
    await page.fill("#search-user", "nobody-by-that-name");
    await page.waitForSelector(".pairs .empty");
    await page.fill("#search-user", "");
    await page.waitForFunction(() => document.querySelectorAll(".pair-list tbody tr").length === 4);
  });

  it("shows the anomaly with the action taken", async () => {
    await page.click("nav a[data-view=anomalies]");
    await page.waitForSelector("body[data-ready=anomalies]");
    const rows = await page.$$eval("table.anomalies tbody tr", (trs) => trs.map((tr) => ({ type: (tr as HTMLElement).dataset.type, text: tr.textContent ?? "" })));
    const bob = rows.filter((row) => row.text.includes("bob-w1"));
    assert.ok(bob.length > 0, `the burning workload is reported: ${JSON.stringify(rows)}`);
    assert.ok(bob.some((row) => /runaway|miner/.test(row.type ?? "")), JSON.stringify(bob));
    assert.ok(bob.some((row) => row.text.includes("alert")), "the policy's action (alert) is shown");
    assert.ok(rows.every((row) => !row.text.includes("alice-w1")), "steady workloads are not reported");
    assert.ok((await page.$$("[data-chart=timeline] canvas")).length > 0);
    await shot("anomalies");
  });

  it("shows the node's capacity and what is allocated", async () => {
    await page.click("nav a[data-view=nodes]");
    await page.waitForSelector("body[data-ready=nodes]");
    const card = await page.textContent(".card[data-node=dash-node]");
    assert.match(card ?? "", /3 live allocations/);
    assert.match(card ?? "", /of 16/);
    await shot("nodes");
  });

  it("shows a backtest result and its report", async () => {
    await page.click("nav a[data-view=backtests]");
    await page.waitForSelector("body[data-ready=backtests]");
    const policies = await page.$$eval("table.backtest tbody tr", (rows) => rows.map((row) => `${(row as HTMLElement).dataset.policy}/${(row as HTMLElement).dataset.resource}`));
    assert.deepEqual(new Set(policies), new Set(["static/cpu", "vpa/cpu", "autopilot/cpu", "static/mem", "vpa/mem", "autopilot/mem"]));
    assert.match((await page.textContent("details")) ?? "", /broken\.json/);
    const frame = page.frameLocator("iframe.report");
    await frame.locator("svg").first().waitFor();
    await shot("backtests");
  });

  it("updates live when new pairs arrive", async () => {
    await page.click("nav a[data-view=profiles]");
    await page.waitForSelector("body[data-ready=profiles]");
    const live = samplesOf([{ image: "registry.example/new:1", user: "dave", workload: "dave-w1", cpu: () => 0.5, mem: () => 100e6 }], 70, 75);
    await publish(live);
    await page.waitForSelector(`.pair-list tr[data-user="dave"]`, { timeout: 20_000 });
    assert.ok(await page.isVisible("#live.on"), "the live-update stream is connected");
    await shot("live");
  });
});
