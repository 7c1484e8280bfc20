// Backtest throughput: samples per second through each policy, beside the
// throughput of decoding the same rows with no policy at all (the reference),
// measured in the same run on a synthetic trace in the canonical format.
import { writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { loadCanonical } from "../src/backtest/adapters/index.js";
import { augurModels, augurPolicy } from "../src/backtest/policies/augur.js";
import { replayInParallel, shareTrace } from "../src/backtest/parallel.js";
import { DEFAULT_POLICIES, POLICIES } from "../src/backtest/policies/index.js";
import { replay } from "../src/backtest/replay.js";
import { initTensorflow } from "../src/forecast/global-model.js";
import { seededRandom } from "../src/core/random.js";

const T0 = Date.UTC(2026, 0, 1);
const WORKLOADS = 200;
const STEPS = 1000;

function syntheticTrace(): string {
  const lines = ["ts,workload,image,user,cpu,mem"];
  const random = seededRandom(42);
  for (let step = 0; step < STEPS; step++) {
    for (let w = 0; w < WORKLOADS; w++) {
      const daily = 1 + Math.sin((2 * Math.PI * step) / 288);
      lines.push(`${T0 + step * 300_000},w${w},image-${w % 20},user-${w},${(0.2 * daily + random() * 0.3).toFixed(4)},${Math.round(5e8 * daily + random() * 1e8)}`);
    }
  }
  return lines.join("\n") + "\n";
}

const file = join(tmpdir(), `augur-bench-${process.pid}.csv`);
writeFileSync(file, syntheticTrace());
const rows = WORKLOADS * STEPS;
const samples = rows * 2; // cpu and mem

async function best(run: () => unknown, repeats = 3): Promise<number> {
  let fastest = Infinity;
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await run();
    fastest = Math.min(fastest, performance.now() - start);
  }
  return fastest;
}

await initTensorflow();
const decodeMs = await best(() => loadCanonical(file));
const reference = { name: "decode the same rows, no policy (rows/s)", value: Math.round(rows / (decodeMs / 1000)) };
const trace = await loadCanonical(file);
// Every policy with its defaults, then augur deciding once an hour (`--decision-seconds 3600`).
const runs: Array<[string, string, number | undefined]> = [...Object.keys(POLICIES).map((name): [string, string, undefined] => [name, name, undefined]), ["augur-hourly", "augur", 3_600_000]];
const report = (label: string, ms: number) => {
  const value = Math.round(samples / (ms / 1000));
  console.log(JSON.stringify({ benchmark: `backtest.${label}`, unit: "samples/s", value, reference, ratio: +(value / reference.value).toFixed(4) }));
};
for (const [label, name, decisionMs] of runs) {
  report(label, await best(() => replay(trace, { policies: [POLICIES[name]!({ resources: ["cpu", "mem"], decisionMs })], resources: ["cpu", "mem"], sampleWorkloads: 0 }), 2));
}
// The default policy with the global models of an earlier run loaded and no
// training in the measured replay (predictions every step, as above): the
// per-sample cost without the training's fixed cost (about a second per
// resource and training on the WASM backend).
const learned = augurPolicy();
replay(trace, { policies: [learned], resources: ["cpu", "mem"], sampleWorkloads: 0 });
const models = augurModels(learned.exportModels!());
report("augur-pretrained", await best(() => replay(trace, { policies: [augurPolicy({ learn: false, models })], resources: ["cpu", "mem"], sampleWorkloads: 0 }), 2));

// The default policies together (what `augur backtest` runs), in one thread and
// on one thread per core (`--workers`, one shard per policy and resource):
// wall time, in samples of the trace per second; the one-thread run is the
// reference of the parallel one.
const threads = availableParallelism();
const together = (ms: number) => Math.round(samples / (ms / 1000));
const oneThread = together(await best(() => replay(trace, { policies: DEFAULT_POLICIES.map((name) => POLICIES[name]!({ resources: ["cpu", "mem"] })), resources: ["cpu", "mem"], sampleWorkloads: 0 }), 2));
const shared = shareTrace(trace);
const parallel = together(
  await best(() => replayInParallel({ trace: shared, policies: DEFAULT_POLICIES, resources: ["cpu", "mem"], context: {}, workers: threads, exportModels: false, sampleWorkloads: 0 }), 2),
);
console.log(
  JSON.stringify({
    benchmark: "backtest.default-policies-parallel",
    unit: "samples/s",
    value: parallel,
    threads,
    reference: { name: `${DEFAULT_POLICIES.join(",")} in one thread (samples/s)`, value: oneThread },
    ratio: +(parallel / oneThread).toFixed(4),
  }),
);
