import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { before, describe, it } from "node:test";
import { loadAlibabaGenai, loadBitbrains, loadCanonical } from "../../src/backtest/adapters/index.js";
import { clairvoyantSlack, ScoreAccumulator } from "../../src/backtest/metrics.js";
import { augurPolicy } from "../../src/backtest/policies/augur.js";
import { augurLivePolicy } from "../../src/backtest/policies/augur-live.js";
import { autopilotPolicy } from "../../src/backtest/policies/autopilot.js";
import { vpaPolicy } from "../../src/backtest/policies/vpa.js";
import { staticPolicy, type BacktestPolicy, type PairRef } from "../../src/backtest/policy.js";
import { DEFAULT_LIMITS, replay, type ReplayResult } from "../../src/backtest/replay.js";
import { renderReport } from "../../src/backtest/report.js";
import { checkBacktestOptions, runBacktest, type BacktestOptions } from "../../src/backtest/run.js";
import { replayInParallel } from "../../src/backtest/parallel.js";
import { ValidationError } from "../../src/core/errors.js";
import { DEFAULT_WINDOW_SECONDS, WindowAggregator } from "../../src/aggregate/windows.js";
import { allocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import type { Profile, WindowAggregate } from "../../src/core/types.js";
import { traceSamples } from "../../src/pipeline/trace-samples.js";
import { CHUNK_BYTES, forEachCsvRecord, forEachLine, LineFile, MAX_LINE_CHARS, type WorkloadSeries } from "../../src/backtest/trace.js";
import { USER_FACTOR_BOUNDS } from "../../src/core/user-factor.js";
import { DecayingHistogram } from "../../src/forecast/decaying-histogram.js";
import { histogramOptionsFor, PooledMisses } from "../../src/forecast/ensemble.js";
import { GlobalLearners } from "../../src/forecast/global-learners.js";
import { GLOBAL_FEATURES, initTensorflow } from "../../src/forecast/global-model.js";
import { createModelFactory, DEFAULT_FALLBACK_MODEL } from "../../src/forecast/registry.js";
import { ForecastStage } from "../../src/forecast/stage.js";
import { Metrics } from "../../src/core/metrics.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { EmbeddedTransport } from "../../src/transport/embedded/embedded-transport.js";
import { augur, REPO } from "../cli.js";
import { seededRandom, T0, tempDir } from "../helpers.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/", import.meta.url));
const pair: PairRef = { id: 0, image: "img", user: "u", imageId: 0, userId: 0 };
const MIB = 2 ** 20;
const MIN = 60_000;

// The policies train tfjs models: on the backend augur picks, not tfjs's fallback (which prints a banner).
before(async () => void (await initTensorflow()));

describe("trace adapters", () => {
  it("reads real Bitbrains rows: seconds, cores from %, KB to bytes; skips all-zero rows; rejects duplicate timestamps", async () => {
    const trace = await loadBitbrains(join(fixtures, "bitbrains"));
    const vm1 = trace.workloads.find((w) => w.workload === "vm-1")!;
    assert.equal(vm1.ts.length, 20);
    assert.equal(vm1.ts[0], 1375308176 * 1000);
    assert.ok(Math.abs(vm1.values.cpu![0]! - (12.766666666666667 / 100) * 2) < 1e-12);
    assert.equal(vm1.values.mem![0], 1308620 * 1024);
    assert.equal(vm1.values.net_tx![0], 27.2 * 1024);
    assert.equal(vm1.limits.cpu![0], 2);
    assert.equal(vm1.limits.mem![0], 8388608 * 1024);
    assert.equal(vm1.image, "vm-2c-8g");
    const vm54 = trace.workloads.find((w) => w.workload === "vm-54")!;
    assert.equal(vm54.ts.length, 1, "24 all-zero rows skipped, one of the duplicate pair kept");
    assert.equal(vm54.values.cpu, undefined, "cores = 0: CPU not measured");
    assert.ok(vm54.values.mem![0]! > 1e10);
    assert.ok(trace.rejected.some((r) => /duplicate timestamp/.test(r.reason)));
  });

  it("joins the Alibaba files on (timestamp, container) with duty cycle as GPUs and memory as a fraction", async () => {
    const trace = await loadAlibabaGenai(join(fixtures, "alibaba"));
    assert.equal(trace.workloads.length, 3);
    const first = trace.workloads[0]!;
    assert.ok(first.values.gpu_util!.every((v) => Number.isNaN(v) || (v >= 0 && v <= 1)));
    assert.ok(first.values.gpu_mem!.some((v) => v > 1e9));
    assert.deepEqual(trace.unitless, ["mem"]);
  });

  it("reads the Alibaba metric files that are there, gzipped or as published, and refuses a directory with none", async () => {
    const { dir, cleanup } = tempDir();
    try {
      // Only GPU memory, as the upstream tarball extracts it (plain CSV, its own column order).
      writeFileSync(join(dir, "pod_gpu_memory_used_bytes_anon.csv"), "timestamp_anon,value,container_ip\n1662858720.0,2e10,abc\n1662858777.0,2.1e10,abc\n");
      writeFileSync(join(dir, "qps.csv"), "timestamp_anon,value,container_ip,request_type\n1662858720.0,3,abc,x\n");
      const trace = await loadAlibabaGenai(dir);
      assert.equal(trace.workloads.length, 1);
      assert.deepEqual(Object.keys(trace.workloads[0]!.values), ["gpu_mem"]);
      assert.deepEqual([...trace.workloads[0]!.values.gpu_mem!], [2e10, 2.1e10]);
      assert.deepEqual(trace.unitless, [], "no container-memory fraction in this trace");
      const empty = join(dir, "empty");
      mkdirSync(empty);
      writeFileSync(join(empty, "qps.csv"), "timestamp_anon,value,container_ip,request_type\n");
      await assert.rejects(() => loadAlibabaGenai(empty), /no Alibaba GenAI metric file \(pod_gpu_duty_cycle_anon\.csv\[\.gz\]/);
    } finally {
      cleanup();
    }
  });

  it("streams CSV records: quoted cells with commas, quotes and line breaks, CRLF, a BOM, UTF-8 across chunks; broken quoting costs its record only", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const file = join(dir, "q.csv");
      const wide = "x" + "€".repeat(700_000); // three-byte characters over the reader's chunks
      const text = Buffer.from(
        "\uFEFFa,b,c\r\n" +
          '1,"x,y","say ""hi"""\r\n' +
          '2,"two\nlines",z\n' +
          "\n" +
          '3,a"b,c\n' +
          '4,"closed"junk,c\n' +
          `5,${wide},end\n` +
          "6,last,row\n" +
          '7,"never closed,\n8,swallowed,too',
      );
      assert.equal(text[CHUNK_BYTES]! & 0xc0, 0x80, "a character straddles the first chunk's end");
      writeFileSync(file, text);
      const records: Array<[number, string[]]> = [];
      const bad: Array<[number, string]> = [];
      await forEachCsvRecord(file, (cells, line) => records.push([line, cells]), (reason, line) => bad.push([line, reason]));
      assert.deepEqual(records.slice(0, 3), [
        [1, ["a", "b", "c"]],
        [2, ["1", "x,y", 'say "hi"']],
        [3, ["2", "two\nlines", "z"]],
      ]);
      assert.deepEqual(records[3], [8, ["5", wide, "end"]]);
      assert.deepEqual(records[4], [9, ["6", "last", "row"]]);
      assert.equal(records.length, 5);
      assert.deepEqual(bad, [
        [6, "a quote inside the unquoted cell 2"],
        [7, "text after the closing quote of cell 2"],
        [10, "a quoted cell is not closed before the end of the file"],
      ]);
    } finally {
      cleanup();
    }
  });

  it("writes lines in large chunks, gzipped by name, and names a file it cannot write", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const lines = Array.from({ length: 200_000 }, (_, i) => `${i},w${i % 13},é€`); // several chunks
      for (const name of ["out.csv", "out.csv.gz"]) {
        const out = new LineFile(join(dir, name));
        for (const line of lines) await out.write(line);
        await out.close();
        const back: string[] = [];
        await forEachLine(join(dir, name), (line) => void back.push(line));
        assert.deepEqual(back, lines, name);
      }
      assert.equal(readFileSync(join(dir, "out.csv.gz"))[0], 0x1f, "gzip magic");
      assert.throws(() => new LineFile(join(dir, "no", "such", "dir.csv")), /cannot write .*ENOENT/);
    } finally {
      cleanup();
    }
  });

  it("refuses a line too long to hold, a truncated gzip and an unreadable path with a clear error", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const long = join(dir, "long.csv");
      writeFileSync(long, "ts,workload\n" + "x".repeat(MAX_LINE_CHARS + 10));
      await assert.rejects(() => forEachLine(long, () => {}), /line 2 is longer than/);
      const rows = ["ts,workload,image,user,cpu", ...Array.from({ length: 20_000 }, (_, i) => `${T0 + i * 60_000},w${i % 7},img,u,${Math.random()}`)].join("\n");
      const whole = gzipSync(rows);
      writeFileSync(join(dir, "cut.csv.gz"), whole.subarray(0, whole.length >> 1));
      await assert.rejects(() => loadCanonical(join(dir, "cut.csv.gz")), /is not valid gzip/);
      writeFileSync(join(dir, "whole.csv.gz"), whole);
      assert.equal((await loadCanonical(join(dir, "whole.csv.gz"))).rows, 20_000);
      await assert.rejects(() => forEachLine(dir, () => {}), /cannot read trace .*EISDIR/);
    } finally {
      cleanup();
    }
  });

  it("rejects hostile canonical rows with a reason each, and keeps the good ones", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const file = join(dir, "t.csv");
      writeFileSync(
        file,
        [
          "ts,workload,image,user,cpu,mem",
          `${T0},w1,img,u,0.5,1000`,
          `${T0 + 60000},w1,img,u,NaN,1000`,
          `${T0 + 120000},w1,img,u,-1,1000`,
          `1700000000,w1,img,u,0.5,1000`,
          `${T0 + 180000},w\u00002,img,u,0.5,1000`,
          `${T0 + 240000},w1,img,u,0.5`,
          `${T0 + 300000},w1,other-image,u,0.5,1000`,
          `${T0 + 360000},w1,img,u,,`,
          `${T0},w1,img,u,0.7,1000`,
        ].join("\n"),
      );
      const trace = await loadCanonical(file);
      assert.equal(trace.workloads[0]!.ts.length, 2);
      const reasons = trace.rejected.map((r) => r.reason).join("\n");
      for (const pattern of [/cpu is not a finite number/, /cpu is negative/, /epoch milliseconds/, /control character/, /expected 6 cells/, /changes image or user/, /duplicate timestamp/]) {
        assert.match(reasons, pattern);
      }
      writeFileSync(file, "time,who\n1,2\n");
      await assert.rejects(() => loadCanonical(file), /header lacks the 'ts' column/);
      writeFileSync(file, "ts,workload,image,user,cpuu\n");
      await assert.rejects(() => loadCanonical(file), /unknown columns cpuu/);
      await assert.rejects(() => loadCanonical(join(dir, "missing.csv")), /does not exist/);
      writeFileSync(join(dir, "bad.csv.gz"), "not gzip");
      await assert.rejects(() => loadCanonical(join(dir, "bad.csv.gz")), /not valid gzip/);
    } finally {
      cleanup();
    }
  });
});

describe("metrics", () => {
  it("computes slack, violations, unmet demand, OOMs and changes on a tiny trace, as by hand", () => {
    const score = new ScoreAccumulator(true);
    // workload 0: limits 10, 10, 20 against usage 5, 12, 20 over two hours
    score.add(0, T0, 5, 10, true);
    score.add(0, T0 + 3_600_000, 12, 10, false);
    score.add(0, T0 + 7_200_000, 20, 20, false);
    const s = score.result();
    // slack: (5 + 0 + 0) / (10 + 10 + 20); unmet: 2 / 37; violations 1 of 3; one change over 3 h (2 h span + one 1 h step)
    assert.equal(s.slack, 5 / 40);
    assert.equal(s.unmet, 2 / 37);
    assert.equal(s.violation_rate, 1 / 3);
    assert.equal(s.oom_events, 1);
    assert.ok(Math.abs(s.changes_per_day - 1 / (3 / 24)) < 1e-9);
    assert.deepEqual(s.cold_start, { slack: 0.5, violation_rate: 0, steps: 1 });
  });

  it("computes the clairvoyant references by hand: each period's peak as the limit", () => {
    const HOUR = 3_600_000;
    const base = Math.floor(T0 / (24 * HOUR)) * 24 * HOUR; // a UTC midnight: periods align
    // usage 1, 3 in the first hour, 2, NaN (not measured), 2 in the second
    const workload = { ts: Float64Array.from([0, 30, 60, 80, 100].map((m) => base + m * MIN)), values: { mem: Float64Array.from([1, 3, 2, Number.NaN, 2]) } };
    const slack = clairvoyantSlack([workload], "mem");
    // 1 h: limits 3,3 | 2,2 → (2 + 0 + 0 + 0) / 10; 6 h, 24 h and the whole trace: 3 × 4 steps → (12 − 8) / 12
    assert.equal(slack["1h"], 2 / 10);
    assert.equal(slack["6h"], 4 / 12);
    assert.equal(slack["trace"], 4 / 12);
    // 15 min: every measured step its own period except none share one → no slack
    assert.equal(slack["15m"], 0);
    assert.equal(clairvoyantSlack([workload], "cpu")["1h"], null, "a resource the trace lacks has no reference");
  });
});

describe("baselines, by hand", () => {
  it("static: the trace's limit, else the default", () => {
    assert.equal(staticPolicy().limit(pair, "cpu", T0, 3), 3);
  });

  it("vpa: one 0.5-core sample gives P90 = 0.5111 (upper bucket edge) × 1.15 = 0.587 cores", () => {
    const vpa = vpaPolicy();
    assert.equal(vpa.limit(pair, "cpu", T0, 1), 1, "no data: the fallback");
    vpa.observe(pair, "cpu", T0, 0.5, 0, 1);
    assert.equal(vpa.limit(pair, "cpu", T0 + MIN, 1), 0.587); // 0.5111 × 1.15 = 0.58777, truncated to millicores
  });

  it("vpa: small usage is floored at 25 millicores and 250 MiB", () => {
    const vpa = vpaPolicy();
    vpa.observe(pair, "cpu", T0, 0.001, 0, 1);
    vpa.observe(pair, "mem", T0, 1e6, 0, 1e9);
    assert.equal(vpa.limit(pair, "cpu", T0 + MIN, 1), 0.025);
    assert.equal(vpa.limit(pair, "mem", T0 + MIN, 1e9), 250 * MIB);
  });

  it("vpa: memory is the 24 h peak, and an OOM in a pod older than 12 h raises it to max(used + 100 MiB, used × 1.2)", () => {
    const vpa = vpaPolicy();
    vpa.observe(pair, "mem", T0, 400e6, 0, 1e9);
    vpa.observe(pair, "mem", T0 + MIN, 500e6, 0, 1e9); // replaces the interval's peak
    const before = vpa.limit(pair, "mem", T0 + 2 * MIN, 1e9);
    assert.ok(Math.abs(before - 511.1e6 * 1.15) / before < 0.002, `500 MB → ${before}`);
    // Young pod: the updater keeps the allocation while it stays within [lower, upper].
    const oomAt = T0 + 13 * 60 * MIN;
    vpa.observe(pair, "mem", oomAt, 900e6, 0, before); // usage over the limit: an OOM
    const after = vpa.limit(pair, "mem", oomAt + MIN, 1e9);
    // RecordOOM: used = max(request, peak) = request; needed = max(used + 100 MiB, used × 1.2); target = P90(needed) × 1.15
    const needed = Math.max(before + 100 * MIB, before * 1.2);
    assert.ok(after >= needed * 1.15 * 0.99 && after <= needed * 1.15 * 1.1, `after OOM ${after}, needed ${needed}`);
  });

  it("vpa: a young pod keeps its allocation while it stays within [lower, upper]", () => {
    const vpa = vpaPolicy();
    vpa.observe(pair, "cpu", T0, 0.5, 0, 1);
    const first = vpa.limit(pair, "cpu", T0 + MIN, 1);
    vpa.observe(pair, "cpu", T0 + 2 * MIN, 0.55, 0, first);
    assert.equal(vpa.limit(pair, "cpu", T0 + 3 * MIN, 1), first);
  });

  it("autopilot: recommends the load-adjusted P95 × 1.15 once a 5-minute window closes, and forgets with a 12 h half-life", () => {
    const autopilot = autopilotPolicy();
    for (let i = 0; i < 5; i++) autopilot.observe(pair, "cpu", T0 + i * MIN, 1, 0, 2);
    assert.equal(autopilot.limit(pair, "cpu", T0 + 4 * MIN + 1, 2), 2, "window still open: fallback");
    const high = autopilot.limit(pair, "cpu", T0 + 5 * MIN, 2);
    // 1 core falls in the VPA-scheme bucket [0.967, 1.0157): upper edge × 1.15
    assert.ok(Math.abs(high - 1.0157 * 1.15) < 0.002, `1 core → ${high}`);
    // Two days of 0.1 core: the old load has decayed (2^-4) below 5% of the area.
    for (let i = 5; i < 5 + 48 * 60; i++) autopilot.observe(pair, "cpu", T0 + i * MIN, 0.1, 0, 2);
    const low = autopilot.limit(pair, "cpu", T0 + (5 + 48 * 60) * MIN, 2);
    assert.ok(low < 0.13, `after two days of 0.1 core → ${low}`);
  });

  it("autopilot: memory is the window peak, P98, with a 48 h half-life", () => {
    const autopilot = autopilotPolicy();
    autopilot.observe(pair, "mem", T0, 100e6, 0, 1e9);
    autopilot.observe(pair, "mem", T0 + MIN, 300e6, 0, 1e9);
    autopilot.observe(pair, "mem", T0 + 2 * MIN, 200e6, 0, 1e9);
    const limit = autopilot.limit(pair, "mem", T0 + 5 * MIN, 1e9);
    assert.ok(limit > 300e6 * 1.15 && limit < 300e6 * 1.15 * 1.06, `peak 300 MB → ${limit}`);
  });
});

describe("replay", () => {
  it("asks every limit before showing that step's usage to any policy", () => {
    const events: string[] = [];
    const spy: BacktestPolicy = {
      name: "spy",
      limit: (p, _r, ts) => {
        events.push(`limit ${p.image} ${ts}`);
        return 1;
      },
      observe: (p, _r, ts) => {
        events.push(`observe ${p.image} ${ts}`);
      },
    };
    const series = (workload: string, image: string) => ({
      workload,
      image,
      user: "u",
      ts: Float64Array.from([T0, T0 + MIN]),
      values: { cpu: Float64Array.from([0.5, 0.6]) },
      limits: {},
    });
    replay({ name: "t", rows: 4, rejected: [], workloads: [series("a", "i1"), series("b", "i1")] }, { policies: [spy], resources: ["cpu"] });
    assert.deepEqual(events, [`limit i1 ${T0}`, `limit i1 ${T0}`, `observe i1 ${T0}`, `observe i1 ${T0}`, `limit i1 ${T0 + MIN}`, `limit i1 ${T0 + MIN}`, `observe i1 ${T0 + MIN}`, `observe i1 ${T0 + MIN}`]);
  });
});

describe("forecasts in the report's series", () => {
  it("vpa's P90 before its margin, autopilot's newest percentile before its margin, augur's and augur-live's chosen source (their limit is that times one of its margins); asked after the limit, changing nothing", () => {
    const vpa = vpaPolicy();
    assert.equal(vpa.forecast!(pair, "cpu", T0), null, "no data: no forecast");
    vpa.observe(pair, "cpu", T0, 0.5, 0, 1);
    assert.equal(vpa.limit(pair, "cpu", T0 + MIN, 1), 0.587);
    assert.ok(Math.abs(vpa.forecast!(pair, "cpu", T0 + MIN)! - 0.5111) < 1e-4, "P90 = 0.5111, the upper bucket edge (× 1.15 = the limit)");

    // A steady, a spiky and a stepping workload, sampled for the report; every step's forecasts kept beside its limits.
    const steps = 600;
    const series = (workload: string, value: (k: number) => number): WorkloadSeries => ({
      workload,
      image: workload,
      user: "u",
      ts: Float64Array.from({ length: steps }, (_, k) => T0 + k * MIN),
      values: { cpu: Float64Array.from({ length: steps }, (_, k) => value(k)) },
      limits: {},
    });
    const trace = { name: "t", rows: 3 * steps, rejected: [], workloads: [series("steady", () => 0.5), series("spiky", (k) => (k % 17 === 0 ? 2 : 0.3)), series("stepping", (k) => (k < 300 ? 0.2 : 1.2))] };
    const run = () => replay(trace, { policies: [vpaPolicy(), autopilotPolicy(), augurPolicy(), augurLivePolicy()], resources: ["cpu"], sampleWorkloads: 3 });
    const replayed = run();
    assert.equal(replayed.series.length, 3);
    for (const { workload, points } of replayed.series) {
      const late = points.slice(100);
      for (const name of ["vpa", "autopilot", "augur", "augur-live"]) assert.ok(late.every((p) => p.forecasts?.[name] !== undefined), `${workload}: ${name} forecasts every step once it has data`);
      for (const p of late) assert.ok(p.limits.autopilot! >= p.forecasts!.autopilot! * 1.15 - 1e-9, "autopilot's limit is the hour's highest percentile × 1.15");
      // augur's limit is its forecast × the chosen margin, or higher while the bump after an overrun holds it (the steady workload has none).
      const margined = late.filter((p) => [1, 1.1, 1.25, 1.5, 2].some((m) => Math.abs(p.limits.augur! / p.forecasts!.augur! - m) < 1e-9));
      if (workload === "steady") assert.equal(margined.length, late.length, "steady: every step at forecast × margin");
      for (const name of ["augur", "augur-live"]) assert.ok(late.every((p) => p.limits[name]! >= p.forecasts![name]! - 1e-9), `${workload}: ${name}'s limit is never below its forecast`);
      if (workload === "steady") assert.ok(late.every((p) => [1, 1.1, 1.25, 1.5, 2].some((m) => Math.abs(p.limits["augur-live"]! / p.forecasts!["augur-live"]! - m) < 1e-9)), "steady: augur-live's limit is its forecast × a margin");
    }
    // Asking for forecasts changes nothing: the scores are those of a replay that keeps no series.
    const unsampled = replay(trace, { policies: [vpaPolicy(), autopilotPolicy(), augurPolicy(), augurLivePolicy()], resources: ["cpu"], sampleWorkloads: 0 });
    assert.deepEqual(unsampled.scores, replayed.scores);
  });

  it("draws each forecast dotted beside the dashed limit in the report", () => {
    const points = Array.from({ length: 10 }, (_, k) => ({ ts: T0 + k * MIN, usage: 0.4, limits: { vpa: 0.6, static: 1 }, ...(k > 2 ? { forecasts: { vpa: 0.5 } } : {}) }));
    const result = { trace: "t", train: null, format: "canonical", samples: 10, workloads: 1, elapsed_ms: 1, rejected: 0, policies: { static: {}, vpa: {} } };
    const html = renderReport(result, [{ workload: "w", resource: "cpu", points }]);
    assert.equal(html.match(/stroke-dasharray="1 2"/g)?.length, 1, "one dotted forecast line, vpa's, over the steps that have one");
    assert.equal(html.match(/stroke-dasharray="4 2"/g)?.length, 2, "a dashed limit per policy");
  });
});

/** The upper edge of x's bucket in augur's CPU histograms: any quantile of a histogram that holds only x. */
function bucketEdge(x: number): number {
  const h = new DecayingHistogram({ ...histogramOptionsFor("cpu"), halfLifeMs: 24 * 60 * MIN });
  h.add(x, 1, T0);
  return h.percentile(0.9);
}

describe("augur policy", () => {
  it("puts idle pairs away and brings them back exactly: the same limits as with every pair kept", () => {
    // 40 pairs (8 images, 5 users), the first starting every half hour, each running three times 8 hours apart: idle in between.
    const random = seededRandom(5);
    const workloads: WorkloadSeries[] = [];
    for (let p = 0; p < 40; p++) {
      const level = 0.2 + 2 * random();
      for (let run = 0; run < 3; run++) {
        const start = T0 + p * 30 * MIN + run * 8 * 60 * MIN;
        const steps = 30 + Math.floor(random() * 30);
        workloads.push({
          workload: `w${p}-${run}`,
          image: `img${p % 8}`,
          user: `u${p % 5}`,
          ts: Float64Array.from({ length: steps }, (_, k) => start + k * 5 * MIN),
          values: { cpu: Float64Array.from({ length: steps }, (_, k) => level * (0.6 + 0.8 * random()) + (k === 20 ? level : 0)), mem: Float64Array.from({ length: steps }, (_, k) => 1e9 * level * (1 + k / steps) * (0.9 + 0.2 * random())) },
          limits: {},
        });
      }
    }
    const trace = { name: "runs", rows: workloads.reduce((n, w) => n + w.ts.length, 0), rejected: [], workloads };
    const scored = (policy: BacktestPolicy) => {
      const result = replay(trace, { policies: [policy], resources: ["cpu", "mem"], sampleWorkloads: 40 });
      return { scores: result.scores, series: result.series };
    };
    const keptAll = scored(augurPolicy());
    const sweeps: number[] = [];
    const putAway = scored(augurPolicy({ keepPairs: 6, idleMs: 60 * MIN, onPutAway: (pairs) => sweeps.push(pairs) }));
    assert.ok(sweeps.reduce((a, b) => a + b, 0) >= 40, `pairs put away: ${sweeps.join(",")}`);
    assert.deepEqual(putAway, keptAll);
  });

  it("tracks a steady workload tightly and raises the limit at once after an overrun", () => {
    const policy = augurPolicy();
    let limit = 0;
    for (let i = 0; i < 2000; i++) {
      limit = policy.limit(pair, "mem", T0 + i * 5 * MIN, 8e9);
      policy.observe(pair, "mem", T0 + i * 5 * MIN, 1e9, 0, limit);
    }
    assert.ok(limit >= 1e9 && limit <= 1.3e9, `steady 1 GB → limit ${limit}`);
    const spikeTs = T0 + 2000 * 5 * MIN;
    const before = policy.limit(pair, "mem", spikeTs, 8e9);
    policy.observe(pair, "mem", spikeTs, 3e9, 0, before);
    const after = policy.limit(pair, "mem", spikeTs + 5 * MIN, 8e9);
    assert.ok(after >= 3e9 * 1.2, `after a 3 GB overrun → ${after}`);
  });

  it("with a decision period, holds the limit between decisions except to rise after an overrun", () => {
    const policy = augurPolicy({ decisionMs: 60 * MIN });
    const limits: number[] = [];
    for (let i = 0; i < 600; i++) {
      const ts = T0 + i * 5 * MIN;
      const usage = 1e9 + (i % 7) * 5e7; // wobbles, never jumps
      const limit = policy.limit(pair, "mem", ts, 8e9);
      limits.push(limit);
      policy.observe(pair, "mem", ts, usage, 0, limit);
    }
    // decisions at the first step and then every 12 steps (an hour of 5-minute steps): nothing changes in between
    for (let i = 2; i < limits.length; i++) {
      if ((i - 1) % 12 !== 0) assert.equal(limits[i], limits[i - 1], `step ${i} changed the limit between decisions`);
    }
    const ts = T0 + 600 * 5 * MIN;
    const before = policy.limit(pair, "mem", ts, 8e9);
    policy.observe(pair, "mem", ts, 4e9, 0, before);
    assert.ok(policy.limit(pair, "mem", ts + 5 * MIN, 8e9) >= 4e9 * 1.2, "an overrun raises the limit before the next decision");
  });

  it("starts a never-seen pair from its image's history", () => {
    const policy = augurPolicy();
    const other: PairRef = { ...pair, id: 1, user: "v", userId: 1 };
    for (let i = 0; i < 100; i++) policy.observe(pair, "cpu", T0 + i * MIN, 0.5, 0, 1);
    const cold = policy.limit(other, "cpu", T0 + 101 * MIN, 4);
    assert.ok(cold > 0.5 && cold < 1, `cold start from (img, *) → ${cold}`);
  });

  it("keeps a young pair on its peers' level until its own history says better; a pair with no peers starts from its first steps", () => {
    const policy = augurPolicy();
    const young: PairRef = { ...pair, id: 1, user: "v", userId: 1 };
    for (let i = 0; i < 100; i++) policy.observe(pair, "cpu", T0 + i * MIN, 1, 0, 4);
    const peers = bucketEdge(1) * 1.15; // (img, *) holds the other pair's 1 core: the upper edge of its bucket, × 1.15
    const limits: number[] = [];
    for (let i = 0; i < 400; i++) {
      const ts = T0 + (100 + i) * MIN;
      limits.push(policy.limit(young, "cpu", ts, 4));
      policy.observe(young, "cpu", ts, 0.1, 1, limits[i]!);
    }
    assert.equal(limits[0], peers, "no history: the peers' level");
    assert.equal(limits[1], peers, "one step of its own: still the peers' level (not twice that step)");
    assert.ok(limits[399]! < 0.2, `after 400 steps at 0.1 core its own history rules: ${limits[399]}`);
    // Alone (every level holds only its own usage): its own first step, with the widest margin.
    const lone = augurPolicy();
    lone.observe(pair, "cpu", T0, 0.5, 0, 4);
    assert.equal(lone.limit(pair, "cpu", T0 + MIN, 4), 1);
  });

  it("scales the image's level by the user's factor for a pair the user never ran", () => {
    // u ran image A at 0.4 cores where v ran it at 1: u's factor is P90(A, u) / P90(A, *) = E(0.4) / E(1), with
    // E(x) the upper edge of x's bucket; (B, *) knows only v's 1 core, so (B, u) starts at E(1) × 1.15 × factor.
    const edge = bucketEdge;
    const ref = (id: number, image: string, user: string): PairRef => ({ id, image, user, imageId: image === "A" ? 0 : 1, userId: user === "u" ? 0 : 1 });
    const run = (uUsage: number) => {
      const policy = augurPolicy();
      for (let i = 0; i < 100; i++) {
        policy.observe(ref(0, "A", "v"), "cpu", T0 + i * MIN, 1, 0, 4);
        policy.observe(ref(1, "A", "u"), "cpu", T0 + i * MIN, uUsage, 1, 4);
        policy.observe(ref(2, "B", "v"), "cpu", T0 + i * MIN, 1, 2, 4);
      }
      return policy.limit(ref(3, "B", "u"), "cpu", T0 + 101 * MIN, 4);
    };
    const close = (actual: number, expected: number) => assert.ok(Math.abs(actual - expected) <= 1e-9 * expected, `${actual} ≠ ${expected}`);
    close(run(0.4), edge(1) * 1.15 * (edge(0.4) / edge(1)));
    close(run(1), edge(1) * 1.15); // the same as everyone: factor 1
    close(run(0.01), edge(1) * 1.15 * USER_FACTOR_BOUNDS.min); // far below: clamped
    // A user with no other pair has no factor.
    const policy = augurPolicy();
    for (let i = 0; i < 100; i++) policy.observe(ref(2, "B", "v"), "cpu", T0 + i * MIN, 1, 2, 4);
    close(policy.limit(ref(3, "B", "u"), "cpu", T0 + 101 * MIN, 4), edge(1) * 1.15);
  });
});

describe("augur-live policy", () => {
  // Pairs alone: each pair's profile is a function of its own windows. Pooled (the default), it also depends on the
  // order of all pairs' windows, which the stage and the policy fold alike, and on the fallback levels' limits.
  for (const poolAcrossPairs of [false, true]) {
    it(`sets each step's limit the forecast stage's profile held then: the stage code, fed the trace's windows, gives the same limits (${poolAcrossPairs ? "pooled, with the peers' prior" : "pairs alone"})`, async () => {
      const { dir, cleanup } = tempDir();
      try {
        // 6 pairs (two workloads of one of them) of 3 images and 2 users (each user runs every image, at its own
        // level: the user factor scales the image's level in the prior), one sample a minute for 6 hours, bursty;
        // workload w samples w seconds into each minute, so that pairs' windows close (and fold) in one order in
        // the replay and here.
        const random = seededRandom(11);
        const rows = ["ts,workload,image,user,cpu,mem"];
        for (let step = 0; step < 360; step++) {
          for (let w = 0; w < 7; w++) {
            const pairOf = Math.min(w, 5);
            const burst = random() < 0.03 ? 3 : 1;
            rows.push(`${T0 + step * MIN + w * 1000},w${w},img-${pairOf % 3},u${pairOf % 2},${(0.3 * (1 + pairOf) * burst * (0.8 + 0.2 * random())).toFixed(4)},${Math.round(2e8 * (1 + pairOf) * (0.9 + 0.1 * random()))}`);
          }
          // From the third hour, a pair of its own image and user, ten times the others' size: its image's and its
          // user's levels hold its own windows only (no prior from them), everyone's level the others' too.
          if (step >= 120) rows.push(`${T0 + step * MIN + 7000},w7,img-solo,u-solo,${(3 * (0.8 + 0.2 * random())).toFixed(4)},${Math.round(3e9 * (0.9 + 0.1 * random()))}`);
          // A late user: from the second hour on an image others run, at four times their size (the image's level
          // holds both); from the fourth hour on another such image, whose new run gets the image's level scaled by
          // the user's factor (above 1).
          if (step >= 100) rows.push(`${T0 + step * MIN + 9000},w9,img-2,u-late,${(4 * 0.9 * (0.8 + 0.2 * random())).toFixed(4)},${Math.round(4 * 6e8 * (0.9 + 0.1 * random()))}`);
          if (step >= 200) rows.push(`${T0 + step * MIN + 8000},w8,img-1,u-late,${(0.5 * (0.8 + 0.2 * random())).toFixed(4)},${Math.round(4e8 * (0.9 + 0.1 * random()))}`);
          // The late user, for two minutes, on a third image, far above its others: a pair of fewer than minWindows
          // windows, which the engine's user factor leaves out (the prior's counts it).
          if (step === 150 || step === 151) rows.push(`${T0 + step * MIN + 12_000},w12,img-0,u-late,6,${8e9}`);
          // A new image run for two minutes, then by another new user: its level has two windows, fewer than the
          // engine's minWindows, so the second user's new run gets everyone's.
          if (step === 300 || step === 301) rows.push(`${T0 + step * MIN + 10_000},w10,img-3,u-brief,0.2,${2e8}`);
          if (step >= 303) rows.push(`${T0 + step * MIN + 11_000},w11,img-3,u-after,0.3,${3e8}`);
        }
        const file = join(dir, "trace.csv");
        writeFileSync(file, rows.join("\n") + "\n");
        const trace = await loadCanonical(file);

        // The backtest: every limit augur-live set, per pair and step.
        const live = augurLivePolicy({ poolAcrossPairs });
        const given = new Map<string, number>();
        const recording: BacktestPolicy = {
          name: live.name,
          limit(pair, resource, ts, fallback) {
            const limit = live.limit(pair, resource, ts, fallback);
            given.set(`${pair.image}|${pair.user}|${resource}|${ts}`, limit);
            return limit;
          },
          observe: (...args) => live.observe(...args),
        };
        replay(trace, { policies: [recording], resources: ["cpu", "mem"], sampleWorkloads: 0 });

        // The live stages: the same samples windowed by the aggregate stage's code into the forecast stage.
        const store = new ProfileStore(join(dir, "data"));
        const transport = new EmbeddedTransport();
        const stage = new ForecastStage(transport, store, createModelFactory("augur-ensemble", { poolAcrossPairs }), new Metrics(), {
          cacheKeys: 2_000,
          levels: "inline",
          fallbackFactory: createModelFactory(DEFAULT_FALLBACK_MODEL, {}),
        });
        const sizeMs = DEFAULT_WINDOW_SECONDS * 1000;
        const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs, slideMs: sizeMs, allowedLatenessMs: 0, sketchAccuracy: 0.01 });
        const profiles: Profile[] = [];
        const levelProfiles: Profile[] = [];
        let offset = 0;
        const fold = async (windows: WindowAggregate[]) => {
          const records = windows.map((value) => ({ topic: "augur.windows", partition: 0, offset: offset++, key: `${value.image}|${value.user}`, value, timestamp: value.windowEnd, headers: {} }));
          if (records.length === 0) return;
          for (const profile of await stage.handle(records)) (profile.level === "exact" ? profiles : levelProfiles).push(profile);
        };
        for (const sample of traceSamples(trace)) await fold(aggregator.add(sample).closed);
        await fold(aggregator.flush());
        store.close();
        await transport.close();

        // A pair with no profile yet: what the allocation engine gives a new run (`resolve`: the level and the user
        // factor), asked of the engine itself over the profiles in force then.
        const config = allocationConfig.parse({});
        const newRun = (image: string, user: string, resource: "cpu" | "mem", ts: number): { level: string; limit: number } => {
          const inForce = (list: Profile[]) => [...new Map(list.filter((p) => p.version <= ts).map((p) => [`${p.image}|${p.user}`, p])).values()];
          const exact = inForce(profiles);
          const general = inForce(levelProfiles);
          const then = {
            getProfile: (i: string, u: string) => [...exact, ...general].find((p) => p.image === i && p.user === u) ?? null,
            profilesOfUser: (u: string) => exact.filter((p) => p.user === u),
          } as unknown as ProfileStore;
          const resolved = new AllocationEngine(config, then, { cpu: 1, memory: 1, gpus: 0 }, "n", createScaler(config.scaler)).resolve(image, user);
          if (!resolved.profile) return { level: "default", limit: DEFAULT_LIMITS[resource] };
          const factor = resolved.userFactor[resource === "cpu" ? "cpu" : "memory"];
          const level = resolved.level !== "image" || factor === 1 ? resolved.level : factor > 1.03 ? "image × the user's factor" : `image × ${factor}`;
          return { level, limit: resolved.profile.resources[resource]!.limit * factor };
        };
        let compared = 0;
        const fallbacks: Record<string, number> = {};
        for (const [key, limit] of given) {
          const [image, user, resource, ts] = key.split("|") as [string, string, "cpu" | "mem", string];
          const inForce = profiles.filter((p) => p.image === image && p.user === user && p.version <= Number(ts)).at(-1);
          if (!inForce) {
            const expected = newRun(image, user, resource, Number(ts));
            assert.equal(limit, expected.limit, `${key}: no profile yet, a new run's (${expected.level})`);
            fallbacks[expected.level] = (fallbacks[expected.level] ?? 0) + 1;
            continue;
          }
          assert.equal(limit, inForce.resources[resource]!.limit, key);
          compared++;
        }
        assert.equal(compared + Object.values(fallbacks).reduce((a, b) => a + b, 0), (7 * 360 + 240 + 160 + 260 + 2 + 2 + 57) * 2);
        // A pair's first minute has no profile: those of the first minute had no level either, the solo pair's and
        // the brief and later pairs' image and user none with minWindows windows (everyone's), the late user's images had.
        assert.deepEqual(fallbacks, { default: 7 * 2, global: 3 * 2, image: 2, "image × the user's factor": 2 * 2 });
        // Pooled, young pairs hold their peers' level (the fallback levels' limits) for a while; alone, there is none.
        const fromPrior = profiles.filter((p) => Object.values(p.resources).some((r) => r.model.includes(":prior×"))).length;
        if (poolAcrossPairs) assert.ok(fromPrior > 0, "some profile holds the peers' prior");
        else assert.equal(fromPrior, 0);
      } finally {
        cleanup();
      }
    });
  }
});

describe("augur cold starts", () => {
  it("where every pair is new, picks the peers' quantile by cost and keeps the service level over first steps too", () => {
    // 1,500 pairs, each its own image and user, one starting every minute for 20 one-minute steps at
    // its own level (log-uniform over 0.01–10 cores, ±20%): the peers say little about a new pair.
    const random = seededRandom(11);
    const workloads = Array.from({ length: 1500 }, (_, k) => {
      const level = 10 ** (-2 + 3 * random());
      return {
        workload: `w${k}`,
        image: `i${k}`,
        user: `u${k}`,
        ts: Float64Array.from({ length: 20 }, (_, s) => T0 + (k + s) * MIN),
        values: { cpu: Float64Array.from({ length: 20 }, () => level * (0.8 + 0.4 * random())) },
        limits: {},
      };
    });
    const result = replay({ name: "unique", rows: 30_000, rejected: [], workloads }, { policies: [augurPolicy()], resources: ["cpu"], sampleWorkloads: 1500 });
    // First steps overrun more than later ones; they steer the overrun price too, so the whole stays near 0.3%.
    assert.ok(result.scores.augur!.cpu!.violation_rate <= 0.004, `violations ${result.scores.augur!.cpu!.violation_rate}`);
    // The service level's rule (P99.7 of the peers × 1.15) would start each pair above the peak of all its
    // peers; by cost a late pair starts at about two thirds of it.
    const byStart = [...result.series].sort((a, b) => a.points[0]!.ts - b.points[0]!.ts);
    let peak = 0;
    const ratios: number[] = [];
    for (const series of byStart) {
      if (peak > 0) ratios.push(series.points[0]!.limits.augur! / peak);
      for (const point of series.points) peak = Math.max(peak, point.usage);
    }
    const late = ratios.slice(-300).sort((a, b) => a - b);
    assert.ok(late[150]! < 0.9, `late first-step limits at ${late[150]} of the peers' peak`);
  });
});

describe("a backtest on several threads", () => {
  /** A canonical trace: pairs of six images and twenty users (several pairs a user), daily CPU, memory in steps. */
  function writeTrace(path: string, from: number, steps: number, seed: number): void {
    const random = seededRandom(seed);
    const lines = ["ts,workload,image,user,cpu,mem"];
    for (let step = 0; step < steps; step++) {
      const ts = from + step * MIN;
      for (let w = 0; w < 40; w++) {
        const daily = 1 + Math.sin((2 * Math.PI * (step + 37 * w)) / 1440);
        const mem = (1 + (w % 4)) * 2e8 * (1 + Math.floor(((step + 13 * w) % 240) / 80)) + random() * 2e7;
        lines.push(`${ts},w${w},image-${w % 6},user-${w % 20},${((0.1 + (w % 5) * 0.2) * daily + random() * 0.1).toFixed(4)},${Math.round(mem)}`);
      }
    }
    writeFileSync(path, lines.join("\n") + "\n");
  }

  const sortedSeries = (series: ReplayResult["series"]) => [...series].sort((a, b) => `${a.workload}|${a.resource}`.localeCompare(`${b.workload}|${b.resource}`));

  it("scores, samples, series and saved models equal the replay of every policy in one thread", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const train = join(dir, "train.csv");
      const trace = join(dir, "trace.csv");
      writeTrace(train, T0, 300, 1);
      writeTrace(trace, T0 + 300 * MIN, 360, 2);
      const run = async (workers: number, extra: Partial<BacktestOptions> = {}) => {
        const models = join(dir, `models-${workers}-${extra.loadModels ? "loaded" : "fresh"}.json`);
        const { result, replayed } = await runBacktest({ trace, train, format: "canonical", policies: ["static", "vpa", "autopilot", "augur", "augur-live"], out: join(dir, "r.json"), saveModels: models, workers, ...extra });
        return { result: { ...result, elapsed_ms: 0 }, series: sortedSeries(replayed.series), models: JSON.parse(readFileSync(models, "utf8")) };
      };
      const one = await run(1);
      assert.ok(one.models.policies.augur.models.cpu && one.models.policies.augur.models.mem, "the global models trained in the run (their join is checked)");
      const three = await run(3);
      assert.deepEqual(three.result, one.result);
      assert.deepEqual(three.series, one.series);
      assert.ok(three.series.length > 0 && Object.keys(three.series[0]!.points[0]!.limits).length === 5, "every policy's limits in the sampled series");
      assert.deepEqual(three.models, one.models);
      // From models and calibrations loaded: each shard starts from its resource's.
      const loadModels = join(dir, "models-1-fresh.json");
      const loaded = { loadModels, policies: ["augur"] };
      assert.deepEqual((await run(2, loaded)).models, (await run(1, loaded)).models);
    } finally {
      cleanup();
    }
  });

  it("refuses models a policy cannot use before reading the trace, and a thread's refusal stays a usage error", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const models = join(dir, "models.json");
      writeFileSync(models, JSON.stringify({ kind: "augur-backtest-models", version: 1, policies: { augur: { kind: "augur-global-models", version: 2, models: { quantum: {} } } } }));
      const refused = augur(["backtest", "--trace", join(dir, "none.csv"), "--out", join(dir, "r.json"), "--policies", "augur", "--load-models", models, "--workers", "2"]);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /unknown resource 'quantum'/, "the models are refused, not the missing trace");
      const trace = join(dir, "t.csv");
      writeTrace(trace, T0, 5, 3);
      const loaded = await loadCanonical(trace);
      await assert.rejects(
        replayInParallel({ trace: loaded, policies: ["vpa", "augur"], resources: ["cpu"], context: { models: { augur: { kind: "other" } } }, workers: 2, exportModels: false }),
        (error: unknown) => error instanceof ValidationError && /augur on cpu: not augur global models/.test(error.message),
      );
    } finally {
      cleanup();
    }
  });

  it("refuses a number of workers that is not a whole number from 1 to 256, before reading the trace", () => {
    for (const workers of ["0", "-1", "1.5", "abc", "257", "1e3", "", " 2x"]) {
      assert.throws(() => checkBacktestOptions({ format: "canonical", policies: ["augur"], workers }), /--workers takes a whole number of threads from 1 to 256/, JSON.stringify(workers));
    }
    for (const workers of ["1", "4", 256]) checkBacktestOptions({ format: "canonical", policies: ["augur"], workers });
    const refused = augur(["backtest", "--trace", "/nonexistent.csv", "--out", "/tmp/never.json", "--workers", "many"]);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /--workers takes a whole number/);
  });
});

describe("augur backtest CLI", () => {
  it("writes RESULT.json with every metric and a self-contained report", () => {
    const { dir, cleanup } = tempDir();
    try {
      const out = join(dir, "result.json");
      const report = join(dir, "report.html");
      const result = augur(["backtest", "--trace", join(fixtures, "bitbrains"), "--format", "bitbrains", "--out", out, "--report", report]);
      assert.equal(result.status, 0, result.stderr);
      const json = JSON.parse(readFileSync(out, "utf8"));
      for (const key of ["trace", "samples", "workloads", "elapsed_ms", "policies", "clairvoyant"]) assert.ok(key in json, key);
      assert.equal(json.decision_seconds, 0, "decided every step unless asked otherwise");
      for (const slack of Object.values(json.clairvoyant.mem as Record<string, number>)) assert.ok(slack >= 0 && slack <= 1);
      assert.ok(json.clairvoyant.mem["1h"] <= json.clairvoyant.mem["24h"], "a shorter clairvoyant period never leaves more slack");
      assert.deepEqual(Object.keys(json.policies).sort(), ["augur", "autopilot", "static", "vpa"]);
      const memory = json.policies.vpa.mem;
      for (const key of ["slack", "violation_rate", "unmet", "changes_per_day", "cold_start", "oom_events"]) assert.ok(key in memory, key);
      for (const value of [memory.slack, memory.violation_rate, memory.unmet]) assert.ok(value >= 0 && value <= 1);
      const html = readFileSync(report, "utf8");
      assert.match(html, /<svg/);
      assert.doesNotMatch(html, /<script|https?:\/\//);
      assert.ok(existsSync(out));
    } finally {
      cleanup();
    }
  });

  it("saves learned models and loads them back; refuses a file that is not one", () => {
    const { dir, cleanup } = tempDir();
    try {
      const models = join(dir, "models.json");
      const args = ["backtest", "--trace", join(fixtures, "alibaba"), "--format", "alibaba-genai", "--policies", "augur", "--out", join(dir, "r.json")];
      assert.equal(augur([...args, "--save-models", models]).status, 0);
      const saved = JSON.parse(readFileSync(models, "utf8"));
      assert.equal(saved.kind, "augur-backtest-models");
      assert.equal(saved.policies.augur.kind, "augur-global-models");
      assert.equal(augur([...args, "--load-models", models]).status, 0);
      for (const junk of ["{", JSON.stringify({ kind: "other" }), JSON.stringify({ kind: "augur-backtest-models", version: 1, policies: { augur: { kind: "augur-global-models", version: 1, models: { quantum: {} } } } })]) {
        writeFileSync(models, junk);
        const result = augur([...args, "--load-models", models]);
        assert.equal(result.status, 2, result.stderr);
        assert.match(result.stderr, /models/);
      }
      const missing = augur([...args, "--load-models", join(dir, "none.json")]);
      assert.equal(missing.status, 2, missing.stderr);
      assert.match(missing.stderr, /cannot read models .*none\.json: ENOENT/);
      writeFileSync(models, "{");
      assert.match(augur([...args, "--load-models", models]).stderr, /cannot read models .*models\.json: .*JSON/);
    } finally {
      cleanup();
    }
  });

  it("loads a backtest's global models into a pipeline's data directory, where the live stage starts from them; refuses what it cannot use", async () => {
    const { dir, cleanup } = tempDir();
    try {
      await initTensorflow();
      const learners = new GlobalLearners({ firstTraining: 50 });
      const random = seededRandom(5);
      const features = new Float32Array(GLOBAL_FEATURES);
      for (let i = 0; i < 60; i++) learners.of("cpu").reservoir.add(features.fill(random()), random());
      assert.ok(learners.trainIfDue("cpu"));
      const trained = learners.export();
      const models = join(dir, "models.json");
      const write = (augurModels: unknown) => writeFileSync(models, JSON.stringify({ kind: "augur-backtest-models", version: 1, policies: { augur: augurModels } }));
      const local = readFileSync(join(REPO, "pipelines/local.yaml"), "utf8").replaceAll("../connectors/", join(REPO, "connectors/"));
      const config = join(dir, "local.yaml");
      writeFileSync(config, local);
      const data = join(dir, "data");
      const load = (extra: string[] = []) => augur(["models", "load", models, "--config", config, "--data-dir", data, ...extra]);

      write(trained);
      const loaded = load();
      assert.equal(loaded.status, 0, loaded.stderr);
      assert.deepEqual(JSON.parse(loaded.stdout).models, ["cpu"]);
      const store = new ProfileStore(data);
      try {
        const factory = createModelFactory("augur-ensemble", {});
        await new ForecastStage(new EmbeddedTransport(), store, factory, new Metrics()).handle([]);
        assert.deepEqual(factory.shared!.toState(), trained, "a stage started on the directory holds them");
      } finally {
        store.close();
      }

      for (const [augurModels, reason] of [
        [{ ...trained, models: {} }, /holds nothing augur learned/],
        [{ ...trained, calibration: { mem: { targetMissRate: 0.0005, missDecay: 0.9999, price: -1, pool: {} } } }, /calibration of mem: price/],
        [{ ...trained, calibration: { mem: { targetMissRate: 0.0005, missDecay: 0.9999, price: 1, pool: { misses: [1] } } } }, /calibration of mem: pooled overruns/],
        [{ ...trained, calibration: [] }, /calibration of|calibration must/],
        [{ ...trained, models: { cpu: { ...trained.models.cpu, layers: [] } } }, /global model for cpu: .*layers/],
        [{ ...trained, models: { "../cpu": trained.models.cpu } }, /unknown resource '\.\.\/cpu'/],
        [{ ...trained, version: 99 }, /not augur global models/],
        [null, /holds nothing augur learned/],
      ] as const) {
        write(augurModels);
        const refused = load();
        assert.equal(refused.status, 2, refused.stderr);
        assert.match(refused.stderr, reason);
      }
      writeFileSync(models, "{");
      assert.match(load().stderr, /cannot read models .*models\.json: .*JSON/);
      assert.match(augur(["models", "load", join(dir, "none.json"), "--config", config, "--data-dir", data]).stderr, /cannot read models .*none\.json: ENOENT/);
      write(trained);
      writeFileSync(config, local.replace("model: augur-ensemble", "model: decaying-percentile").replace("  options:\n", "  options: {}\n").replace(/\n    (memoryMissRate|rateMissRate|learnGlobalModel|poolAcrossPairs).*/g, ""));
      const percentile = load();
      assert.equal(percentile.status, 2, percentile.stderr);
      assert.match(percentile.stderr, /forecast\.model is decaying-percentile, which has no global model/);

      // A calibration (pooled rates and price) is taken only by a pipeline that pools overruns at its service level.
      const calibration = { mem: { targetMissRate: 0.001, missDecay: 0.9999, price: 5e9, pool: new PooledMisses(0.9999).toState() } };
      write({ ...trained, calibration });
      writeFileSync(config, local);
      const mismatch = load();
      assert.equal(mismatch.status, 2, mismatch.stderr);
      assert.match(mismatch.stderr, /mem was calibrated at a miss rate of 0\.001, .* aims at 0\.0005 \(forecast\.options\.memoryMissRate\): run the backtest with --memory-miss-rate 0\.0005/);
      writeFileSync(config, local.replace("memoryMissRate: 0.0005", "memoryMissRate: 0.001"));
      const matched = load();
      assert.equal(matched.status, 0, matched.stderr);
      assert.deepEqual(JSON.parse(matched.stdout).calibrated, ["mem"]);
    } finally {
      cleanup();
    }
  });

  it("takes augur's service level from the command line and records it", () => {
    const { dir, cleanup } = tempDir();
    try {
      // 20 noisy workloads of 500 one-minute steps: enough overruns for the service level to tell.
      const trace = join(dir, "noisy.csv");
      const rows = ["ts,workload,image,user,cpu,mem"];
      const random = seededRandom(7);
      for (let step = 0; step < 500; step++) {
        for (let w = 0; w < 20; w++) rows.push(`${T0 + step * MIN},w${w},img${w % 4},u${w},${(0.5 + random()).toFixed(3)},${Math.round(1e9 * (1 + random()))}`);
      }
      writeFileSync(trace, rows.join("\n") + "\n");
      const run = (...level: string[]) => {
        const out = join(dir, "r.json");
        const result = augur(["backtest", "--trace", trace, "--policies", "augur", "--out", out, ...level]);
        assert.equal(result.status, 0, result.stderr);
        return JSON.parse(readFileSync(out, "utf8"));
      };
      const defaults = run();
      assert.deepEqual(defaults.service_level, { memory_miss_rate: 0.0005, rate_miss_rate: 0.003 });
      const loose = run("--memory-miss-rate", "0.05", "--rate-miss-rate", "2e-1");
      assert.deepEqual(loose.service_level, { memory_miss_rate: 0.05, rate_miss_rate: 0.2 });
      // A looser service level buys less slack with more overruns.
      assert.ok(loose.policies.augur.cpu.slack < defaults.policies.augur.cpu.slack, `cpu slack ${loose.policies.augur.cpu.slack} vs ${defaults.policies.augur.cpu.slack}`);
      assert.ok(loose.policies.augur.cpu.violation_rate > defaults.policies.augur.cpu.violation_rate);
      assert.ok(loose.policies.augur.mem.slack < defaults.policies.augur.mem.slack, `mem slack ${loose.policies.augur.mem.slack} vs ${defaults.policies.augur.mem.slack}`);
    } finally {
      cleanup();
    }
  });

  it("writes every rejected row with its reason, also when no row was usable, and names the first in the refusal (backtest, detect, inject, replay)", () => {
    const { dir, cleanup } = tempDir();
    try {
      const rejected = join(dir, "rejected.jsonl");
      const run = (name: string, lines: string[]) => {
        const trace = join(dir, name);
        writeFileSync(trace, ["ts,workload,image,user,cpu,mem", ...lines].join("\n") + "\n");
        rmSync(rejected, { force: true });
        const result = augur(["backtest", "--trace", trace, "--policies", "static", "--out", join(dir, "r.json"), "--rejected", rejected]);
        const written = existsSync(rejected) ? readFileSync(rejected, "utf8").trim().split("\n").map((line) => JSON.parse(line)) : [];
        return { result, written };
      };
      // Seconds where milliseconds belong, and a control character in an id: nothing usable.
      const none = run("none.csv", ["1700000000,w,i,u,1,1", `${T0},w\u0000,i,u,1,1`]);
      assert.equal(none.result.status, 2, none.result.stderr);
      assert.match(none.result.stderr, /no usable rows \(2 rejected; first: .*none\.csv line 2: ts must be epoch milliseconds/);
      assert.deepEqual(none.written.map((row) => row.line), [2, 3]);
      assert.match(none.written[1].reason, /control character/);
      const some = run("some.csv", [`${T0},w,i,u,1,1`, `${T0 + MIN},w,i,u,-1,1`, `${T0 + 2 * MIN},w,i,u,1,1`]);
      assert.equal(some.result.status, 0, some.result.stderr);
      assert.deepEqual(some.written.map((row) => row.line), [3]);
      assert.match(some.written[0].reason, /cpu/);
      const clean = run("clean.csv", [`${T0},w,i,u,1,1`]);
      assert.equal(clean.result.status, 0, clean.result.stderr);
      assert.equal(existsSync(rejected), false, "nothing rejected, nothing written");
      // A training trace, a detection history, inject's and replay's input with no usable row are refused alike.
      const good = join(dir, "clean.csv");
      const bad = join(dir, "none.csv");
      const out = join(dir, "o");
      const refusals = [
        augur(["backtest", "--trace", good, "--train", bad, "--policies", "static", "--out", out, "--rejected", rejected]),
        augur(["detect", "--trace", bad, "--out", out]),
        augur(["detect", "--trace", good, "--history", bad, "--out", out]),
        augur(["inject", "--trace", bad, "--out", join(dir, "o.csv"), "--labels", out]),
        augur(["replay", "--trace", bad, "--data-dir", join(dir, "data")]),
      ];
      for (const result of refusals) {
        assert.equal(result.status, 2, result.stderr);
        assert.match(result.stderr, /none\.csv has no usable rows \(2 rejected; first: .* line 2: ts must be epoch milliseconds/);
      }
      assert.equal(readFileSync(rejected, "utf8").trim().split("\n").length, 2, "the training trace's rejected rows are written before the refusal");
      const missingLabels = augur(["detect", "--trace", good, "--out", out, "--labels", join(dir, "missing.csv")]);
      assert.equal(missingLabels.status, 2, missingLabels.stderr);
      assert.match(missingLabels.stderr, /cannot read labels .*missing\.csv: ENOENT/);
      const detected = augur(["detect", "--trace", join(dir, "some.csv"), "--out", out, "--warmup-steps", "1"]);
      assert.equal(detected.status, 0, detected.stderr);
      assert.equal(JSON.parse(detected.stdout).rejected, 1, "detect counts the rows it could not use");
    } finally {
      cleanup();
    }
  });

  it("exits 2 on a bad format, policy or resource, and on a missing trace", () => {
    // Each run would succeed but for its one bad flag (the trace and its format are good): the message names the flag.
    for (const [flag, value] of [
      ["--format", "parquet"],
      ["--policies", "vpa,oracle"],
      ["--resources", "cpu,quantum"],
      ["--decision-seconds", "-5"],
      ["--decision-seconds", "1e9"],
      ["--decision-seconds", "15m; rm -rf /"],
      ["--decision-seconds", "NaN"],
      ["--memory-miss-rate", "0"],
      ["--memory-miss-rate", "0.5"],
      ["--memory-miss-rate", "-0.001"],
      ["--memory-miss-rate", "1/2000"],
      ["--memory-miss-rate", "1e-999"],
      ["--memory-miss-rate", "Infinity"],
      ["--rate-miss-rate", "0.003; rm -rf /"],
      ["--rate-miss-rate", "NaN"],
      ["--rate-miss-rate", ""],
      ["--rate-miss-rate", "0x1"],
    ]) {
      const args = ["backtest", "--trace", join(fixtures, "bitbrains"), "--format", "bitbrains", "--out", "/dev/null"];
      const result = augur(flag === "--format" ? [...args.slice(0, 3), flag, value!, ...args.slice(5)] : [...args, flag!, value!]);
      assert.equal(result.status, 2, `${flag} ${value}: ${result.stderr}`);
      assert.match(result.stderr, new RegExp(flag!), `${flag} ${value}: ${result.stderr}`);
    }
    assert.equal(augur(["backtest", "--trace", join(fixtures, "bitbrains"), "--format", "bitbrains", "--out", "/dev/null"]).status, 0, "the same run without a bad flag succeeds");
    assert.equal(augur(["backtest", "--trace", "/nonexistent", "--out", "/dev/null"]).status, 2);
  });
});
