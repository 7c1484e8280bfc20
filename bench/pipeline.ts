// Benchmarks print one JSON object per line: the measured rate beside a
// reference rate measured in the same run, so ratios compare across machines.
import { WindowAggregator } from "../src/aggregate/windows.js";
import { validateSample } from "../src/core/sample.js";
import type { Sample, WindowAggregate } from "../src/core/types.js";
import { createModelFactory } from "../src/forecast/registry.js";
import { emptySample } from "../src/core/sample.js";

const T0 = Date.UTC(2026, 0, 1);

function makeSamples(count: number, pairs: number): Sample[] {
  const out: Sample[] = [];
  for (let i = 0; i < count; i++) {
    const pair = i % pairs;
    out.push({
      ...emptySample({ ts: T0 + Math.floor(i / pairs) * 1000, workload: `w${pair}`, image: `image-${pair % 50}`, user: `user-${pair}`, host: "h", source: "bench" }),
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

const samples = makeSamples(200_000, 500);
const reference = rate(() => {
  for (const s of samples) validateSample(s);
}, samples.length);

let windows: WindowAggregate[] = [];
const windowing = rate(() => {
  const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 5_000, sketchAccuracy: 0.01 });
  windows = [];
  for (const s of samples) windows.push(...aggregator.add(s).closed);
  windows.push(...aggregator.flush());
}, samples.length);

const factory = createModelFactory("decaying-percentile", {});
const forecasting = rate(() => {
  const models = new Map<string, ReturnType<typeof factory.create>>();
  for (const w of windows) {
    const key = `${w.image}|${w.user}`;
    let model = models.get(key);
    if (!model) models.set(key, (model = factory.create()));
    model.observe(w);
    model.predict();
  }
}, windows.length);

console.log(JSON.stringify({ benchmark: "aggregate.windowing", unit: "samples/s", value: Math.round(windowing), reference: { name: "validateSample only", value: Math.round(reference) }, ratio: +(windowing / reference).toFixed(4) }));
console.log(JSON.stringify({ benchmark: "forecast.decaying-percentile", unit: "windows/s", value: Math.round(forecasting), reference: { name: "validateSample only (samples/s)", value: Math.round(reference) }, ratio: +(forecasting / reference).toFixed(4) }));
