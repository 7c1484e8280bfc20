// A trace as an hourly collector would have kept it: each workload's mean
// CPU and memory per UTC hour (hours with no sample left out), in the
// canonical format, with the trace's own limits. For checking augur off
// five-minute sampling: `node dist/bench/hourly-trace.js FORMAT SOURCE OUT.csv`,
// e.g. `bitbrains ../shared/traces/bitbrains_rnd/2013-8 august-hourly.csv`.
import { writeFileSync } from "node:fs";
import { loadTrace, TRACE_FORMATS, type TraceFormat } from "../src/backtest/adapters/index.js";

const HOUR = 3_600_000;
const [format, source, out] = process.argv.slice(2);
if (!format || !source || !out || !(TRACE_FORMATS as readonly string[]).includes(format)) {
  console.error(`usage: node dist/bench/hourly-trace.js ${TRACE_FORMATS.join("|")} SOURCE OUT.csv`);
  process.exit(2);
}
const trace = await loadTrace(source, format as TraceFormat);
const cell = (value: number) => (Number.isNaN(value) ? "" : String(value));
const lines = ["ts,workload,image,user,cpu,mem,cpu_limit,mem_limit"];
for (const w of trace.workloads) {
  const cpu = w.values.cpu;
  const mem = w.values.mem;
  if (!cpu || !mem) continue;
  let hour = Number.NaN;
  let n = 0;
  let cpuSum = 0;
  let memSum = 0;
  let cpuLimit = Number.NaN;
  let memLimit = Number.NaN;
  const flush = () => {
    if (n > 0) lines.push(`${hour},${w.workload},${w.image},${w.user},${(cpuSum / n).toFixed(4)},${Math.round(memSum / n)},${cell(cpuLimit)},${cell(memLimit)}`);
  };
  for (let i = 0; i < w.ts.length; i++) {
    const start = Math.floor(w.ts[i]! / HOUR) * HOUR;
    if (start !== hour) {
      flush();
      hour = start;
      n = cpuSum = memSum = 0;
    }
    if (Number.isNaN(cpu[i]!) || Number.isNaN(mem[i]!)) continue;
    n++;
    cpuSum += cpu[i]!;
    memSum += mem[i]!;
    cpuLimit = w.limits.cpu?.[i] ?? Number.NaN;
    memLimit = w.limits.mem?.[i] ?? Number.NaN;
  }
  flush();
}
writeFileSync(out, lines.join("\n") + "\n");
console.log(JSON.stringify({ trace: out, rows: lines.length - 1 }));
