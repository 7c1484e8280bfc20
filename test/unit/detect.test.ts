import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { loadTrace } from "../../src/backtest/adapters/index.js";
import type { Trace } from "../../src/backtest/trace.js";
import { ValidationError } from "../../src/core/errors.js";
import type { Resource } from "../../src/core/types.js";
import { BlockMeans } from "../../src/detect/blocks.js";
import { injectAnomalies } from "../../src/detect/inject.js";
import { detectConfig, WorkloadMonitor, type AnomalyEvent } from "../../src/detect/monitor.js";
import { seededRandom, sleep, tempDir } from "../helpers.js";
import { detectTrace, parseLabels, scoreDetections, suppressFleetWide } from "../../src/detect/offline.js";
import { mannKendall, mad, median, theilSen } from "../../src/detect/stats.js";
import { ANOMALY_TYPES } from "../../src/detect/detector.js";
import { Remediator, remediationConfig, type RemediationTargets } from "../../src/detect/remediate.js";
import { ProcessConnector, processConnectorConfig } from "../../src/actuate/process.js";
import type { CgroupConnector } from "../../src/actuate/cgroup.js";
import type { ActuationResult } from "../../src/core/types.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/", import.meta.url));
const STEP = 300_000;
const T0 = Date.UTC(2026, 0, 1);
const GIB = 2 ** 30;

describe("robust statistics", () => {
  it("Mann–Kendall and Theil–Sen on known series", () => {
    const up = mannKendall([1, 2, 3, 4, 5, 6]);
    assert.equal(up.s, 15);
    assert.ok(Math.abs(up.z - 14 / Math.sqrt(85 / 3)) < 1e-12);
    assert.ok(Math.abs(up.pUp - 0.00427) < 1e-4, String(up.pUp));
    assert.ok(Math.abs(mannKendall([3, 3, 3, 3]).pUp - 0.5) < 1e-6); // no trend at all
    assert.ok(mannKendall([6, 5, 4, 3, 2, 1]).pUp > 0.99);
    assert.equal(theilSen([1, 3, 5, 7]), 2);
    assert.equal(theilSen([1, 3, 100, 7, 9]), 2); // one wild point does not move it
    assert.equal(median([5, 1, 3]), 3);
    assert.equal(mad([1, 2, 3, 4, 100]), 1);
  });
});

/** A workload's steps: `normal(i)` for warm-up and after, `anomaly(i)` overriding values from step `at`. */
function run(
  normal: (i: number) => Partial<Record<Resource, number>>,
  anomaly: ((k: number) => Partial<Record<Resource, number>>) | null,
  options: { at?: number; length?: number; total?: number; cpuCapacity?: number } = {},
): AnomalyEvent[] {
  const monitor = new WorkloadMonitor({ workload: "w", image: "img", user: "u", host: "h" }, detectConfig.parse({}));
  const at = options.at ?? 700;
  const events: AnomalyEvent[] = [];
  for (let i = 0; i < (options.total ?? 760); i++) {
    const inside = anomaly !== null && i >= at && i < at + (options.length ?? 10);
    const values = { ...normal(i), ...(inside ? anomaly(i - at) : {}) };
    events.push(...monitor.observe({ ts: T0 + i * STEP, values, cpuCapacity: options.cpuCapacity ?? 4, memoryLimit: 16 * GIB }));
  }
  return events;
}

// Deterministic "noise": a small daily wave plus a hash-like wiggle.
const wiggle = (i: number) => ((i * 7919) % 13) / 13;
const busy = (i: number) => ({ cpu: 0.8 + 0.4 * Math.sin((i / 288) * 2 * Math.PI) + 0.2 * wiggle(i), mem: 2 * GIB + 0.2 * GIB * wiggle(i), net_tx: 200_000 + 50_000 * wiggle(i), net_rx: 300_000 });
const idle = (i: number) => ({ ...busy(i), cpu: 0.05 + 0.05 * wiggle(i) });
const delaySteps = (event: AnomalyEvent) => (event.detectedTs - (T0 + 700 * STEP)) / STEP;

describe("detectors on a workload's steps", () => {
  it("stays quiet on normal behaviour", () => {
    assert.deepEqual(run(busy, null, { total: 2000 }), []);
    assert.deepEqual(run(idle, null, { total: 2000 }), []);
  });

  it("finds a CPU runaway at its third step", () => {
    const [event, ...rest] = run(busy, () => ({ cpu: 3.8 }));
    assert.equal(rest.length, 0);
    assert.equal(event!.type, "cpu_runaway");
    assert.equal(delaySteps(event!), 2);
    assert.equal(event!.startTs, T0 + 700 * STEP);
  });

  it("finds a stuck thread: a core more for hours, below the workload's busiest steps; not an hour of it, nor a busy spell that comes back down, nor in the first three days", () => {
    // Daily two-step bursts to 2.5 cores: the step path needs 3.75 cores; a stuck thread adds one to ~0.35.
    const bursty = (i: number) => ({ ...busy(i), cpu: i % 288 === 100 || i % 288 === 101 ? 2.5 : 0.3 + 0.1 * Math.sin((i / 288) * 2 * Math.PI) + 0.05 * wiggle(i) });
    const at = 1000; // past three days of hourly means
    const thread = (k: number) => ({ cpu: bursty(at + k).cpu + 1 });
    const options = { at, length: 48, total: at + 100, cpuCapacity: 8 };
    const found = run(bursty, thread, options);
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.equal(found[0]!.type, "cpu_runaway");
    assert.match(found[0]!.message, /averaged at least .* for 2 hours/);
    const delay = (found[0]!.detectedTs - (T0 + at * STEP)) / STEP;
    assert.ok(delay <= 36, `found after ${delay} steps`);
    const started = (found[0]!.startTs - T0) / STEP;
    assert.ok(started >= at - 12 && started <= at, `starts at step ${started}`);
    assert.deepEqual(run(bursty, thread, { ...options, length: 12 }), [], "an hour of it is not a runaway");
    const spell = (k: number) => ({ cpu: k % 2 === 0 ? 2.5 : 0.4 });
    assert.deepEqual(run(bursty, spell, options).filter((event) => event.type === "cpu_runaway"), [], "a busy spell back down every other step");
    assert.deepEqual(run(bursty, (k) => ({ cpu: bursty(700 + k).cpu + 1 }), { ...options, at: 700, total: 800 }), [], "under three days of history: still the profile being learned");
    // On an idle workload a core is below what the miner detector calls mining: still a runaway.
    const [onIdle, ...more] = run(idle, (k) => ({ cpu: idle(at + k).cpu + 1 }), { at, length: 48, total: at + 100 });
    assert.equal(more.length, 0);
    assert.equal(onIdle!.type, "cpu_runaway");
  });

  it("finds a miner on an idle workload at its second step", () => {
    const [event] = run(idle, () => ({ cpu: 3.9 }));
    assert.equal(event!.type, "miner");
    assert.equal(event!.severity, "critical");
    assert.equal(delaySteps(event!), 1);
  });

  it("finds a memory leak with its trend and time to the limit", () => {
    const events = run(busy, (k) => ({ mem: 2.2 * GIB + (k + 1) * 0.4 * GIB }), { length: 20 });
    assert.equal(events.length, 1);
    assert.equal(events[0]!.type, "memory_leak");
    assert.ok(delaySteps(events[0]!) <= 3);
    assert.match(events[0]!.message, /Mann–Kendall p=.*reaches its limit in \d+ min/);
  });

  it("finds a miner that holds back to a share of the machine at its sixth step, not one below that share", () => {
    const [held, ...rest] = run(idle, () => ({ cpu: 1.5 }), { length: 12 });
    assert.equal(rest.length, 0);
    assert.equal(held!.type, "miner");
    assert.equal(delaySteps(held!), 5);
    assert.equal(held!.startTs, T0 + 700 * STEP);
    assert.match(held!.message, /CPU at 1\.50 of 4 for 6 steps on a workload idle/);
    assert.deepEqual(run(idle, () => ({ cpu: 1 }), { length: 12 }), [], "a quarter of the machine: not called mining");
  });

  it("finds a slow leak under the noise from its hourly means, and not a daily wave or a level shift", () => {
    // ±25% noise around 2 GiB; from step 700 a leak adds 1% of that a step (a quarter of the noise's
    // span per hour) for 150 steps: the last few steps never outrun the noise, the hours do.
    const noisy = (i: number) => ({ cpu: 0.8, mem: 2 * GIB * (0.75 + 0.5 * wiggle(i * 31)) });
    const leak = run(noisy, (k) => ({ mem: noisy(700 + k).mem + (k + 1) * 0.02 * GIB }), { length: 150, total: 900 });
    assert.equal(leak.length, 1, JSON.stringify(leak));
    assert.equal(leak[0]!.type, "memory_leak");
    assert.match(leak[0]!.message, /rising slowly, .* over 8 hourly means \(Mann–Kendall p=/);
    const delay = delaySteps(leak[0]!);
    assert.ok(delay > 12 && delay < 150, `found after ${delay} steps`);
    assert.equal(leak[0]!.startTs, leak[0]!.detectedTs - 96 * STEP, "it began by the first of the 8 hours judged");
    assert.deepEqual(run(noisy, null, { total: 2000 }), [], "the noise alone");
    // Every day 8 hours of rise to the same peak, then back: within what the hours held before.
    const daily = (i: number) => ({ cpu: 0.8, mem: 2 * GIB * (1 + Math.max(0, Math.min((i % 288) - 100, 288 - (i % 288) - 90, 96)) / 96) * (0.9 + 0.2 * wiggle(i)) });
    assert.deepEqual(run(daily, null, { total: 2000 }), [], "a daily wave");
    // A jump to twice the level that then holds: one rising hour, not a trend.
    assert.deepEqual(run(noisy, (k) => ({ mem: 2 * noisy(700 + k).mem }), { length: 300, total: 1000 }), [], "a level shift");
  });

  it("finds a slow leak that started near the memory limit before it gets there", () => {
    // 12 GiB ± 1 GiB of a 16 GiB limit; from step 700 a leak adds 0.04 GiB a step: it reaches the
    // limit after 100 steps, long before 1.3 × its most-ever (about 17 GiB).
    const high = (i: number) => ({ cpu: 0.8, mem: GIB * (11 + 2 * wiggle(i * 31)) });
    const leak = run(high, (k) => ({ mem: high(700 + k).mem + (k + 1) * 0.04 * GIB }), { length: 100, total: 800 });
    assert.equal(leak.length, 1, JSON.stringify(leak));
    assert.equal(leak[0]!.type, "memory_leak");
    assert.ok(delaySteps(leak[0]!) < 100, `found after ${delaySteps(leak[0]!)} steps`);
    assert.match(leak[0]!.message, /reaches its limit in \d+ min/);
    assert.deepEqual(run(high, null, { total: 2000 }), [], "the noise alone, near the limit");
  });

  it("finds a spike one step late, and only when it is isolated", () => {
    const [spike] = run(busy, () => ({ cpu: 3.9 }), { length: 1 });
    assert.equal(spike!.type, "spike");
    assert.equal(delaySteps(spike!), 1);
    assert.equal(spike!.startTs, T0 + 700 * STEP);
  });

  it("finds a network burst and never-seen GPU use at once", () => {
    const [burst] = run(busy, () => ({ net_tx: 20e6 }), { length: 3 });
    assert.equal(burst!.type, "network_burst");
    assert.equal(delaySteps(burst!), 0);
    const [gpu] = run(busy, () => ({ gpu_util: 1, gpu_mem: 8 * GIB }), { length: 6 });
    assert.equal(gpu!.type, "never_seen");
    assert.equal(gpu!.resource, "gpu_util");
  });

  it("reports an episode once, and learns it once reported", () => {
    const monitor = new WorkloadMonitor({ workload: "w", image: "img", user: "u", host: "h" }, detectConfig.parse({}));
    let events = 0;
    for (let i = 0; i < 2000; i++) {
      // A nightly job at full CPU for 12 steps every 288: an anomaly the first night, known after.
      const night = i > 600 && i % 288 < 12;
      events += monitor.observe({ ts: T0 + i * STEP, values: { ...busy(i), cpu: night ? 3.9 : busy(i).cpu }, cpuCapacity: 4 }).length;
    }
    assert.equal(events, 1);
  });

  it("takes a return within the look-back window for the same episode, a later one for a new one", () => {
    // A burst, a pause of five steps (the episode closes after three), the burst again: one event.
    const bursty = (gap: number) => (i: number) => ({ ...busy(i), net_tx: (i >= 700 && i < 703) || (i >= 703 + gap && i < 706 + gap) ? 30e6 : busy(i).net_tx });
    const events = (gap: number) => run(bursty(gap), null, { total: 900 }).filter((event) => event.type === "network_burst");
    assert.equal(events(5).length, 1);
    // Fifty steps later it is a new episode, and 300 MB/s is far above the 30 MB/s learned from the first.
    const later = (i: number) => ({ ...busy(i), net_tx: i >= 700 && i < 703 ? 30e6 : i >= 753 && i < 756 ? 300e6 : busy(i).net_tx });
    assert.equal(run(later, null, { total: 900 }).filter((event) => event.type === "network_burst").length, 2);
  });

  it("leaves what a whole fleet does at once to the image", () => {
    const event = (workload: string, minute: number, spanMinutes = 0): AnomalyEvent => ({
      workload, image: "serving", user: workload, host: "h", type: "memory_leak", severity: "warning", score: 2, resource: "mem", observed: 2, expected: 1, startTs: (minute - spanMinutes) * 60_000, detectedTs: minute * 60_000, message: "",
    });
    const fleet = new Map([["serving", 100]]);
    const together = ["a", "b", "c", "d"].map((w, i) => event(w, i));
    assert.deepEqual(suppressFleetWide(together, fleet, 12 * 60_000, 0.02), []);
    const apart = ["a", "b", "c", "d"].map((w, i) => event(w, i * 60));
    assert.equal(suppressFleetWide(apart, fleet, 12 * 60_000, 0.02).length, 4);
    // Trends over 8 hours, found an hour apart: the fleet drifted together.
    const drifting = ["a", "b", "c", "d"].map((w, i) => event(w, i * 60, 480));
    assert.deepEqual(suppressFleetWide(drifting, fleet, 12 * 60_000, 0.02), []);
    // One long trend among short findings an hour apart does not widen their window.
    const mixed = ["a", "b", "c", "d"].map((w, i) => event(w, i * 60, i === 0 ? 480 : 0));
    assert.equal(suppressFleetWide(mixed, fleet, 12 * 60_000, 0.02).length, 4);
  });

  it("keeps the fleet rule's definition on random fleets, in time that grows with the findings, not their square", () => {
    // The definition, finding by finding: those detected up to it, back to the window of the two (quadratic).
    const byDefinition = (events: AnomalyEvent[], fleet: Map<string, number>, windowMs: number, share: number) => {
      const dropped = new Set<AnomalyEvent>();
      const span = (event: AnomalyEvent) => event.detectedTs - event.startTs;
      for (const event of events) {
        if (event.type === "never_seen") continue;
        const group = events.filter((other) => other.type !== "never_seen" && other.image === event.image && other.type === event.type && other.resource === event.resource);
        const needed = Math.max(3, Math.ceil(share * (fleet.get(event.image) ?? 1)));
        const together = group.filter((other) => other.detectedTs <= event.detectedTs && event.detectedTs - other.detectedTs <= Math.max(windowMs, Math.min(span(event), span(other))));
        if (new Set(together.map((other) => other.workload)).size >= needed) for (const other of together) dropped.add(other);
      }
      return events.filter((event) => !dropped.has(event));
    };
    const random = seededRandom(11);
    const types = ["memory_leak", "cpu_runaway", "never_seen"] as const;
    for (let round = 0; round < 60; round++) {
      const fleet = new Map([["a", 20 + Math.floor(random() * 300)], ["b", 50]]);
      const events: AnomalyEvent[] = Array.from({ length: 5 + Math.floor(random() * 80) }, () => {
        const detected = Math.floor(random() * 48 * 60) * 60_000; // two days, whole minutes: ties happen
        const span = random() < 0.3 ? Math.floor(random() * 600) * 60_000 : 0;
        return {
          workload: `w${Math.floor(random() * 25)}`, image: random() < 0.8 ? "a" : "b", user: "u", host: "h", type: types[Math.floor(random() * 3)]!, severity: "warning", score: 1, resource: random() < 0.7 ? "mem" : "cpu",
          observed: 1, expected: 1, startTs: detected - span, detectedTs: detected, message: "",
        };
      });
      const windowMs = (5 + Math.floor(random() * 120)) * 60_000;
      const share = random() * 0.05;
      assert.deepEqual(suppressFleetWide(events, fleet, windowMs, share), byDefinition(events, fleet, windowMs, share), `round ${round}`);
    }
    // 200,000 findings of one image at once (the definition would compare 4e10 pairs).
    const many: AnomalyEvent[] = Array.from({ length: 200_000 }, (_, i) => ({
      workload: `w${i}`, image: "a", user: "u", host: "h", type: "cpu_runaway", severity: "warning", score: 1, resource: "cpu", observed: 1, expected: 1, startTs: i * 1000, detectedTs: i * 1000, message: "",
    }));
    assert.deepEqual(suppressFleetWide(many, new Map([["a", 200_000]]), 3_600_000, 0.015), []);
  });
});

describe("block means", () => {
  it("keeps the means of the last blocks, their end times, and the highest mean of those that left", () => {
    const blocks = new BlockMeans(3, 2);
    const values = [1, 2, 3, 10, Number.NaN, 20, Number.NaN, Number.NaN, Number.NaN, 4, 5, 6, 7];
    values.forEach((v, i) => blocks.push(T0 + i, v));
    // Blocks [1 2 3] → 2, [10 NaN 20] → 15, [NaN NaN NaN] → NaN, [4 5 6] → 5; 7 is in the open block.
    assert.deepEqual(blocks.means, [Number.NaN, 5]);
    assert.deepEqual(blocks.ends, [T0 + 8, T0 + 11]);
    assert.equal(blocks.before, 15);
    assert.throws(() => new BlockMeans(0, 2), /whole numbers/);
    assert.throws(() => new BlockMeans(3, 1.5), /whole numbers/);
  });
});

describe("labels and scores", () => {
  it("reads LABELS.csv and refuses hostile rows with their line", () => {
    assert.deepEqual(parseLabels("workload,type,start_ts,end_ts\nvm-1,miner,10,20\n", "l.csv"), [{ workload: "vm-1", type: "miner", startTs: 10, endTs: 20 }]);
    for (const [text, pattern] of [
      ["a,b\n1,2\n", /header must name/],
      ["workload,type,start_ts,end_ts\nvm-1,rootkit,1,2\n", /l\.csv:2: unknown anomaly type/],
      ["workload,type,start_ts,end_ts\nvm-1,miner,x,2\n", /l\.csv:2: start_ts and end_ts/],
      ["workload,type,start_ts,end_ts\nvm-1,miner,5,2\n", /start <= end/],
      ["workload,type,start_ts,end_ts\n\"vm\u0000\",miner,1,2\n", /l\.csv:2: workload contains a control character/],
      ["workload,type,start_ts,end_ts\n\"unclosed,miner,1,2\n", /not CSV/],
    ] as const) {
      assert.throws(() => parseLabels(text, "l.csv"), (error: unknown) => error instanceof ValidationError && pattern.test((error as Error).message), pattern.source);
    }
  });

  it("scores precision, recall and delay by type", () => {
    const trace: Trace = { name: "t", rows: 4, rejected: [], workloads: [{ workload: "w", image: "i", user: "u", ts: Float64Array.from([0, STEP, 2 * STEP, 3 * STEP]), values: {}, limits: {} }] };
    const hit = { workload: "w", image: "i", user: "u", host: "h", severity: "warning", score: 1, resource: "cpu", observed: 1, expected: 1, message: "" } as const;
    const score = scoreDetections(
      trace,
      [
        { ...hit, type: "miner", startTs: STEP, detectedTs: 2 * STEP },
        { ...hit, type: "spike", startTs: 0, detectedTs: 0 },
      ],
      [
        { workload: "w", type: "miner", startTs: STEP, endTs: 3 * STEP },
        { workload: "w", type: "memory_leak", startTs: STEP, endTs: 3 * STEP },
      ],
    );
    assert.equal(score.precision, 0.5);
    assert.equal(score.recall, 0.5);
    assert.equal(score.byType.miner!.medianDelaySteps, 1);
    assert.equal(score.byType.spike!.falsePositives, 1);
  });
});

describe("injected anomalies in a real Bitbrains slice", { timeout: 120_000 }, () => {
  const load = () => loadTrace(fixtures + "detect-bitbrains-aug.csv.gz", "canonical");

  it("injects the same anomalies for the same seed", async () => {
    const options = { rate: 1, minHistorySteps: 864, types: ANOMALY_TYPES };
    const a = injectAnomalies(await load(), { ...options, seed: 3 });
    const b = injectAnomalies(await load(), { ...options, seed: 3 });
    const c = injectAnomalies(await load(), { ...options, seed: 4 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    assert.ok(new Set(a.map((label) => label.type)).size >= 5, JSON.stringify(a.map((l) => l.type)));
  });

  it("finds them: recall >= 0.95, precision >= 0.9, fast leaks and whole-machine runaways within 3 steps, stuck threads within 3 hours, slow leaks before their ramp ends, miners within 5", async () => {
    for (const seed of [1, 2]) {
      const trace = await load();
      const labels = injectAnomalies(trace, { seed, rate: 1, minHistorySteps: 864, types: ANOMALY_TYPES });
      const events = detectTrace(trace, detectConfig.parse({}));
      const score = scoreDetections(trace, events, labels);
      assert.ok(score.recall >= 0.95, `seed ${seed}: recall ${score.recall}`);
      assert.ok(score.precision >= 0.9, `seed ${seed}: precision ${score.precision}`);
      // A runaway at the whole machine (12 steps) is found within 3 steps; a stuck thread (3–6 hours) within its first 3 hours.
      const runaways = labels.filter((label) => label.type === "cpu_runaway");
      assert.ok(runaways.some((label) => label.endTs - label.startTs < 24 * STEP) && runaways.some((label) => label.endTs - label.startTs >= 24 * STEP), "both kinds injected");
      let found = 0;
      for (const runaway of runaways) {
        const event = events.find((e) => e.type === "cpu_runaway" && e.workload === runaway.workload && e.detectedTs >= runaway.startTs && e.detectedTs <= runaway.endTs);
        if (!event) continue;
        found++;
        const within = runaway.endTs - runaway.startTs < 24 * STEP ? 3 : 36;
        assert.ok(event.detectedTs - runaway.startTs <= within * STEP, `seed ${seed}: runaway on ${runaway.workload} found after ${(event.detectedTs - runaway.startTs) / STEP} steps`);
      }
      assert.ok(found >= 0.8 * runaways.length, `seed ${seed}: ${found} of ${runaways.length} runaways`);
      // A miner at the whole machine is found at its second step, one held back at its sixth (steps of about 5 minutes).
      for (const miner of labels.filter((label) => label.type === "miner")) {
        const found = events.find((event) => event.type === "miner" && event.workload === miner.workload && event.detectedTs >= miner.startTs);
        assert.ok(found && found.detectedTs - miner.startTs <= 5.5 * STEP, `seed ${seed}: miner on ${miner.workload} found ${found ? (found.detectedTs - miner.startTs) / STEP : "never"}`);
      }
      const leaks = labels.filter((label) => label.type === "memory_leak");
      assert.ok(leaks.length > 0);
      for (const leak of leaks) {
        const found = events.find((event) => event.type === "memory_leak" && event.workload === leak.workload && event.detectedTs >= leak.startTs);
        assert.ok(found && found.detectedTs <= leak.endTs, `seed ${seed}: leak on ${leak.workload} over ${(leak.endTs - leak.startTs) / STEP + 1} steps found at ${found ? (found.detectedTs - leak.startTs) / STEP : "no step"}`);
        if (leak.endTs - leak.startTs < 24 * STEP) assert.ok(found.detectedTs - leak.startTs <= 3.5 * STEP, `seed ${seed}: a fast leak found after ${(found.detectedTs - leak.startTs) / STEP} steps`);
      }
    }
  });

  it("raises at most one false alarm per 100 workload-days on the untouched slice", async () => {
    const trace = await load();
    const score = scoreDetections(trace, detectTrace(trace, detectConfig.parse({})), []);
    assert.ok(score.falseAlarmsPer100WorkloadDays <= 1, `${score.falseAlarms} alarms in ${score.workloadDays} workload-days`);
  });
});

describe("remediation policy", () => {
  const event = (overrides: Partial<AnomalyEvent> = {}): AnomalyEvent => ({
    workload: "pid:4242@1", image: "build", user: "ci", host: "node-a", type: "miner", severity: "critical", score: 9, resource: "cpu", observed: 3.9, expected: 0.2, startTs: 0, detectedTs: 990_000, message: "m", ...overrides,
  });
  const noTargets: RemediationTargets = { cgroups: null, processes: null, tc: null, launcher: null, store: null };
  const remediator = (config: Record<string, unknown>, results: ActuationResult[], targets = noTargets) =>
    new Remediator(remediationConfig.parse(config), targets, "node-a", async (r) => void results.push(r), () => 1_000_000);

  it("picks the rule by type and severity, alert by default", () => {
    const r = remediator({ rules: [{ type: "miner", minSeverity: "critical", action: "kill" }, { type: "any", action: "freeze", minSeverity: "warning" }] }, []);
    assert.equal(r.decide(event()).action, "kill");
    assert.equal(r.decide(event({ severity: "warning" })).action, "freeze");
    assert.equal(r.decide(event({ type: "spike", severity: "info" })).action, "alert");
  });

  it("never acts on exempt images or users, or outside the only-list", () => {
    const rules = [{ type: "any", action: "kill" }];
    assert.equal(remediator({ rules, exempt: { images: ["^build$"] } }, []).decide(event()).action, "alert");
    assert.equal(remediator({ rules, exempt: { users: ["^c"] } }, []).decide(event()).action, "alert");
    assert.equal(remediator({ rules, only: { images: ["^batch-"] } }, []).decide(event()).action, "alert");
    assert.equal(remediator({ rules, only: { images: ["^build"] } }, []).decide(event()).action, "kill");
    assert.equal(remediator({ rules, dryRun: true }, []).decide(event()).dryRun, true);
  });

  it("records every action with its reason, refuses what it cannot do, and rate-limits", async () => {
    const results: ActuationResult[] = [];
    const r = remediator({ rules: [{ type: "any", action: "freeze" }], maxActionsPerWorkloadPerHour: 2 }, results);
    for (let i = 0; i < 3; i++) await r.handle(event());
    assert.equal(results.length, 3);
    assert.ok(results.every((result) => !result.ok));
    assert.match(results[0]!.reason, /miner \(critical\) on pid:4242@1: m; rule miner\/info\+ → freeze; no cgroup connector/);
    assert.match(results[2]!.reason, /rate limit: 2 actions on this workload/);
    await remediator({}, results).handle(event());
    assert.equal(results[3]!.action, "alert");
    assert.equal(results[3]!.ok, true);
  });

  it("acts only on this node's workloads, and only on anomalies detected within maxAgeSeconds", async () => {
    const results: ActuationResult[] = [];
    const r = remediator({ rules: [{ type: "any", action: "freeze" }], maxAgeSeconds: 60 }, results);
    // Another node's pid names another process here: that node's remediator acts on it.
    await r.handle(event({ host: "node-b" }));
    assert.equal(results.length, 0);
    // Detected 100 s ago (a backlog read after a restart): reported, not acted on.
    await r.handle(event({ detectedTs: 900_000 }));
    assert.equal(results.length, 1);
    assert.equal(results[0]!.action, "alert");
    assert.match(results[0]!.reason, /detected 100 s ago, more than remediation.maxAgeSeconds \(60\): too old to act on/);
    for (const maxAgeSeconds of [0, -5, 1e9, "600", Infinity, null]) assert.equal(remediationConfig.safeParse({ maxAgeSeconds }).success, false, String(maxAgeSeconds));
  });

  it("never signals a process whose pid now names a later one, and escalates only while the workload is there", async () => {
    // /proc as the connector reads it: pid 4242 started at tick 7, not at tick 1 as the anomaly's process did.
    const { dir, cleanup } = tempDir("augur-remediate-proc-");
    try {
      mkdirSync(join(dir, "4242"));
      writeFileSync(join(dir, "4242", "stat"), "4242 (sleep) S 1 1 1 0 -1 0 0 0 0 0 5 5 0 0 20 0 1 0 7 1000 10");
      const processes = new ProcessConnector(processConnectorConfig.parse({ kind: "process" }), { config: { root: "augur" } } as CgroupConnector, dir);
      assert.equal(processes.isSame(4242, 7), true);
      assert.equal(processes.isSame(4242, 1), false);
      assert.equal(processes.isSame(4243, 7), false);
      const results: ActuationResult[] = [];
      const targets = { ...noTargets, processes };
      await remediator({ rules: [{ type: "any", action: "kill" }] }, results, targets).handle(event());
      assert.equal(results.length, 1);
      assert.equal(results[0]!.ok, true);
      assert.match(results[0]!.reason, /the process had already ended/);
      assert.deepEqual(JSON.parse(results[0]!.details).killed, []);
      // Freeze (refused for a plain process), then kill after 0 s: the process has gone by then.
      const escalating = remediator({ rules: [{ type: "any", action: "freeze", then: { action: "kill", afterSeconds: 0 } }] }, results, targets);
      await escalating.handle(event());
      await sleep(50);
      assert.deepEqual(results.slice(1).map((result) => [result.action, result.ok]), [["freeze", false], ["alert", true]]);
      assert.match(results[2]!.reason, /then kill after 0 s: not done, the workload has ended/);
      escalating.stop();
      // Where whether it is there cannot be told (a path outside augur's root), the escalation is tried and says why.
      const outside = { exists: () => assert.fail("outside the root: looked up"), setFrozen: () => assert.fail("frozen") } as unknown as CgroupConnector;
      const unsure = remediator({ rules: [{ type: "any", action: "freeze", then: { action: "kill", afterSeconds: 0 } }] }, results, { ...noTargets, cgroups: outside });
      await unsure.handle(event({ workload: "cgroup:/elsewhere" }));
      await sleep(50);
      assert.deepEqual(results.slice(3).map((result) => [result.action, result.ok]), [["freeze", false], ["kill", false]]);
      assert.match(results[4]!.reason, /then kill after 0 s; no process connector/);
      unsure.stop();
    } finally {
      cleanup();
    }
  });

  it("refuses policies it cannot read", () => {
    assert.equal(remediationConfig.safeParse({ rules: [{ type: "miner", action: "reboot" }] }).success, false);
    assert.equal(remediationConfig.safeParse({ rules: [{ type: "rootkit", action: "kill" }] }).success, false);
    assert.equal(remediationConfig.safeParse({ exempt: { images: ["("] } }).success, false);
  });
});
