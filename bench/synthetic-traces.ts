// Two synthetic traces in the canonical format, unlike the shipped ones, for
// checking that augur's policy holds off the traces it was developed on:
//   short-jobs.csv   — 4 days of 1-minute steps, ~14,000 jobs of 10–120 min
//                      (40 images × 60 users, a job's memory starting from
//                      zero, ramping, growing, cycling or noisy);
//   long-running.csv — 300 workloads of 2–30 h (20 images × 30 users:
//                      steady, daily, spiky, leaking, on/off batch);
//   unique-same.csv  — 20,000 workloads of 20 one-minute steps, each its own
//                      image and user (no history to learn from but the
//                      peers'), all drawing CPU and memory from one uniform law;
//   unique-spread.csv — the same, each at its own level (log-uniform over
//                      three decades, ±20% from step to step);
//   fast-irregular.csv — 200 workloads over 12 h sampled every 7–13 s (as an
//                      agent polling cgroups would), with five-minute gaps:
//                      steady, bursty CPU, a collected heap (sawtooth
//                      memory), memory in stairs.
// `node dist/bench/synthetic-traces.js DIR`, then `augur backtest --trace DIR/short-jobs.csv …`.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { seededRandom } from "../src/core/random.js";

const MINUTE = 60_000;
type Row = [number, string];

function write(path: string, rows: Row[]): void {
  rows.sort((a, b) => a[0] - b[0]);
  writeFileSync(path, "ts,workload,image,user,cpu,mem\n" + rows.map(([ts, rest]) => `${ts},${rest}`).join("\n") + "\n");
  console.log(JSON.stringify({ trace: path, rows: rows.length }));
}

function shortJobs(): Row[] {
  const r = seededRandom(11);
  const t0 = Date.UTC(2026, 0, 5);
  const images = Array.from({ length: 40 }, (_, i) => ({ cpu: 0.2 + 3 * r(), mem: 2e8 + 8e9 * r() ** 2, kind: i % 4 }));
  const users = Array.from({ length: 60 }, () => 0.3 + 2.5 * r());
  const rows: Row[] = [];
  let job = 0;
  for (let t = 0; t < 4 * 1440; t++) {
    const starts = Math.floor(r() * 6); // about 2.5 jobs start a minute
    for (let s = 0; s < starts; s++) {
      const i = Math.floor(r() ** 1.5 * images.length);
      const u = Math.floor(r() ** 1.5 * users.length);
      const image = images[i]!;
      const f = users[u]!;
      const length = 10 + Math.floor(r() * 110);
      const id = `j${job++}`;
      for (let k = 0; k < length; k++) {
        const ramp = Math.min(1, k / 5);
        let cpu: number;
        let mem: number;
        if (image.kind === 0) {
          cpu = image.cpu * f * (0.8 + 0.4 * r());
          mem = image.mem * f * ramp * (0.95 + 0.1 * r());
        } else if (image.kind === 1) {
          cpu = image.cpu * f * (r() < 0.1 ? 2.5 : 0.6 + 0.2 * r());
          mem = image.mem * f * (0.5 + (0.5 * k) / length);
        } else if (image.kind === 2) {
          cpu = image.cpu * f * (k % 20 < 5 ? 1.5 : 0.3) * (0.9 + 0.2 * r());
          mem = image.mem * f * (0.9 + 0.1 * Math.sin(k / 7));
        } else {
          cpu = image.cpu * f * (0.2 + 0.8 * ramp) * (0.7 + 0.6 * r());
          mem = image.mem * f * (0.7 + 0.3 * r());
        }
        rows.push([t0 + (t + k) * MINUTE, `${id},img${i},user${u},${cpu.toFixed(4)},${Math.round(mem)}`]);
      }
    }
  }
  return rows;
}

function longRunning(): Row[] {
  const r = seededRandom(99);
  const t0 = Date.UTC(2026, 2, 2);
  const images = Array.from({ length: 20 }, (_, i) => ({ cpu: 0.1 + 4 * r() ** 2, mem: 1e8 + 1.6e10 * r() ** 3, kind: i % 5 }));
  const users = Array.from({ length: 30 }, () => 0.5 + 1.5 * r());
  const rows: Row[] = [];
  for (let w = 0; w < 300; w++) {
    const i = Math.floor(r() * 20);
    const u = Math.floor(r() * 30);
    const image = images[i]!;
    const f = users[u]!;
    const start = Math.floor(r() * 3 * 1440);
    const length = 120 + Math.floor(r() * 28 * 60);
    const phase = r() * 1440;
    for (let k = 0; k < length; k++) {
      const t = start + k;
      const day = 1 + 0.6 * Math.sin((2 * Math.PI * (t + phase)) / 1440);
      let cpu: number;
      let mem: number;
      if (image.kind === 0) {
        cpu = image.cpu * f * (0.9 + 0.2 * r());
        mem = image.mem * f * (0.97 + 0.06 * r());
      } else if (image.kind === 1) {
        cpu = image.cpu * f * day * (0.85 + 0.3 * r());
        mem = image.mem * f * (0.8 + 0.2 * day) * (0.98 + 0.04 * r());
      } else if (image.kind === 2) {
        cpu = image.cpu * f * (r() < 0.02 ? 3 + 2 * r() : 0.5 + 0.2 * r());
        mem = image.mem * f * (r() < 0.005 ? 1.8 : 1) * (0.95 + 0.05 * r());
      } else if (image.kind === 3) {
        cpu = image.cpu * f * (0.7 + 0.3 * r());
        mem = image.mem * f * (0.3 + (0.7 * k) / length) * (0.99 + 0.02 * r());
      } else {
        const on = Math.floor(k / 90) % 2 === 0;
        cpu = image.cpu * f * (on ? 1 : 0.1) * (0.8 + 0.4 * r());
        mem = image.mem * f * (on ? 1 : 0.4) * (0.95 + 0.1 * r());
      }
      rows.push([t0 + t * MINUTE, `w${w},img${i},user${u},${cpu.toFixed(4)},${Math.round(mem)}`]);
    }
  }
  return rows;
}

function uniquePairs(seed: number, spread: boolean): Row[] {
  const r = seededRandom(seed);
  const t0 = Date.UTC(2026, 0, 5);
  const rows: Row[] = [];
  for (let w = 0; w < 20_000; w++) {
    const start = t0 + (w % 1000) * MINUTE;
    const level = spread ? 10 ** (3 * r() - 2) : 1;
    const draw = () => level * (spread ? 0.8 + 0.4 * r() : r());
    for (let k = 0; k < 20; k++) rows.push([start + k * MINUTE, `u${w},img-u${w},user-u${w},${draw().toFixed(4)},${Math.round(1e9 * draw())}`]);
  }
  return rows;
}

function fastIrregular(): Row[] {
  const r = seededRandom(5);
  const t0 = Date.UTC(2026, 0, 5);
  const end = t0 + 12 * 3_600_000;
  const rows: Row[] = [];
  for (let w = 0; w < 200; w++) {
    const kind = w % 4;
    const cpuLevel = 0.2 + 2 * r();
    const memLevel = 3e8 + 4e9 * r();
    let heap = memLevel / 2;
    let stair = memLevel;
    for (let t = t0 + Math.floor(r() * 10 * MINUTE); t < end; t += 7_000 + Math.floor(r() * 6_000)) {
      if (r() < 0.0005) t += 5 * MINUTE; // the agent missed a few polls
      let cpu: number;
      let mem: number;
      if (kind === 0) {
        cpu = cpuLevel * (0.9 + 0.2 * r());
        mem = memLevel * (0.98 + 0.04 * r());
      } else if (kind === 1) {
        cpu = cpuLevel * (r() < 0.03 ? 3 : 0.4 + 0.2 * r());
        mem = memLevel * (0.9 + 0.1 * r());
      } else if (kind === 2) {
        cpu = cpuLevel * (1 + 0.5 * Math.sin((t - t0) / 3_600_000)) * (0.8 + 0.4 * r());
        heap += memLevel * 0.01 * (1 + r());
        if (heap > memLevel) heap = memLevel / 2; // collected
        mem = heap;
      } else {
        cpu = cpuLevel * (0.5 + r());
        if (r() < 0.002) stair = memLevel * (0.5 + 1.5 * r());
        mem = stair * (0.97 + 0.03 * r());
      }
      rows.push([t, `w${w},img${w % 25},user${w % 40},${cpu.toFixed(4)},${Math.round(mem)}`]);
    }
  }
  return rows;
}

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node dist/bench/synthetic-traces.js DIR");
  process.exit(2);
}
mkdirSync(dir, { recursive: true });
write(join(dir, "short-jobs.csv"), shortJobs());
write(join(dir, "long-running.csv"), longRunning());
write(join(dir, "unique-same.csv"), uniquePairs(21, false));
write(join(dir, "unique-spread.csv"), uniquePairs(22, true));
write(join(dir, "fast-irregular.csv"), fastIrregular());
