// Benchmarks print one JSON object per line: the measured rate beside a
// reference rate measured in the same run, so ratios compare across machines.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WindowAggregator } from "../src/aggregate/windows.js";
import { Metrics } from "../src/core/metrics.js";
import { validateSample } from "../src/core/sample.js";
import type { Sample, WindowAggregate } from "../src/core/types.js";
import { createModelFactory, DEFAULT_FALLBACK_MODEL, type ModelName } from "../src/forecast/registry.js";
import { ForecastStage } from "../src/forecast/stage.js";
import { emptySample } from "../src/core/sample.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EmbeddedTransport } from "../src/transport/embedded/embedded-transport.js";
import { TOPICS } from "../src/transport/topic.js";

const T0 = Date.UTC(2026, 0, 1);

function makeSamples(count: number, pairs: number, everyMs = 1000): Sample[] {
  const out: Sample[] = [];
  for (let i = 0; i < count; i++) {
    const pair = i % pairs;
    out.push({
      ...emptySample({ ts: T0 + Math.floor(i / pairs) * everyMs, workload: `w${pair}`, image: `image-${pair % 50}`, user: `user-${pair}`, host: "h", source: "bench" }),
      cpuCores: 0.1 + ((i * 7919) % 1000) / 1000,
      memoryWorkingSetBytes: 1e8 + ((i * 104729) % 1000) * 1e5,
    });
  }
  return out;
}

function rate(run: () => void, items: number, repeats = 3): number {
  let best = Infinity;
  for (let r = 0; r < repeats; r++) {
    const start = performance.now();
    run();
    best = Math.min(best, performance.now() - start);
  }
  return items / (best / 1000);
}

function windowsOf(input: Sample[]): WindowAggregate[] {
  const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 5_000, sketchAccuracy: 0.01 });
  const out: WindowAggregate[] = [];
  for (const s of input) out.push(...aggregator.add(s).closed);
  out.push(...aggregator.flush());
  return out;
}

const samples = makeSamples(200_000, 500);
const reference = rate(() => {
  for (const s of samples) validateSample(s);
}, samples.length);

let windows: WindowAggregate[] = [];
const windowing = rate(() => {
  windows = windowsOf(samples);
}, samples.length);

/** Each window folded into its pair's model and a prediction made (the models alone, no stage, no store). */
function modelRate(name: ModelName, input: WindowAggregate[], repeats = 3): number {
  return rate(() => {
    const factory = createModelFactory(name, {});
    const models = new Map<string, ReturnType<typeof factory.create>>();
    for (const w of input) {
      const key = `${w.image}|${w.user}`;
      let model = models.get(key);
      if (!model) models.set(key, (model = factory.create()));
      model.observe(w);
      model.predict();
    }
  }, input.length, repeats);
}

const forecasting = modelRate("decaying-percentile", windows);
// 50 pairs, 10 s samples for 100 minutes: 100 windows a pair, so pairs grow old as they do live.
const older = windowsOf(makeSamples(30_000, 50, 10_000));
const ensemble = modelRate("augur-ensemble", older, 2);
/** The forecast stage with the pipeline's defaults (augur-ensemble, fallback levels inline, peers' prior), its SQLite store in a temporary directory: every pass writes the states of a window's four profile levels. */
const staged = await (async () => {
  let best = Infinity;
  for (let r = 0; r < 2; r++) {
    const dir = mkdtempSync(join(tmpdir(), "augur-bench-"));
    const store = new ProfileStore(dir);
    const transport = new EmbeddedTransport();
    const stage = new ForecastStage(transport, store, createModelFactory("augur-ensemble", {}), new Metrics(), { cacheKeys: 2_000, levels: "inline", fallbackFactory: createModelFactory(DEFAULT_FALLBACK_MODEL, {}) });
    const start = performance.now();
    for (let at = 0; at < older.length; at += 100) {
      await stage.handle(older.slice(at, at + 100).map((value, i) => ({ topic: TOPICS.windows, partition: 0, offset: at + i, key: `${value.image}|${value.user}`, value, timestamp: value.windowEnd, headers: {} })));
    }
    best = Math.min(best, performance.now() - start);
    store.close();
    await transport.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return older.length / (best / 1000);
})();

console.log(JSON.stringify({ benchmark: "aggregate.windowing", unit: "samples/s", value: Math.round(windowing), reference: { name: "validateSample only", value: Math.round(reference) }, ratio: +(windowing / reference).toFixed(4) }));
console.log(JSON.stringify({ benchmark: "forecast.decaying-percentile", unit: "windows/s", value: Math.round(forecasting), reference: { name: "validateSample only (samples/s)", value: Math.round(reference) }, ratio: +(forecasting / reference).toFixed(4) }));
console.log(JSON.stringify({ benchmark: "forecast.augur-ensemble", unit: "windows/s", value: Math.round(ensemble), reference: { name: "validateSample only (samples/s)", value: Math.round(reference) }, ratio: +(ensemble / reference).toFixed(4) }));
console.log(JSON.stringify({ benchmark: "forecast.stage", unit: "windows/s", value: Math.round(staged), reference: { name: "validateSample only (samples/s)", value: Math.round(reference) }, ratio: +(staged / reference).toFixed(4) }));
