import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ValidationError, errorMessage } from "../../core/errors.js";
import { validateId } from "../../core/keys.js";
import { RESOURCES, type Resource } from "../../core/types.js";
import { cellNumber, forEachCsvRecord, forEachLine, RejectLog, SeriesBuilder, traceFiles, type Trace } from "../trace.js";

export const TRACE_FORMATS = ["canonical", "bitbrains", "alibaba-genai"] as const;
export type TraceFormat = (typeof TRACE_FORMATS)[number];

const MIN_TS = Date.UTC(1990, 0, 1);
const MAX_TS = Date.UTC(2200, 0, 1);

function finish(name: string, builders: Map<string, SeriesBuilder>, rejects: RejectLog): Trace {
  let rows = 0;
  const workloads = [...builders.values()].map((builder) =>
    builder.build((ts) => rejects.add(builder.workload, 0, `duplicate timestamp ${ts} for workload ${builder.workload}`)),
  );
  for (const series of workloads) rows += series.ts.length;
  return { name, workloads: workloads.filter((w) => w.ts.length > 0), rows, rejected: rejects.rows.length === rejects.count ? rejects.rows : [...rejects.rows, { source: name, line: 0, reason: `… and ${rejects.count - rejects.rows.length} more` }] };
}

/**
 * The canonical format of ../shared/DESIGN.md: a header with `ts` (ms),
 * `workload`, `image`, `user`, any of the resource columns, and optional
 * `cpu_limit`, `mem_limit`. Unknown columns are an error (a typo would
 * silently drop a resource otherwise).
 */
export async function loadCanonical(path: string): Promise<Trace> {
  const rejects = new RejectLog();
  const builders = new Map<string, SeriesBuilder>();
  const known = new Set(["ts", "workload", "image", "user", "cpu_limit", "mem_limit", ...RESOURCES]);
  for (const file of traceFiles(path)) {
    /** Cells of the header; 0 until it is read. */
    let columns = 0;
    let resources: Resource[] = [];
    let resourceAt: number[] = [];
    let at = { ts: 0, workload: 0, image: 0, user: 0, cpuLimit: -1, memLimit: -1 };
    const readHeader = (cells: string[]) => {
      const names = cells.map((h) => h.trim());
      for (const required of ["ts", "workload", "image", "user"]) {
        if (!names.includes(required)) throw new ValidationError(`${file}: header lacks the '${required}' column (got ${names.join(",") || "nothing"})`);
      }
      const unknown = names.filter((h) => !known.has(h));
      if (unknown.length > 0) throw new ValidationError(`${file}: unknown columns ${unknown.join(", ")}`);
      const column = (name: string) => names.indexOf(name);
      resources = RESOURCES.filter((r) => names.includes(r));
      resourceAt = resources.map(column);
      at = { ts: column("ts"), workload: column("workload"), image: column("image"), user: column("user"), cpuLimit: column("cpu_limit"), memLimit: column("mem_limit") };
      columns = names.length;
    };
    const readRow = (row: string[]) => {
      if (row.length !== columns) throw new ValidationError(`expected ${columns} cells, got ${row.length}`);
      const ts = cellNumber(row[at.ts], "ts");
      if (!Number.isInteger(ts) || ts < MIN_TS || ts > MAX_TS) throw new ValidationError(`ts must be epoch milliseconds, got ${row[at.ts]}`);
      const workload = validateId("workload", row[at.workload]);
      const image = validateId("image", row[at.image]);
      const user = validateId("user", row[at.user]);
      const values: Partial<Record<Resource, number>> = {};
      for (let r = 0; r < resources.length; r++) values[resources[r]!] = cellNumber(row[resourceAt[r]!], resources[r]!);
      let builder = builders.get(workload);
      if (!builder) builders.set(workload, (builder = new SeriesBuilder(workload, image, user, resources)));
      else if (builder.image !== image || builder.user !== user) throw new ValidationError(`workload ${workload} changes image or user`);
      builder.push(ts, values, at.cpuLimit >= 0 ? cellNumber(row[at.cpuLimit], "cpu_limit") : Number.NaN, at.memLimit >= 0 ? cellNumber(row[at.memLimit], "mem_limit") : Number.NaN);
    };
    await forEachCsvRecord(
      file,
      (row, line) => {
        if (columns === 0) return readHeader(row);
        try {
          readRow(row);
        } catch (error) {
          rejects.add(file, line, errorMessage(error));
        }
      },
      (reason, line) => {
        if (columns === 0) throw new ValidationError(`${file}: not a CSV file: ${reason} on line ${line}`);
        rejects.add(file, line, reason);
      },
    );
    if (columns === 0) readHeader([]);
  }
  return finish(path, builders, rejects);
}

const KIB = 1024;
/** Bitbrains rows closer than this to the previous kept row are duplicates (SOURCE.md: nominal step 300 s). */
const BITBRAINS_MIN_GAP_MS = 10_000;

/**
 * Bitbrains GWA-T-12 (../shared/traces/bitbrains_rnd/SOURCE.md): one file per
 * VM, `;\t`-separated, timestamps in SECONDS despite the header, CPU in MHz
 * (cores used = usage % / 100 × cores), memory in KB, disk and network in
 * KB/s. All-zero rows mean "off or not monitored" and are skipped; rows
 * within 10 s of the previous one are duplicates. The VM id is the workload
 * and the user; the image is the VM's shape (cores and provisioned memory of
 * its first row), so VMs of one shape share an (image, *) profile.
 */
export async function loadBitbrains(path: string): Promise<Trace> {
  const rejects = new RejectLog();
  const builders = new Map<string, SeriesBuilder>();
  const resources: Resource[] = ["cpu", "mem", "disk_read", "disk_write", "net_rx", "net_tx"];
  for (const file of traceFiles(path)) {
    const vm = file.slice(file.lastIndexOf("/") + 1).replace(/\.csv(\.gz)?$/, "");
    let builder: SeriesBuilder | undefined;
    let lastTs = -Infinity;
    let isBitbrains = false;
    let lines = 0;
    await forEachLine(file, (text, line) => {
      lines = line;
      if (line === 1) {
        isBitbrains = /^Timestamp/.test(text);
        if (!isBitbrains) rejects.add(file, 1, "not a Bitbrains file: the header does not start with 'Timestamp'");
        return;
      }
      if (!isBitbrains || text.trim() === "") return;
      try {
        const cells = text.split(";").map((c) => c.trim());
        if (cells.length !== 11) throw new ValidationError(`expected 11 cells, got ${cells.length}`);
        const n = cells.map((cell, i) => cellNumber(cell, `column ${i + 1}`));
        const [seconds, cores, capacityMhz, , usagePercent, memCapacityKb, memUsageKb, diskRead, diskWrite, netRx, netTx] = n as [number, number, number, number, number, number, number, number, number, number, number];
        const ts = seconds * 1000;
        if (!(ts >= MIN_TS && ts <= MAX_TS)) throw new ValidationError(`timestamp ${cells[0]} is not epoch seconds`);
        if (n.slice(1).every((v) => v === 0)) return; // VM off or not monitored: missing, not zero demand
        if (ts - lastTs < BITBRAINS_MIN_GAP_MS) {
          rejects.add(file, line, `duplicate timestamp (${ts - lastTs} ms after the previous row)`);
          return;
        }
        lastTs = ts;
        builder ??= builders
          .set(vm, new SeriesBuilder(`vm-${vm}`, `vm-${cores}c-${Math.round(memCapacityKb / KIB / KIB)}g`, `vm-${vm}`, resources))
          .get(vm)!;
        const cpu = capacityMhz > 0 && cores > 0 ? (usagePercent / 100) * cores : Number.NaN;
        builder.push(
          ts,
          { cpu, mem: memUsageKb * KIB, disk_read: diskRead * KIB, disk_write: diskWrite * KIB, net_rx: netRx * KIB, net_tx: netTx * KIB },
          cores > 0 ? cores : Number.NaN,
          memCapacityKb > 0 ? memCapacityKb * KIB : Number.NaN,
        );
      } catch (error) {
        rejects.add(file, line, errorMessage(error));
      }
    });
    if (lines === 0) rejects.add(file, 1, "not a Bitbrains file: it is empty");
  }
  return finish(path, builders, rejects);
}

/**
 * Alibaba GenAI 2026 serving trace (../shared/traces/alibaba_genai2026/SOURCE.md):
 * per-container GPU duty cycle (0–100 %, becomes GPUs in use 0–1), GPU
 * memory (bytes) and container memory utilisation (a 0–1 FRACTION: mem is
 * reported as that fraction and mem_limit as 1), joined on
 * (timestamp, container). Timestamps are epoch seconds. The container is the
 * workload and the user; all serve one image. Tiny negative memory values
 * (−1.2e-5, sensor noise) are clamped to 0.
 */
export async function loadAlibabaGenai(path: string): Promise<Trace> {
  const rejects = new RejectLog();
  const dir = traceFiles(path).length > 1 || !/\.csv(\.gz)?$/.test(path) ? path : path.slice(0, path.lastIndexOf("/"));
  // Each metric's file as published (a .csv in a .tar.gz) or gzipped; a metric whose file is absent is not in the trace.
  const metrics: Array<[Resource, string, (v: number) => number]> = [
    ["gpu_util", "pod_gpu_duty_cycle_anon", (v) => v / 100],
    ["gpu_mem", "pod_gpu_memory_used_bytes_anon", (v) => v],
    ["mem", "pod_memory_util_anon", (v) => Math.max(0, v)],
  ];
  const present = new Set(existsSync(dir) && statSync(dir).isDirectory() ? readdirSync(dir) : []);
  const files = metrics.flatMap(([resource, name, convert]) => {
    const found = [`${name}.csv.gz`, `${name}.csv`].find((file) => present.has(file));
    return found ? [[resource, join(dir, found), convert] as const] : [];
  });
  if (files.length === 0) throw new ValidationError(`${dir}: no Alibaba GenAI metric file (${metrics.map(([, name]) => `${name}.csv[.gz]`).join(", ")})`);
  const resources = files.map(([resource]) => resource);
  const joined = new Map<string, Map<number, Partial<Record<Resource, number>>>>();
  for (const [resource, file, convert] of files) {
    let at: { value: number; ts: number; ip: number } | null = null;
    await forEachCsvRecord(
      file,
      (row, line) => {
        if (at === null) {
          const header = row.map((h) => h.trim());
          at = { value: header.indexOf("value"), ts: header.indexOf("timestamp_anon"), ip: header.indexOf("container_ip") };
          if (at.value < 0 || at.ts < 0 || at.ip < 0) throw new ValidationError(`${file}: expected columns value, timestamp_anon, container_ip`);
          return;
        }
        try {
          const ip = row[at.ip]?.trim() ?? "";
          if (ip === "") throw new ValidationError("empty container_ip");
          validateId("container_ip", ip);
          const ts = Math.round(cellNumber(row[at.ts], "timestamp_anon") * 1000);
          const raw = Number(row[at.value]);
          if (!Number.isFinite(raw)) throw new ValidationError(`value is not a number: ${JSON.stringify(row[at.value])}`);
          if (raw < -1e-3) throw new ValidationError(`value is negative: ${raw}`);
          let byTs = joined.get(ip);
          if (!byTs) joined.set(ip, (byTs = new Map()));
          let cell = byTs.get(ts);
          if (!cell) byTs.set(ts, (cell = {}));
          if (cell[resource] !== undefined) throw new ValidationError(`duplicate row for ${ip} at ${ts}`);
          cell[resource] = convert(raw);
        } catch (error) {
          rejects.add(file, line, errorMessage(error));
        }
      },
      (reason, line) => {
        if (at === null) throw new ValidationError(`${file}: not a CSV file: ${reason} on line ${line}`);
        rejects.add(file, line, reason);
      },
    );
    if (at === null) throw new ValidationError(`${file}: expected columns value, timestamp_anon, container_ip`);
  }
  const builders = new Map<string, SeriesBuilder>();
  for (const [ip, byTs] of joined) {
    const builder = new SeriesBuilder(ip, "genai-sd-serving", ip, resources);
    builders.set(ip, builder);
    for (const [ts, values] of byTs) builder.push(ts, values, Number.NaN, values.mem !== undefined ? 1 : Number.NaN);
  }
  return { ...finish(dir, builders, rejects), unitless: resources.includes("mem") ? ["mem"] : [] };
}

/**
 * Refuses a trace none of whose rows could be used, naming the first
 * rejected row's reason (a whole file in seconds, or in another format, is
 * told apart from an empty one); returns it otherwise.
 */
export function requireUsable(trace: Trace, path: string): Trace {
  if (trace.workloads.length > 0) return trace;
  const first = trace.rejected[0];
  const why = first ? `; first: ${first.source} line ${first.line}: ${first.reason}` : "";
  throw new ValidationError(`trace ${path} has no usable rows (${trace.rejected.length} rejected${why})`);
}

/** `loadTrace`, refusing a trace with no usable row (`requireUsable`). */
export async function loadUsableTrace(path: string, format: TraceFormat): Promise<Trace> {
  return requireUsable(await loadTrace(path, format), path);
}

export function loadTrace(path: string, format: TraceFormat): Promise<Trace> {
  switch (format) {
    case "canonical":
      return loadCanonical(path);
    case "bitbrains":
      return loadBitbrains(path);
    case "alibaba-genai":
      return loadAlibabaGenai(path);
  }
}
