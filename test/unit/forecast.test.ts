import assert from "node:assert/strict";
import { join } from "node:path";
import Database from "better-sqlite3";
import { before, describe, it } from "node:test";
import { WindowAggregator } from "../../src/aggregate/windows.js";
import { Metrics } from "../../src/core/metrics.js";
import type { Profile, WindowAggregate } from "../../src/core/types.js";
import { userFactor } from "../../src/core/user-factor.js";
import { ColdStartChooser } from "../../src/forecast/cold-start.js";
import { DecayingHistogram } from "../../src/forecast/decaying-histogram.js";
import { AGE_CLASSES, candidateName, defaultEnsembleOptions, EnsembleForecaster, histogramOptionsFor, MARGINS, OverrunPrice, PeakWindows, PooledMisses, type EnsembleLinks, type EnsembleOptions, type EnsembleState } from "../../src/forecast/ensemble.js";
import { ExampleReservoir, GLOBAL_FEATURES, GlobalQuantileModel, initTensorflow } from "../../src/forecast/global-model.js";
import { createModelFactory, DEFAULT_FALLBACK_MODEL } from "../../src/forecast/registry.js";
import { ForecastStage } from "../../src/forecast/stage.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { EmbeddedTransport } from "../../src/transport/embedded/embedded-transport.js";
import { TOPICS, type DeadLetter, type TopicRecord } from "../../src/transport/topic.js";
import { seededRandom, T0, sample, tempDir } from "../helpers.js";

const DAY = 86_400_000;
const vpaCpu = { firstBucketSize: 0.01, maxValue: 1000, ratio: 1.05, epsilon: 1e-4, halfLifeMs: DAY };
const augurCpu = { ...histogramOptionsFor("cpu"), halfLifeMs: DAY };

describe("decaying histogram (VPA)", () => {
  it("round-trips its state exactly: a restored histogram goes on with the same percentiles; a corrupt total is refused", () => {
    const original = new DecayingHistogram(vpaCpu);
    let seed = 3;
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const value = (i: number) => 0.05 + random() * (i % 50 === 0 ? 8 : 1.5);
    for (let i = 0; i < 3000; i++) original.add(value(i), 0.1 + random(), T0 + i * 60_000);
    const restored = DecayingHistogram.fromState(vpaCpu, JSON.parse(JSON.stringify(original.toState())));
    for (let i = 3000; i < 4000; i++) {
      const v = value(i);
      const w = 0.1 + random();
      original.add(v, w, T0 + i * 60_000);
      restored.add(v, w, T0 + i * 60_000);
      for (const p of [0.5, 0.9, 0.95, 0.99]) assert.equal(restored.percentile(p), original.percentile(p), `p${p} after step ${i}`);
    }
    for (const totalWeight of [-1, Number.NaN, 1e30]) {
      assert.throws(() => DecayingHistogram.fromState(vpaCpu, { ...original.toState(), totalWeight }), /total weight/);
    }
  });

  it("keeps only the buckets its values use, growing down and up, with the percentiles of a dense count", () => {
    // Values arrive from the middle outwards in both directions over six decades, at the reference time (no
    // decay); the same walk over a dense array of every bucket must give the same percentiles.
    const random = seededRandom(11);
    const histogram = new DecayingHistogram(augurCpu);
    const dense = new Float64Array(histogram.numBuckets);
    let total = 0;
    for (let i = 0; i < 2000; i++) {
      const spread = 1 + (6 * i) / 2000; // the range widens as values arrive
      const value = 10 ** (random() * spread - spread / 2);
      const weight = 0.1 + random();
      histogram.add(value, weight, 0);
      const bucket = histogram.findBucket(value);
      dense[bucket] = dense[bucket]! + weight;
      total += weight;
      if (i % 97 !== 0) continue;
      const lowest = dense.findIndex((w) => w > 0);
      const highest = dense.findLastIndex((w) => w > 0);
      for (const p of [0.01, 0.3, 0.5, 0.9, 0.99, 1]) {
        let sum = 0;
        let bucket = lowest;
        for (; bucket < highest; bucket++) if ((sum += dense[bucket]!) >= p * total) break;
        // The last bucket (values above maxValue) has no upper edge: its start.
        const edge = histogram.bucketStart(bucket < dense.length - 1 ? bucket + 1 : bucket);
        assert.equal(histogram.percentile(p), edge, `p${p} after ${i + 1} values`);
      }
    }
    assert.ok(histogram.toState().buckets.length > 300, "the values spread over hundreds of buckets");
    const restored = DecayingHistogram.fromState(augurCpu, JSON.parse(JSON.stringify(histogram.toState())));
    for (const p of [0.01, 0.5, 0.99]) assert.equal(restored.percentile(p), histogram.percentile(p));
  });

  it("has VPA's 176 buckets for CPU and memory", () => {
    assert.equal(new DecayingHistogram(vpaCpu).numBuckets, 176);
    assert.equal(new DecayingHistogram({ ...vpaCpu, firstBucketSize: 1e7, maxValue: 1e12 }).numBuckets, 176);
  });

  it("returns the upper edge of the percentile's bucket, as ANCHORS §1.3's worked examples", () => {
    for (const [value, end] of [
      [0.5, 0.5111],
      [0.1, 0.1103],
      [2.0, 2.093],
    ] as const) {
      const histogram = new DecayingHistogram(vpaCpu);
      histogram.add(value, 1, T0);
      assert.ok(Math.abs(histogram.percentile(0.9) - end) < 5e-4, `${value} → ${histogram.percentile(0.9)}`);
    }
  });

  it("weighs a sample one half-life newer twice as much", () => {
    const histogram = new DecayingHistogram(vpaCpu);
    histogram.add(1, 1, T0);
    histogram.add(2, 1, T0 + DAY);
    // weights 1 and 2: p50 threshold 1.5 is reached only in the bucket of 2
    assert.ok(histogram.percentile(0.5) > 2);
    assert.ok(histogram.percentile(0.3) < 1.1);
  });

  it("keeps percentiles when the reference time shifts far ahead", () => {
    const histogram = new DecayingHistogram(vpaCpu);
    histogram.add(1, 1, T0);
    histogram.add(1, 1, T0 + 150 * DAY); // exponent > 100: reference shifts
    assert.ok(Math.abs(histogram.percentile(0.5) - 1.04) < 0.05);
    const copy = DecayingHistogram.fromState(vpaCpu, histogram.toState());
    assert.equal(copy.percentile(0.5), histogram.percentile(0.5));
  });
});

function windowsFor(image: string, user: string, cpu: number, memory: number, count: number, startMs = T0): WindowAggregate[] {
  const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 0, sketchAccuracy: 0.01 });
  const out: WindowAggregate[] = [];
  for (let i = 0; i < count * 6; i++) {
    out.push(...aggregator.add(sample({ ts: startMs + i * 10_000, image, user, cpuCores: cpu, memoryWorkingSetBytes: memory })).closed);
  }
  out.push(...aggregator.flush());
  return out;
}

const asRecords = (windows: WindowAggregate[]): Array<TopicRecord<WindowAggregate>> =>
  windows.map((value, offset) => ({ topic: TOPICS.windows, partition: 0, offset, key: `${value.image}|${value.user}`, value, timestamp: value.windowEnd, headers: {} }));

describe("forecast stage", () => {
  it("builds profiles at all four levels, and a restarted stage continues from the stored model", async () => {
    const { dir, cleanup } = tempDir();
    const factory = createModelFactory("decaying-percentile", {});
    try {
      const windows = windowsFor("app", "alice", 0.5, 200e6, 10);
      let store = new ProfileStore(dir);
      let transport = new EmbeddedTransport();
      const stage = new ForecastStage(transport, store, factory, new Metrics());
      await stage.handle(asRecords(windows.slice(0, 5)));
      const levels = store.listProfiles().map((p) => `${p.image}|${p.user}|${p.level}`).sort();
      assert.deepEqual(levels, ["*|*|global", "*|alice|user", "app|*|image", "app|alice|exact"]);
      const exact = store.getProfile("app", "alice")!;
      assert.equal(exact.windows, 5);
      assert.ok(Math.abs(exact.resources.cpu!.p50 - 0.5) / 0.5 < 0.05, `cpu p50 ${exact.resources.cpu!.p50}`);
      assert.ok(Math.abs(exact.resources.mem!.p50 - 200e6) / 200e6 < 0.06, `mem p50 ${exact.resources.mem!.p50}`);
      assert.ok(exact.resources.cpu!.request > exact.resources.cpu!.p90, "request carries the margin");
      store.close();
      await transport.close();

      // A new process: new stage, same data directory.
      store = new ProfileStore(dir);
      transport = new EmbeddedTransport();
      const restarted = new ForecastStage(transport, store, factory, new Metrics());
      await restarted.handle(asRecords(windows.slice(3))); // 3 and 4 again: redelivered
      const after = store.getProfile("app", "alice")!;
      assert.equal(after.windows, 10, "redelivered windows are not counted twice");
      assert.equal(after.version, windows[9]!.windowEnd);
      store.close();
      await transport.close();
    } finally {
      cleanup();
    }
  });

  it("raises the memory prediction after an OOM kill (VPA bump-up)", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const store = new ProfileStore(dir);
      const stage = new ForecastStage(new EmbeddedTransport(), store, createModelFactory("decaying-percentile", {}), new Metrics());
      const windows = windowsFor("app", "bob", 0.2, 100e6, 4);
      await stage.handle(asRecords(windows.slice(0, 3)));
      const before = store.getProfile("app", "bob")!.resources.mem!.max;
      await stage.handle(asRecords([{ ...windows[3]!, oomKills: 1 }]));
      const after = store.getProfile("app", "bob")!;
      assert.equal(after.oomKills, 1);
      assert.ok(after.resources.mem!.max >= before + 100 * 1024 * 1024, `max ${after.resources.mem!.max}`);
      store.close();
    } finally {
      cleanup();
    }
  });

  it("scores each window of an exact pair against the limit predicted before it (the model's cost, live)", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const store = new ProfileStore(dir);
      const metrics = new Metrics();
      const stage = new ForecastStage(new EmbeddedTransport(), store, createModelFactory("decaying-percentile", {}), metrics);
      const steady = windowsFor("app", "carol", 0.5, 100e6, 6);
      await stage.handle(asRecords(steady.slice(0, 5)));
      const limit = store.getProfile("app", "carol")!.resources.cpu!.limit;
      const burst = windowsFor("app", "carol", limit * 3, 100e6, 1, steady[5]!.windowStart)[0]!;
      await stage.handle(asRecords([burst]));
      const counts = Object.fromEntries((await metrics.forecastEvaluations.get()).values.map((v) => [`${v.labels.resource}/${v.labels.outcome}`, v.value]));
      // The first window had no prediction before it; four were within, the burst overran on CPU but not on memory.
      assert.deepEqual(counts, { "cpu/within": 4, "cpu/overrun": 1, "mem/within": 5 });
      const slack = (await metrics.forecastSlackRatio.get()).values.find((v) => v.metricName === "augur_forecast_slack_ratio_count" && v.labels.resource === "cpu");
      assert.equal(slack?.value, 5);
      assert.equal((await metrics.forecastModelSeconds.get()).values.find((v) => v.metricName === "augur_forecast_model_seconds_count")?.value, 2);
      store.close();
    } finally {
      cleanup();
    }
  });

  it("sends malformed windows to the dead letter with the reason and keeps going", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const store = new ProfileStore(dir);
      const transport = new EmbeddedTransport();
      const dead: DeadLetter[] = [];
      await transport.consume<DeadLetter>(TOPICS.deadLetter, { group: "test" }, async (batch) => {
        dead.push(...batch.map((r) => r.value));
      });
      const stage = new ForecastStage(transport, store, createModelFactory("decaying-percentile", {}), new Metrics());
      const good = windowsFor("app", "carol", 0.1, 50e6, 1)[0]!;
      const bad = [
        { ...good, image: "x\u0000y" },
        { ...good, resources: { cpu: { ...good.resources.cpu!, max: Number.NaN } } },
        { ...good, windowEnd: good.windowStart - 1 },
        "garbage",
      ];
      await stage.handle(asRecords([...bad, good] as WindowAggregate[]));
      await transport.drain();
      assert.equal(dead.length, 4);
      assert.ok(dead.every((d) => d.stage === "forecast" && d.error.length > 0));
      assert.ok(store.getProfile("app", "carol"));
      store.close();
      await transport.close();
    } finally {
      cleanup();
    }
  });
});

describe("multi-percentile walk", () => {
  it("gives exactly what percentile() gives, for any data", async () => {
    const fc = (await import("fast-check")).default;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.double({ min: 0, max: 50, noNaN: true }), fc.integer({ min: 0, max: 10 * DAY })), { minLength: 1, maxLength: 60 }), (points) => {
        const histogram = new DecayingHistogram(vpaCpu);
        for (const [value, offset] of points) histogram.add(value, 1, T0 + offset);
        const ps = [0.1, 0.5, 0.9, 0.95, 0.99, 1];
        const out = new Float64Array(ps.length);
        histogram.percentiles(ps, out);
        ps.forEach((p, i) => assert.equal(out[i], histogram.percentile(p)));
      }),
    );
  });
});

/**
 * A forecaster's limits over `steps` steps of `usage`, saved (with its
 * shared pool and price, through JSON) and restored into a new one before
 * step `restartAt`: a restarted stage.
 */
function runRestarted(options: EnsembleOptions, resource: "cpu" | "mem", links: EnsembleLinks, steps: number, stepMs: number, usage: (i: number) => number, restartAt: number | null): number[] {
  const fresh = () => ({ pool: new PooledMisses(options.missDecay), price: new OverrunPrice(options.targetMissRate, options.priceStep) });
  let shared = fresh();
  let forecaster = new EnsembleForecaster(options, shared.pool, shared.price, histogramOptionsFor(resource), links);
  const limits: number[] = [];
  for (let i = 0; i < steps; i++) {
    const ts = T0 + i * stepMs;
    if (i === restartAt) {
      const saved = JSON.parse(JSON.stringify({ state: forecaster.toState(), price: shared.price.value, priceUsage: shared.price.usageState(), pool: shared.pool.toState() }));
      shared = fresh();
      shared.price.value = saved.price;
      shared.price.restoreUsage(saved.priceUsage);
      shared.pool.restore(saved.pool);
      forecaster = new EnsembleForecaster(options, shared.pool, shared.price, histogramOptionsFor(resource), links);
      forecaster.restore(saved.state);
    }
    const limit = forecaster.limit(ts);
    if (limit !== null) limits.push(limit);
    forecaster.observe(ts, usage(i));
  }
  return limits;
}

describe("ensemble forecaster state", () => {
  // A restarted stage restores each key from its saved state and must go on
  // exactly as if it had never stopped, whatever step it stopped at.
  for (const decisionMs of [0, 15 * 60_000]) {
    it(`restored at any step, gives the same limits as without a restart (decisions every ${decisionMs / 60_000} min)`, () => {
      const options = defaultEnsembleOptions("mem", { decisionMs });
      const usage = (i: number) => 1e9 * (1 + 0.3 * Math.sin(i / 9)) + (i % 17 === 0 ? 6e8 : 0) + (i > 150 ? 1.5e9 : 0);
      const run = (restartAt: number | null) => runRestarted(options, "mem", {}, 240, 5 * 60_000, usage, restartAt);
      const uninterrupted = run(null);
      for (let restartAt = 1; restartAt < 240; restartAt += 7) assert.deepEqual(run(restartAt), uninterrupted, `restored at step ${restartAt}`);
    });
  }
});

describe("ensemble forecaster state with the global model", () => {
  before(async () => void (await initTensorflow()));

  it("restored at any step, predicts and samples the global model's examples as without a restart", () => {
    const options = defaultEnsembleOptions("cpu");
    const usage = (i: number) => 2 * (1 + 0.4 * Math.sin(i / 13)) + (i % 23 === 0 ? 1.5 : 0) + (i > 300 ? 1 : 0);
    // A model to predict with: trained on another key's examples.
    const teacher = { model: null, reservoir: new ExampleReservoir(5_000), sampleEvery: 1 };
    const pool = new PooledMisses(options.missDecay);
    const price = new OverrunPrice(options.targetMissRate, options.priceStep);
    const other = new EnsembleForecaster(options, pool, price, histogramOptionsFor("cpu"), { learner: teacher });
    for (let i = 0; i < 600; i++) {
      other.limit(T0 + i * 300_000);
      other.observe(T0 + i * 300_000, usage(i + 50) * 0.7);
    }
    const model = GlobalQuantileModel.train(teacher.reservoir, { steps: 20, batch: 64, learningRate: 0.01, seed: 3 });
    const run = (restartAt: number | null) => {
      const learner = { model, reservoir: new ExampleReservoir(1_000), sampleEvery: 4 };
      const limits = runRestarted(options, "cpu", { learner }, 400, 300_000, usage, restartAt);
      const { seen, size } = learner.reservoir;
      return { limits, seen, examples: [...learner.reservoir.features.subarray(0, size * GLOBAL_FEATURES)], targets: [...learner.reservoir.targets.subarray(0, size)] };
    };
    const uninterrupted = run(null);
    assert.ok(uninterrupted.seen > 50, `examples sampled: ${uninterrupted.seen}`);
    for (const restartAt of [2, 3, 57, 58, 59, 60, 201, 333]) assert.deepEqual(run(restartAt), uninterrupted, `restored at step ${restartAt}`);
  });

  it("refuses malformed global-model features, and restores a state saved without them", () => {
    const options = defaultEnsembleOptions("cpu");
    const forecaster = new EnsembleForecaster(options, new PooledMisses(options.missDecay), new OverrunPrice(options.targetMissRate, options.priceStep), histogramOptionsFor("cpu"));
    for (let i = 0; i < 20; i++) {
      forecaster.limit(T0 + i * 60_000);
      forecaster.observe(T0 + i * 60_000, 1 + (i % 3));
    }
    const state = forecaster.toState();
    for (const global of [{ blocks: -1, features: null, scale: 1 }, { blocks: 1, features: [1, 2], scale: 1 }, { blocks: 1, features: null, scale: 0 }, { blocks: 1.5, features: null, scale: 1 }, "x"]) {
      assert.throws(() => forecaster.restore({ ...state, global } as never), /global-model features are malformed/, JSON.stringify(global));
    }
    const { global: _dropped, ...older } = state;
    forecaster.restore(older);
    assert.equal(forecaster.limit(T0 + 20 * 60_000), forecaster.limit(T0 + 20 * 60_000));
  });
});

describe("peak windows", () => {
  it("end at the newest value: a window as long as the step holds the last step, at the next decision and after a gap", () => {
    const MIN = 60_000;
    const peaks = new PeakWindows([MIN, 15 * MIN, 60 * MIN]);
    const values = [5, 9, 2, 4, 3];
    values.forEach((value, i) => peaks.push(T0 + i * 5 * MIN, value)); // five-minute steps
    const next = T0 + 5 * 5 * MIN; // the decision for the step after the last
    assert.equal(peaks.max(0, next), 3, "one minute of data: the last step");
    assert.equal(peaks.max(1, next), 4, "fifteen minutes: the last three steps (2, 4, 3)");
    assert.equal(peaks.max(2, next), 9, "an hour: all five");
    assert.equal(peaks.max(0, next + 13 * 60 * MIN), 3, "after thirteen idle hours, still the last data");
    peaks.push(next + 13 * 60 * MIN, 1);
    assert.equal(peaks.max(0, next + 13 * 60 * MIN + 5 * MIN), 1);
    assert.equal(peaks.max(2, next + 13 * 60 * MIN + 5 * MIN), 1, "the hour before the newest value holds only it");
    // Brute force over random pushes: the max of the values in (newest − w, newest].
    const random = seededRandom(5);
    const windows = [MIN, 15 * MIN, 60 * MIN, 240 * MIN];
    const brute = new PeakWindows(windows);
    const log: Array<[number, number]> = [];
    let ts = T0;
    for (let i = 0; i < 2000; i++) {
      ts += Math.floor(random() * 10) * MIN;
      const value = random();
      brute.push(ts, value);
      log.push([ts, value]);
      windows.forEach((w, k) => {
        const expected = Math.max(...log.filter(([t]) => t > ts - w).map(([, v]) => v));
        assert.equal(brute.max(k, ts + 5 * MIN), expected, `push ${i}, window ${w / MIN} min`);
      });
    }
  });
});

describe("overrun price", () => {
  it("starts at a hundred units of the first usage, follows the target, and never falls below 5% of the mean usage ÷ the target", () => {
    const price = new OverrunPrice(0.01, 0.05);
    price.update(false);
    assert.ok(Number.isNaN(price.value), "no price before a usage");
    price.see(2);
    assert.equal(price.value, 200);
    price.update(true); // an overrun: up by e^(0.05 × 0.99)
    assert.ok(Math.abs(price.value - 200 * Math.exp(0.05 * 0.99)) < 1e-9, `${price.value}`);
    // 10,000 steps without an overrun would take it to 200 · e^(0.05 · (0.99 − 100)) ≈ 1.4; the floor holds it at 0.05 × the mean usage (2) ÷ 0.01 = 10.
    for (let i = 0; i < 10_000; i++) {
      price.see(2);
      price.update(false);
    }
    assert.ok(Math.abs(price.value - 10) < 1e-9, `${price.value}`);
    // The mean is decayed per observation (0.99999): after one usage of 4, (2·Σ + 4) / (Σ + 1) with Σ the decayed weight of the 10,001 twos.
    price.see(4);
    price.update(false);
    const twos = (1 - 0.99999 ** 10_001) / (1 - 0.99999) * 0.99999;
    assert.ok(Math.abs(price.value - (5 * (2 * twos + 4)) / (twos + 1)) < 1e-9, `${price.value}`);
    // Usages that are not numbers ≥ 0 do not enter the mean.
    price.see(Number.NaN);
    price.see(-5);
    assert.ok(Math.abs(price.usageState().weight - (twos + 1)) < 1e-6);
    assert.ok(Math.abs(price.usageState().sum - (2 * twos + 4)) < 1e-6);
  });

  it("leaves overruns past every candidate's reach out of the price but takes their rate off the rate it steers to, down to half the target", () => {
    const price = new OverrunPrice(0.01, 0.05);
    for (let i = 0; i < 1000; i++) price.see(1);
    price.value = 50; // above the floor (5)
    assert.equal(price.steeredRate(), 0.01);
    price.update(true, false);
    assert.equal(price.value, 50, "an unavoidable overrun does not move the price");
    // One unavoidable overrun in a decayed weight of ~995 observations: the steered rate is the target less ~0.001.
    const weight = price.usageState().weight;
    assert.ok(Math.abs(price.steeredRate() - (0.01 - 1 / weight)) < 1e-12, `${price.steeredRate()}`);
    // A step without an overrun lowers the price by the steered rate, not the target.
    const steered = price.steeredRate();
    price.update(false);
    assert.ok(Math.abs(price.value - 50 * Math.exp(-0.05 * steered)) < 1e-9, `${price.value}`);
    // An avoidable overrun raises it.
    const before = price.value;
    price.update(true, true);
    assert.ok(Math.abs(price.value - before * Math.exp(0.05 * (1 - steered))) < 1e-9);
    // Unavoidable overruns at 2% (twice the target) still leave half the target to steer to.
    for (let i = 0; i < 2000; i++) {
      price.see(1);
      price.update(i % 50 === 0, false);
    }
    assert.equal(price.steeredRate(), 0.005);
    // Saved and restored with the rate; a state saved before the rate was kept restores with none.
    const restored = new OverrunPrice(0.01, 0.05);
    restored.restoreUsage(JSON.parse(JSON.stringify(price.usageState())));
    assert.equal(restored.steeredRate(), price.steeredRate());
    const older = new OverrunPrice(0.01, 0.05);
    older.restoreUsage({ sum: 10, weight: 10 });
    assert.equal(older.steeredRate(), 0.01);
    assert.throws(() => older.restoreUsage({ sum: 10, weight: 10, unreachable: -1 }), /finite sum, weight and count of overruns past reach/);
    assert.throws(() => older.restoreUsage({ sum: 10, weight: 10, unreachable: Number.NaN }), /finite sum, weight and count of overruns past reach/);
  });
});

describe("ensemble examples for the global model", () => {
  it("keeps none while a key's week has been idle (no scale to divide by), and keeps them in the key's units after", () => {
    const options = defaultEnsembleOptions("mem");
    const learner = { model: null, reservoir: new ExampleReservoir(1000), sampleEvery: 1 };
    const forecaster = new EnsembleForecaster(options, new PooledMisses(options.missDecay), new OverrunPrice(options.targetMissRate, options.priceStep), histogramOptionsFor("mem"), { learner });
    let i = 0;
    const step = (usage: number) => {
      forecaster.limit(T0 + i * 60_000);
      forecaster.observe(T0 + i++ * 60_000, usage);
    };
    for (let k = 0; k < 30; k++) step(0); // a container that has not started
    assert.equal(learner.reservoir.seen, 0, "an idle week gives no examples");
    step(4e9); // it starts: 4 GB over a week's peak of nothing would be a ratio of thousands
    for (let k = 0; k < 30; k++) step(4e9);
    assert.ok(learner.reservoir.seen > 20, `${learner.reservoir.seen} examples once it runs`);
    const targets = learner.reservoir.targets.subarray(0, learner.reservoir.size);
    assert.ok(Math.max(...targets) <= 1.0001, `targets in units of the week's peak: max ${Math.max(...targets)}`);
  });
});

describe("ensemble overruns no candidate could avoid", () => {
  it("steer the price only when some candidate would have covered the usage; the limit rises after both", () => {
    const options = defaultEnsembleOptions("mem");
    const run = (jump: number, prior?: () => number) => {
      const price = new OverrunPrice(options.targetMissRate, options.priceStep);
      const forecaster = new EnsembleForecaster(options, new PooledMisses(options.missDecay), price, histogramOptionsFor("mem"), { prior });
      for (let i = 0; i < 50; i++) {
        forecaster.limit(T0 + i * 60_000);
        forecaster.observe(T0 + i * 60_000, 1e9);
      }
      const ts = T0 + 50 * 60_000;
      const limit = forecaster.limit(ts)!;
      const before = price.value;
      forecaster.observe(ts, jump);
      return { limit, before, after: price.value, next: forecaster.limit(ts + 60_000)! };
    };
    // Every candidate's source is about 1 GB (the steady usage), the widest margin 2: 1.9 GB was within reach, 5 GB was not.
    const within = run(1.9e9);
    assert.ok(within.limit < 1.9e9, `limit in force ${within.limit}`);
    assert.ok(Math.abs(within.after - within.before * Math.exp(options.priceStep * (1 - options.targetMissRate))) < 1e-6 * within.before, "an avoidable overrun raises the price");
    assert.ok(within.next >= 1.9e9 * (1 + options.missBump));
    const beyond = run(5e9);
    assert.equal(beyond.after, beyond.before, "an overrun above every candidate leaves the price as it was");
    assert.ok(beyond.next >= 5e9 * (1 + options.missBump), "and still raises the limit");
    // The prior (the peers' level) is no candidate of the key's own: 5 GB stays out of reach under a 100 GB prior.
    const withPrior = run(5e9, () => 1e11);
    assert.equal(withPrior.after, withPrior.before, "an overrun only the prior would have covered leaves the price as it was");
  });
});

describe("pooled overruns by age", () => {
  it("classes keys by observations (1, 2–3, 4–7, … 2048 or more), one class where keys are pooled alone", () => {
    const pool = new PooledMisses(0.9995);
    assert.deepEqual([0, 1, 2, 3, 4, 7, 8, 1023, 1024, 2047, 2048, 1e9].map((n) => pool.ageOf(n)), [0, 0, 1, 1, 2, 2, 3, 9, 10, 10, 11, 11]);
    assert.equal(new PooledMisses(0.9995, 1).ageOf(5000), 0);
    for (const classes of [0, 13, 1.5, Number.NaN]) assert.throws(() => new PooledMisses(0.9995, classes), /age classes/);
  });

  it("counts a decision's steps and overruns in the class of the key's age when it was made", () => {
    const options = defaultEnsembleOptions("mem");
    const pool = new PooledMisses(options.missDecay);
    const forecaster = new EnsembleForecaster(options, pool, new OverrunPrice(options.targetMissRate, options.priceStep), histogramOptionsFor("mem"));
    // Steady 1 GB, then 1.5 GB at the eighth step: the decision before it was made with 7 observations
    // (class 2), and is scored with 8 (class 3).
    for (let i = 0; i < 8; i++) {
      const ts = T0 + i * 60_000;
      forecaster.limit(ts);
      forecaster.observe(ts, i === 7 ? 1.5e9 : 1e9);
    }
    forecaster.limit(T0 + 8 * 60_000); // scores the eighth step
    const { misses, steps } = pool.toState();
    const sources = steps.length / AGE_CLASSES;
    const candidates = misses.length / AGE_CLASSES;
    const stepsOf = (age: number) => steps.slice(age * sources, (age + 1) * sources).reduce((a, b) => a + b, 0);
    const missesOf = (age: number) => misses.slice(age * candidates, (age + 1) * candidates).reduce((a, b) => a + b, 0);
    // Decisions at 1 (class 0), 2–3 (class 1) and 4–7 (class 2) observations were scored; none older.
    assert.ok([0, 1, 2].every((age) => stepsOf(age) > 0), `steps by class ${[0, 1, 2, 3].map(stepsOf)}`);
    assert.ok([3, 4, 11].every((age) => stepsOf(age) === 0));
    assert.ok(missesOf(2) > 0, "the overrun counts in class 2");
    assert.ok([0, 1, 3, 11].every((age) => missesOf(age) === 0), `overruns by class ${[0, 1, 2, 3].map(missesOf)}`);
  });
});

describe("ensemble choice", () => {
  it("makes a key's first decision by what keys of its age had: tight where young keys never overran", () => {
    const options = defaultEnsembleOptions("mem");
    const pool = new PooledMisses(options.missDecay);
    const price = new OverrunPrice(options.targetMissRate, options.priceStep);
    const key = () => new EnsembleForecaster(options, pool, price, histogramOptionsFor("mem"));
    const firstLimit = (forecaster: EnsembleForecaster, ts: number) => {
      forecaster.observe(ts, 1e9);
      return forecaster.limit(ts + 60_000)!;
    };
    // The first key has no peers scored: the cautious start (its week's peak × 2).
    assert.equal(firstLimit(key(), T0), 2e9);
    // Fifty keys of three steady steps each: at their age nothing overran.
    for (let k = 0; k < 50; k++) {
      const forecaster = key();
      for (let i = 0; i < 3; i++) {
        const ts = T0 + (k * 3 + i) * 60_000;
        forecaster.observe(ts, 1e9);
        forecaster.limit(ts + 60_000);
      }
    }
    assert.equal(firstLimit(key(), T0 + 200 * 60_000), 1e9, "a new key starts at its first step, no margin");
  });

  it("judges a source that appears late by its slack per step, not by the little its short-memory averages have gathered", () => {
    // A wobbling key; at step 300 a prior appears at three times its usage and holds no overrun: its slack
    // is twice the usage, far more than the key's own candidates (a fifth of it), so it is never taken.
    const options = defaultEnsembleOptions("cpu");
    const prior = (ts: number) => (ts >= T0 + 300 * 60_000 ? 3 : Number.NaN);
    const forecaster = new EnsembleForecaster(options, new PooledMisses(options.missDecay), new OverrunPrice(options.targetMissRate, options.priceStep), histogramOptionsFor("cpu"), { prior });
    const chosen: string[] = [];
    for (let i = 0; i < 400; i++) {
      const ts = T0 + i * 60_000;
      forecaster.limit(ts);
      if (i >= 300) chosen.push(forecaster.model);
      forecaster.observe(ts, 1 + 0.2 * Math.sin(i / 5));
    }
    assert.ok(chosen.some((name) => !name.startsWith("prior")), "the key chose among its own candidates");
    assert.deepEqual(chosen.filter((name) => name.startsWith("prior")), [], "and never the prior");
  });
});

describe("ensemble scoring", () => {
  // The forecaster keeps slack per source and only overruns per candidate;
  // this recomputes every candidate's slack and overruns the plain way, from
  // the limits each decision held and the usage of the steps it held them.
  // A step above every candidate's limit counts against every candidate (only the price ignores it).
  for (const decisionMs of [0, 15 * 60_000]) {
    it(`gives every candidate the slack and overruns of its own limits (decisions every ${decisionMs / 60_000} min)`, () => {
      const options = defaultEnsembleOptions("mem", { decisionMs });
      const forecaster = new EnsembleForecaster(options, new PooledMisses(options.missDecay), new OverrunPrice(options.targetMissRate, options.priceStep), histogramOptionsFor("mem"));
      // At step 250 a jump past every peak on record (above every candidate); at 290 the same again (now within reach).
      const usage = (i: number) => 1e9 * (1 + 0.4 * Math.sin(i / 7)) + (i % 23 === 0 ? 9e8 : 0) + (i > 200 ? 2e9 : 0) + (i === 250 || i === 290 ? 4e10 : 0);
      let beyondReach = 0;
      let held: Array<number | null> | null = null;
      let block: number[] = [];
      const slack: number[] = [];
      const misses: number[] = [];
      const weight: number[] = [];
      let compared = 0;
      for (let i = 0; i < 320; i++) {
        const ts = T0 + i * 5 * 60_000;
        const before = forecaster.toState().decision?.at;
        forecaster.limit(ts);
        const state = forecaster.toState();
        if (state.decision && state.decision.at !== before) {
          if (held) {
            const n = block.length;
            const slackKeep = options.slackDecay ** n;
            const missKeep = options.missDecay ** n;
            const reach = Math.max(...held.filter((source) => source !== null)) * MARGINS[MARGINS.length - 1]!;
            beyondReach += block.filter((u) => u > reach).length;
            held.forEach((source, s) => {
              if (source === null) return;
              weight[s] = slackKeep * (weight[s] ?? 0) + (1 - slackKeep);
              MARGINS.forEach((margin, m) => {
                const c = s * MARGINS.length + m;
                const limit = source * margin;
                const under = block.filter((u) => u <= limit);
                slack[c] = slackKeep * (slack[c] ?? 0) + ((1 - slackKeep) * under.reduce((sum, u) => sum + (limit - u), 0)) / n;
                misses[c] = missKeep * (misses[c] ?? 0) + block.filter((u) => u > limit).length;
              });
            });
            const { sources } = state;
            held.forEach((source, s) => {
              if (source === null) return;
              assert.ok(Math.abs(sources.weight[s]! - weight[s]!) <= 1e-12, `step ${i}, source ${s}: weight ${sources.weight[s]} vs ${weight[s]}`);
              MARGINS.forEach((margin, m) => {
                const c = s * MARGINS.length + m;
                const kept = margin * sources.level[s]! - sources.usage[s]! + sources.excessScale[s]! * state.excess[c]!;
                assert.ok(Math.abs(kept - slack[c]!) <= 1e-9 * Math.max(1, Math.abs(slack[c]!)) + 1e-3, `step ${i}, candidate ${c}: slack ${kept} vs ${slack[c]}`);
                const keptMisses = sources.missScale[s]! * state.misses[c]!;
                assert.ok(Math.abs(keptMisses - misses[c]!) <= 1e-9 * Math.max(1, misses[c]!), `step ${i}, candidate ${c}: overruns ${keptMisses} vs ${misses[c]}`);
              });
            });
            compared++;
          }
          held = state.decision.held;
          block = [];
        }
        forecaster.observe(ts, usage(i));
        block.push(usage(i));
      }
      assert.ok(compared > (decisionMs === 0 ? 300 : 100), `${compared} decisions compared`);
      const counted = misses.filter((m) => m !== undefined);
      assert.ok(Math.min(...counted) > 0 && Math.max(...counted) > 2 * Math.min(...counted), "every candidate overran (the jump), some far more often");
      assert.equal(beyondReach, 1, "one step was above every candidate");
    });
  }
});

describe("augur-ensemble model", () => {
  it("restores from its saved state and then predicts exactly as the original", () => {
    const factory = createModelFactory("augur-ensemble", {});
    const original = factory.create();
    const windows = [...windowsFor("app", "amy", 0.5, 200e6, 40), ...windowsFor("app", "amy", 1.5, 400e6, 40, T0 + 40 * 60_000)];
    windows.slice(0, 50).forEach((w) => original.observe(w));
    const restored = factory.restore(JSON.parse(JSON.stringify(original.toState())));
    for (const w of windows.slice(50)) {
      original.observe(w);
      restored.observe(w);
    }
    assert.deepEqual(restored.predict(), original.predict());
    const cpu = original.predict().cpu!;
    assert.ok(cpu.limit >= 1.5 && cpu.limit < 3, `cpu limit ${cpu.limit}`);
    assert.ok(cpu.request <= cpu.limit);
    assert.match(cpu.model, /^augur-ensemble:/);
  });

  it("saves a pair's own overrun price and rates only where it stands alone; restores a state saved either way", () => {
    const windows = windowsFor("app", "amy", 0.5, 200e6, 60);
    const pooled = createModelFactory("augur-ensemble", {});
    const alone = createModelFactory("augur-ensemble", { poolAcrossPairs: false });
    const run = (factory: typeof pooled) => {
      const model = factory.create();
      windows.slice(0, 30).forEach((w) => model.observe(w));
      return model;
    };
    const pooledState = JSON.parse(JSON.stringify(run(pooled).toState()));
    const aloneState = JSON.parse(JSON.stringify(run(alone).toState()));
    for (const resource of ["cpu", "mem"]) {
      for (const field of ["price", "priceUsage", "pool"]) {
        assert.ok(!(field in pooledState.resources[resource]), `pooled: no ${field} of its own`);
        assert.ok(field in aloneState.resources[resource], `alone: its ${field}`);
      }
    }
    assert.ok(JSON.stringify(pooledState).length < JSON.stringify(aloneState).length);
    // A pair alone restored from a pooled state starts its own price and rates afresh.
    const restored = JSON.parse(JSON.stringify(alone.restore(pooledState).toState()));
    for (const resource of ["cpu", "mem"] as const) {
      assert.deepEqual(restored.resources[resource].pool, JSON.parse(JSON.stringify(new PooledMisses(defaultEnsembleOptions(resource).missDecay, 1).toState())));
      assert.equal(restored.resources[resource].price, null);
    }
    // A pooled pair restored from a state with its own (an older one, or one saved alone) restores, and saves none.
    const pooledAgain = JSON.parse(JSON.stringify(pooled.restore(aloneState).toState()));
    assert.ok(!("pool" in pooledAgain.resources.cpu));
  });

  it("refuses a state of another layout", () => {
    const factory = createModelFactory("augur-ensemble", {});
    const model = factory.create();
    windowsFor("app", "amy", 0.5, 200e6, 3).forEach((w) => model.observe(w));
    const state = JSON.parse(JSON.stringify(model.toState()));
    const sources = state.resources.cpu.forecaster.sources.level.length;
    const candidates = state.resources.cpu.forecaster.misses.length;
    for (const [field, value, reason] of [
      ["pending", { ts: [T0], values: ["1e9"] }, /pending/],
      ["pending", { ts: [T0, T0], values: [1] }, /pending/],
      ["pending", null, /pending/],
      ["decision", { held: [1, 2], at: T0 }, /decision/],
      ["decision", { held: new Array(sources).fill(-1), at: T0 }, /decision/],
      ["decision", "yes", /decision/],
      ["peaks", { ts: [T0], values: [] }, /peak window/],
      ["peaks", { ts: [T0], values: [null] }, /peak window/],
      ["sources", null, /per-source/],
      ["sources", { ...state.resources.cpu.forecaster.sources, steps: [1, 2] }, /steps/],
      ["sources", { ...state.resources.cpu.forecaster.sources, missScale: new Array(sources).fill(0) }, /overrun scales/],
      ["sources", { ...state.resources.cpu.forecaster.sources, previous: new Array(sources).fill("x") }, /previous/],
      ["sources", { ...state.resources.cpu.forecaster.sources, weight: new Array(sources).fill(1.5) }, /slack weights/],
      ["sources", { ...state.resources.cpu.forecaster.sources, weight: undefined }, /slack weights/],
      ["percentiles", { ...state.resources.cpu.forecaster.percentiles, prior: -1 }, /percentiles/],
      ["percentiles", { ...state.resources.cpu.forecaster.percentiles, prior: "1e9" }, /percentiles/],
      ["misses", new Array(candidates).fill("1"), /overruns/],
      ["excess", [], /excess/],
      ["observations", "5", /observations/],
      ["observations", 1.5, /observations/],
      ["bumpFloor", -1, /bump floor/],
      ["bumpUntil", "soon", /bump end/],
    ] as const) {
      const hostile = JSON.parse(JSON.stringify(state));
      hostile.resources.cpu.forecaster[field] = value;
      assert.throws(() => factory.restore(hostile), reason, `${field}: ${JSON.stringify(value)}`);
    }
    // A pair alone saves its own price and rates.
    const alone = createModelFactory("augur-ensemble", { poolAcrossPairs: false });
    const aloneModel = alone.create();
    windowsFor("app", "amy", 0.5, 200e6, 3).forEach((w) => aloneModel.observe(w));
    const aloneState = JSON.parse(JSON.stringify(aloneModel.toState()));
    for (const [field, value, reason] of [
      ["price", "100", /price/],
      ["price", -1, /price/],
      ["priceUsage", null, /price's usage/],
      ["priceUsage", { sum: -1, weight: 1 }, /price's usage/],
      ["priceUsage", { sum: "5", weight: 1 }, /price's usage/],
      ["priceUsage", { sum: 5 }, /price's usage/],
      ["priceUsage", { sum: 5, weight: Infinity }, /price's usage/],
      ["samples", -3, /samples/],
      ["nextTs", null, /nextTs/],
    ] as const) {
      const hostile = JSON.parse(JSON.stringify(aloneState));
      hostile.resources.cpu[field] = value;
      assert.throws(() => alone.restore(hostile), reason, `${field}: ${JSON.stringify(value)}`);
    }
    for (const pool of [null, { ...aloneState.resources.cpu.pool, steps: [Infinity] }, { ...aloneState.resources.cpu.pool, scale: new Array(sources).fill(-1) }]) {
      const hostile = JSON.parse(JSON.stringify(aloneState));
      hostile.resources.cpu.pool = pool;
      assert.throws(() => alone.restore(hostile), /pooled/, `pool: ${JSON.stringify(pool)}`);
    }
    state.resources.cpu.forecaster.version = 99;
    assert.throws(() => factory.restore(state), /version/);
    assert.throws(() => factory.restore({ resources: { bogus: {} } }), /unknown resource/);
  });
});

/** One window a minute per pair, each from one sample: bursty CPU around a level of the pair's own. */
function burstyWindows(pairs: number, count: number, random: () => number): WindowAggregate[] {
  const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 0, sketchAccuracy: 0.01 });
  const out: WindowAggregate[] = [];
  for (let i = 0; i < count; i++) {
    for (let p = 0; p < pairs; p++) {
      const level = 0.2 + p / pairs;
      const cpu = level * (random() < 0.05 ? 2 + 2 * random() : 0.7 + 0.3 * random());
      out.push(...aggregator.add(sample({ ts: T0 + i * 60_000, workload: `w${p}`, image: `img-${p % 5}`, user: `user-${p}`, cpuCores: cpu, memoryWorkingSetBytes: 1e8 * level })).closed);
    }
  }
  out.push(...aggregator.flush());
  return out;
}

describe("augur-ensemble global model, live", () => {
  before(async () => void (await initTensorflow()));

  it("learns from the windows of every pair and changes their limits; the stage saves it beside them and a restarted stage restores it", async () => {
    // 40 pairs × 800 windows; one example in four blocks kept: the first training at 5,000 examples, 500 windows in.
    const windows = burstyWindows(40, 800, seededRandom(3));
    const replay = (options: object) => {
      const factory = createModelFactory("augur-ensemble", options);
      const models = new Map<string, ReturnType<typeof factory.create>>();
      for (const window of windows) {
        const key = `${window.image}|${window.user}`;
        if (!models.has(key)) models.set(key, factory.create());
        models.get(key)!.observe(window);
      }
      // What each pair holds of every source under its decision in force.
      return { factory, held: [...models.values()].map((model) => (model.toState() as { resources: { cpu: { forecaster: EnsembleState } } }).resources.cpu.forecaster.decision!.held) };
    };
    // Pairs alone, so that only the global model is shared.
    const learned = replay({ learnGlobalModel: true, poolAcrossPairs: false });
    const alone = replay({ poolAcrossPairs: false });
    assert.deepEqual(alone.factory.shared!.toState(), { kind: "augur-global-models", version: 2, models: {} }, "nothing learned");
    const trained = learned.factory.shared!.toState() as { kind: string; version: number; models: Record<string, { layers: unknown[] }> };
    assert.equal(trained.kind, "augur-global-models");
    assert.deepEqual(Object.keys(trained.models).sort(), ["cpu", "mem"], "a model per resource, trained on every pair's windows");
    const globalSources = [...Array(learned.held[0]!.length).keys()].filter((s) => candidateName(s * MARGINS.length).startsWith("global-"));
    assert.equal(globalSources.length, 2);
    for (const s of globalSources) {
      assert.ok(learned.held.every((held) => typeof held[s] === "number" && held[s]! > 0), "once trained, the model's quantiles are candidates of every pair");
      assert.ok(alone.held.every((held) => held[s] === null), "without one, no pair has them");
    }

    const { dir, cleanup } = tempDir();
    const transport = new EmbeddedTransport();
    const errors = console.error;
    try {
      // The stage saves what its factory learned, beside the pairs' states…
      const store = new ProfileStore(dir);
      const later = windows.slice(-40).map((w) => ({ ...w, windowStart: w.windowStart + 60_000, windowEnd: w.windowEnd + 60_000 }));
      await new ForecastStage(transport, store, learned.factory, new Metrics()).handle(asRecords(later.slice(0, 1)));
      assert.deepEqual(store.getSharedModelState("augur-ensemble"), trained);
      // …a restarted one (a new factory) starts from it, before any training of its own…
      const restarted = createModelFactory("augur-ensemble", { learnGlobalModel: true, poolAcrossPairs: false });
      await new ForecastStage(transport, store, restarted, new Metrics()).handle(asRecords(later.slice(1, 2)));
      assert.deepEqual(restarted.shared!.toState(), trained, "restored as saved");
      // …and so does one that does not learn: new pairs get the model's quantiles as candidates.
      const fixed = createModelFactory("augur-ensemble", { poolAcrossPairs: false });
      const newcomers = windows.slice(0, 4_000).map((w) => ({ ...w, user: `new-${w.user}` }));
      await new ForecastStage(transport, store, fixed, new Metrics()).handle(asRecords(newcomers));
      const heldBy = (user: string) => ((store.getModelState("img-0", user)!.state as { model: { resources: { cpu: { forecaster: EnsembleState } } } }).model.resources.cpu.forecaster.decision!.held);
      for (const s of globalSources) assert.ok(heldBy("new-user-0")[s]! > 0, "a loaded model is offered without learning");
      assert.deepEqual(fixed.shared!.toState(), trained);
      // …and one that cannot read it says so and learns afresh.
      store.putSharedModelState("augur-ensemble", { ...trained, models: { cpu: { ...trained.models.cpu, layers: [] } } });
      const logged: string[] = [];
      console.error = (line: string) => void logged.push(line);
      const fresh = createModelFactory("augur-ensemble", { poolAcrossPairs: false });
      await new ForecastStage(transport, store, fresh, new Metrics()).handle(asRecords(later.slice(2, 3)));
      assert.match(logged.join("\n"), /shared state of model augur-ensemble is unreadable, learning it afresh: .*layers/);
      assert.deepEqual(fresh.shared!.toState(), { kind: "augur-global-models", version: trained.version, models: {} });
      store.close();
    } finally {
      console.error = errors;
      await transport.close();
      cleanup();
    }
  });
});

describe("augur-ensemble overruns pooled across pairs", () => {
  it("shares one price, one set of pooled rates and the peers' prior among a stage's pairs, saved with every pass: a restarted stage, or one whose store write failed and was retried, goes on exactly as one never stopped", async () => {
    // Seven pairs; the seventh (img-1, as user-1's) starts with the restarted stage's first batch: its peers' level,
    // its prior, is read from the store.
    const windows = burstyWindows(7, 200, seededRandom(8)).filter((w) => !(w.user === "user-6" && w.windowStart < T0 + 120 * 60_000));
    const cut = windows.findIndex((w) => w.user === "user-6");
    const run = async (options: object, at_cut: "nothing" | "restart" | "failed write") => {
      const { dir, cleanup } = tempDir();
      try {
        const open = () => {
          const store = new ProfileStore(dir);
          const transport = new EmbeddedTransport();
          // The fallback levels' model as pipelines have it.
          const fallbackFactory = createModelFactory(DEFAULT_FALLBACK_MODEL, {});
          return { store, transport, stage: new ForecastStage(transport, store, createModelFactory("augur-ensemble", options), new Metrics(), { cacheKeys: 2_000, levels: "inline", fallbackFactory }) };
        };
        let live = open();
        const limits: unknown[] = [];
        for (let at = 0, end = 0; at < windows.length; at = end) {
          end = at < cut ? Math.min(at + 100, cut) : at + 100;
          if (at === cut && at_cut === "restart") {
            live.store.close();
            await live.transport.close();
            live = open();
          }
          if (at === cut && at_cut === "failed write") {
            const { store } = live;
            const write = store.writeProfiles;
            store.writeProfiles = () => {
              throw new Error("disk full (simulated)");
            };
            await assert.rejects(live.stage.handle(asRecords(windows.slice(at, end))), /disk full/);
            store.writeProfiles = write;
          }
          for (const p of await live.stage.handle(asRecords(windows.slice(at, end)))) {
            if (p.level === "exact") limits.push([p.user, p.version, p.resources.cpu!.limit, p.resources.mem!.limit, p.resources.cpu!.model, p.resources.mem!.model]);
          }
        }
        const shared = live.store.getSharedModelState("augur-ensemble") as { calibration?: Record<string, { price: number }> } | null;
        live.store.close();
        await live.transport.close();
        return { limits, shared };
      } finally {
        cleanup();
      }
    };
    const never = await run({}, "nothing");
    assert.deepEqual(Object.keys(never.shared!.calibration!).sort(), ["cpu", "mem"], "the pairs' shared price and rates, saved");
    const young = never.limits.filter((l) => (l as string[])[0] === "user-6" && (l as string[]).slice(4).some((model) => model.includes(":prior×")));
    assert.ok(young.length > 0, "the pair that starts after the restart holds its peers' level for a while");
    const restarted = await run({}, "restart");
    assert.deepEqual(restarted.limits, never.limits, "the pairs restored exactly");
    assert.deepEqual(restarted.shared, never.shared, "and what they share");
    // The failed pass's windows moved the pairs, what they share and the user factor's inputs in memory; the retry
    // starts over from the store.
    const retried = await run({}, "failed write");
    assert.deepEqual(retried.limits, never.limits, "the retried pass applied each window once");
    assert.deepEqual(retried.shared, never.shared, "and what the pairs share");
    const alone = await run({ poolAcrossPairs: false }, "nothing");
    assert.equal(alone.shared, null, "pairs alone share nothing");
    assert.notDeepEqual(alone.limits, never.limits, "pooled, a pair's limits follow what all pairs showed");
  });
});

/**
 * Inline forecast stages with the pipeline's defaults, opened one after
 * another on one data directory (a restart each), what they report on the
 * console kept from `quiet()` on, and what the newest one's store holds.
 */
function inlineStages() {
  const { dir, cleanup } = tempDir();
  const transport = new EmbeddedTransport();
  const stores: ProfileStore[] = [];
  const errors = console.error;
  const logged: string[] = [];
  const cpu = (image: string, user: string) => stores.at(-1)!.getProfile(image, user)!.resources.cpu!;
  return {
    dir,
    logged,
    open(metrics = new Metrics()) {
      const store = new ProfileStore(dir);
      stores.push(store);
      return new ForecastStage(transport, store, createModelFactory("augur-ensemble", {}), metrics, { cacheKeys: 2_000, levels: "inline", fallbackFactory: createModelFactory(DEFAULT_FALLBACK_MODEL, {}) });
    },
    quiet: () => void (console.error = (line: string) => void logged.push(line)),
    /** The prior a pair's CPU forecaster holds (a candidate, chosen where it costs least). */
    priorOf: (image: string, user: string) => (stores.at(-1)!.getModelState(image, user)!.state as { model: { resources: { cpu: { forecaster: EnsembleState } } } }).model.resources.cpu.forecaster.percentiles.prior,
    limit: (image: string, user: string) => cpu(image, user).limit,
    p90: (image: string, user: string) => cpu(image, user).p90,
    async close() {
      console.error = errors;
      for (const store of stores) store.close();
      await transport.close();
      cleanup();
    },
  };
}

describe("the peers' prior, live", () => {
  it("takes a young pair's prior from its image's level; a stored level profile that cannot be read is reported and gives none, and the stage keeps going", async () => {
    const { dir, open, quiet, logged, limit, close, priorOf: pairPrior } = inlineStages();
    const priorOf = (user: string) => pairPrior("img", user);
    const young = (user: string) => windowsFor("img", user, 0.5, 2e8, 1, T0 + 60 * 60_000);
    try {
      const first = open();
      // Everyone's level also has a bigger pair of another image.
      await first.handle(asRecords([...windowsFor("img", "old", 2, 8e8, 30), ...windowsFor("big", "other", 6, 8e9, 30)].sort((a, b) => a.windowEnd - b.windowEnd)));
      const image = limit("img", "*");
      await first.handle(asRecords(young("new-1")));
      assert.equal(priorOf("new-1"), image, "a young pair's prior: its image's limit before its window");
      // The image's stored profile is garbled; a restarted stage reads it for the next young pair's prior.
      const raw = new Database(join(dir, "augur.db"));
      raw.prepare("UPDATE profiles SET profile = ? WHERE image = ? AND user = ?").run("{not json", "img", "*");
      raw.close();
      quiet();
      const metrics = new Metrics();
      const everyone = limit("*", "*");
      const restarted = open(metrics);
      const profiles = await restarted.handle(asRecords(young("new-2")));
      assert.ok(profiles.some((p) => p.user === "new-2" && p.level === "exact"), "the pair's profile, as always");
      assert.match(logged.join("\n"), /profile of img\|\* is unreadable, no prior from it/);
      // Everyone's level (*, *) folded the other pairs' windows: the next level with a profile gives the prior.
      assert.equal(priorOf("new-2"), everyone);
      assert.notEqual(everyone, image);
      assert.equal(logged.length, 1, "reported once");
      assert.match(await metrics.registry.metrics(), /augur_stage_errors_total\{stage="forecast"\} 1/);
      // A stored profile that parses but whose limits are not numbers (a string, a null prediction) gives none either.
      const edited = new Database(join(dir, "augur.db"));
      const good = JSON.parse((edited.prepare("SELECT profile FROM profiles WHERE image = ? AND user = ?").get("*", "*") as { profile: string }).profile);
      const odd = { ...good, image: "img", user: "*", resources: { cpu: { ...good.resources.cpu, limit: String(image) }, mem: null } };
      edited.prepare("UPDATE profiles SET profile = ? WHERE image = ? AND user = ?").run(JSON.stringify(odd), "img", "*");
      const everyoneNow = (edited.prepare("SELECT profile FROM profiles WHERE image = ? AND user = ?").get("*", "*") as { profile: string }).profile;
      edited.close();
      await open().handle(asRecords(young("new-3")));
      assert.equal(priorOf("new-3"), JSON.parse(everyoneNow).resources.cpu.limit, "everyone's limit, not the string");
      assert.equal(logged.length, 1, "nothing more to report");
    } finally {
      await close();
    }
  });

  it("gives no prior from levels that folded only the pair's own windows, also when a restarted stage reads them from the store; a new pair gets theirs", async () => {
    const { open, limit, close, priorOf } = inlineStages();
    try {
      await open().handle(asRecords(windowsFor("solo", "first", 1, 2e8, 4)));
      assert.equal(priorOf("solo", "first"), null, "every level holds the pair's own windows only");
      // Restarted: the levels are read from the store. Twenty more windows refresh the pair's prior at least twice.
      const restarted = open();
      await restarted.handle(asRecords(windowsFor("solo", "first", 1, 2e8, 20, T0 + 4 * 60_000)));
      assert.equal(priorOf("solo", "first"), null, "still its own windows only");
      const image = limit("solo", "*");
      await restarted.handle(asRecords(windowsFor("solo", "second", 1, 2e8, 1, T0 + 24 * 60_000)));
      assert.equal(priorOf("solo", "second"), image, "another pair's windows are its peers' (its user has no other pair: factor 1)");
    } finally {
      await close();
    }
  });

  it("scales a young pair's image level by how its user's other pairs compare with their images; a restarted stage reads the same factor from the store; a garbled one is reported", async () => {
    const { dir, open, quiet, logged, priorOf, limit, p90, close } = inlineStages();
    const young = (image: string) => windowsFor(image, "small", 1, 2e8, 1, T0 + 3_600_000);
    try {
      const first = open();
      // User "small" runs image a at half what "big" runs it at; images b and c are run by others.
      const history = [...windowsFor("a", "big", 4, 8e8, 30), ...windowsFor("a", "small", 2, 8e8, 30), ...windowsFor("b", "other", 2, 8e8, 30), ...windowsFor("c", "other", 0.5, 8e8, 30), ...windowsFor("d", "other", 1.5, 8e8, 30)];
      await first.handle(asRecords(history.sort((x, y) => x.windowEnd - y.windowEnd)));
      const factor = userFactor([p90("a", "small") / p90("a", "*")]);
      assert.ok(factor > 0.4 && factor < 0.6, `the user's factor ${factor}`);
      const image = limit("b", "*");
      await first.handle(asRecords(young("b")));
      assert.equal(priorOf("b", "small"), image * factor, "its image's limit × the user's factor");
      // Restarted: the user's pairs (a and now b) and their images' levels are read from the store.
      const ratios = [p90("a", "small") / p90("a", "*"), p90("b", "small") / p90("b", "*")].sort((x, y) => x - y);
      const imageC = limit("c", "*");
      await open().handle(asRecords(young("c")));
      assert.equal(priorOf("c", "small"), imageC * userFactor(ratios));
      // One of the user's stored profiles garbled: reported once, and the factor reads only what folds from then on.
      const raw = new Database(join(dir, "augur.db"));
      raw.prepare("UPDATE profiles SET profile = ? WHERE image = ? AND user = ?").run("{not json", "a", "small");
      raw.close();
      quiet();
      const imageD = limit("d", "*");
      await open().handle(asRecords(young("d")));
      assert.equal(priorOf("d", "small"), imageD, "no ratio: factor 1");
      assert.equal(logged.length, 1, logged.join("\n"));
      assert.match(logged[0]!, /profiles of user small are unreadable/);
    } finally {
      await close();
    }
  });
});

describe("the peers' prior, distributed (levels repartitioned)", () => {
  const profileRecord = (value: unknown, key: string, offset: number): TopicRecord<Profile> => ({ topic: TOPICS.profiles, partition: 0, offset, key, value: value as Profile, timestamp: T0, headers: {} });
  const level = (image: string, user: string, windows: number, cpu: number, version = T0): Profile => ({
    image,
    user,
    level: image === "*" && user === "*" ? "global" : image === "*" ? "user" : "image",
    version,
    firstSeen: T0,
    windows,
    oomKills: 0,
    resources: { cpu: { p50: cpu / 2, p90: cpu / 1.5, p95: cpu / 1.2, p99: cpu / 1.1, max: cpu, request: cpu / 2, limit: cpu, model: "decaying-percentile", sampleCount: windows } },
  });
  type ModelState = { model: { resources: { cpu: { forecaster: EnsembleState } } } };
  const priorIn = (store: ProfileStore, image: string, user: string) => (store.getModelState(image, user)!.state as ModelState).model.resources.cpu.forecaster.percentiles.prior;

  it("takes a pair's prior from its levels' newest profiles on augur.profiles, only from a level that counts more windows than the pair, its image's scaled by the user's factor; a record that is not a profile under its key is reported and skipped", async () => {
    const { dir, cleanup } = tempDir();
    const transport = new EmbeddedTransport();
    const store = new ProfileStore(dir);
    const metrics = new Metrics();
    const errors = console.error;
    const logged: string[] = [];
    const stage = new ForecastStage(transport, store, createModelFactory("augur-ensemble", {}), metrics, { cacheKeys: 2_000, levels: "repartition", fallbackFactory: createModelFactory(DEFAULT_FALLBACK_MODEL, {}) });
    try {
      console.error = (line: string) => void logged.push(line);
      stage.followProfiles([
        profileRecord(level("img", "*", 40, 3.5), "img|*", 0),
        profileRecord(level("*", "*", 100, 7), "*|*", 1),
        // An older version of a level does not replace the newer one.
        profileRecord(level("img", "*", 30, 99, T0 - 60_000), "img|*", 2),
        // A pair's only level so far, fed by the pair alone: as many windows as the pair will have.
        profileRecord(level("solo", "*", 1, 50), "solo|*", 3),
        // User "new" runs image a at half its level's p90 (1 against 2): its factor is ½.
        profileRecord(level("a", "*", 50, 3), "a|*", 4),
        profileRecord({ ...level("a", "new", 5, 1.5), level: "exact" }, "a|new", 9),
        // Hostile records are reported (a pair's key on a level's profile, a level's on a pair's).
        profileRecord(level("img", "*", 40, 1), "other|*", 5),
        profileRecord({ ...level("x", "*", 40, 1), windows: "many" }, "x|*", 6),
        profileRecord(null, "y|*", 7),
        profileRecord(level("a", "b", 40, 1), "a|b", 8),
        profileRecord({ ...level("c", "*", 40, 1), level: "exact" }, "c|*", 10),
      ]);
      assert.equal(logged.length, 5, logged.join("\n"));
      assert.match(logged[0]!, /augur\.profiles\[0\]@5 \(key other\|\*\) is not a profile; no prior from it/);
      assert.match(await metrics.registry.metrics(), /augur_stage_errors_total\{stage="forecast"\} 5/);
      await stage.handle(asRecords([...windowsFor("img", "new", 0.5, 2e8, 1, T0 + 3_600_000), ...windowsFor("solo", "one", 0.5, 2e8, 1, T0 + 3_600_000)]));
      assert.equal(priorIn(store, "img", "new"), 3.5 * userFactor([0.5]), "its image's newest profile × the user's factor");
      assert.equal(priorIn(store, "solo", "one"), 7, "not its image's level, which holds its own window alone: everyone's");
    } finally {
      console.error = errors;
      await stage.stop();
      store.close();
      await transport.close();
      cleanup();
    }
  });

  it("follows augur.profiles once started with a peers group: a young pair's prior is its image's limit as the level's owner published it", async () => {
    const { dir, cleanup } = tempDir();
    const transport = new EmbeddedTransport();
    const store = new ProfileStore(dir);
    const stage = new ForecastStage(transport, store, createModelFactory("augur-ensemble", {}), new Metrics(), { cacheKeys: 2_000, levels: "repartition", fallbackFactory: createModelFactory(DEFAULT_FALLBACK_MODEL, {}), peersGroup: "peers-test" });
    const windows = transport.topic<WindowAggregate>(TOPICS.windows);
    const publish = (list: WindowAggregate[]) => windows.publish(list.map((value) => ({ key: `${value.image}|${value.user}`, value, timestamp: value.windowEnd })));
    try {
      await stage.start();
      await publish(windowsFor("img", "old", 2, 8e8, 30));
      await transport.drain();
      const image = store.getProfile("img", "*")!.resources.cpu!.limit;
      await publish(windowsFor("img", "new", 0.5, 2e8, 1, T0 + 3_600_000));
      await transport.drain();
      assert.equal(priorIn(store, "img", "new"), image);
    } finally {
      await stage.stop();
      store.close();
      await transport.close();
      cleanup();
    }
  });
});

describe("cold-start chooser", () => {
  // Quantiles at a target of 0.003: 0.5 0.75 0.9 0.95 0.98 0.99 0.995 0.997 0.998 0.999 0.9995 1;
  // their prior overrun rates max(1 − q, 0.003): 0.5 0.25 0.1 0.05 0.02 0.01 0.005 0.003 0.003 …
  const limitsFor = (chooser: ColdStartChooser) => Float64Array.from(chooser.quantiles, (_, i) => i + 1);

  it("starts at the service level's quantile; then takes the quantile of least slack + price × overrun rate", () => {
    const chooser = new ColdStartChooser(0.003);
    const service = chooser.quantiles.indexOf(0.997);
    assert.equal(chooser.quantiles.length, 12);
    assert.equal(chooser.choose(0), service, "nothing scored: the service level's quantile, whatever the price");
    // Ten starts at 0.5 under limits 1, 2, …, 12: slack i + 0.5 per start, no overrun, so each rate is
    // its prior × 100 / (w + 100), w = Σ 0.999^k (k < 10) = 9.955: × 0.90946.
    for (let k = 0; k < 10; k++) chooser.score(limitsFor(chooser), 0.5);
    assert.equal(chooser.choose(0), 0, "overruns free: the least slack");
    // Price 100: a step up costs 1 of slack and saves 100 × 0.90946 × the fall of the prior:
    // 22.7, 13.6, 4.5, 2.7 up to q = 0.98, then 0.91 < 1.
    assert.equal(chooser.quantiles[chooser.choose(100)], 0.98);
    // Price 1,000: the falls 0.01, 0.005, 0.002 still save 9.1, 4.5, 1.8 > 1; past 0.997 nothing falls.
    assert.equal(chooser.choose(1000), service);
  });

  it("counts the overruns each quantile would have had", () => {
    const chooser = new ColdStartChooser(0.003);
    // Usage 3.5: limits 1, 2, 3 overrun every time (no slack), 4 leaves 0.5.
    for (let k = 0; k < 2000; k++) chooser.score(limitsFor(chooser), 3.5);
    assert.equal(chooser.choose(0), 0, "at no price an overrun costs nothing");
    // Price 10: q = 0.5 costs ≈ 10 × its measured rate ≈ 10; q = 0.95 0.5 + 10 × 0.05 × 100 / (w + 100) < 1.
    assert.equal(chooser.quantiles[chooser.choose(10)], 0.95);
  });

  it("refuses a target outside (0, 1) and ignores a usage or a limit table it cannot score", () => {
    for (const target of [0, 1, -0.1, Number.NaN]) assert.throws(() => new ColdStartChooser(target), /target miss rate/);
    const chooser = new ColdStartChooser(0.0005);
    assert.ok(chooser.quantiles.includes(0.9995));
    chooser.score(limitsFor(chooser), Number.NaN);
    chooser.score(limitsFor(chooser), -1);
    chooser.score(limitsFor(chooser), Infinity);
    chooser.score(new Float64Array(3), 0.5);
    assert.equal(chooser.choose(0), chooser.quantiles.indexOf(0.9995), "nothing was scored");
  });
});
