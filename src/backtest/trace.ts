import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { ValidationError } from "../core/errors.js";
import { RESOURCES, type Resource } from "../core/types.js";

/** One workload's rows, columnar and sorted by time. NaN means "not measured". */
export interface WorkloadSeries {
  workload: string;
  image: string;
  user: string;
  ts: Float64Array; // epoch ms
  values: Partial<Record<Resource, Float64Array>>;
  /** What the workload was given, where the trace says (cpu cores, mem bytes). */
  limits: { cpu?: Float64Array; mem?: Float64Array };
}

export interface RejectedRow {
  source: string;
  line: number;
  reason: string;
}

export interface Trace {
  name: string;
  workloads: WorkloadSeries[];
  rows: number;
  rejected: RejectedRow[];
  /** Resources the trace gives only as fractions of an unknown capacity: not scored unless asked for. */
  unitless?: Resource[];
}

/** Keeps at most this many rejected rows in memory (the count is always exact). */
export const MAX_REJECTED_KEPT = 10_000;

/** Reads a .csv or .csv.gz file as text. */
export function readText(path: string): string {
  let buffer: Buffer;
  try {
    buffer = readFileSync(path);
  } catch (error) {
    throw new ValidationError(`cannot read trace ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  if (path.endsWith(".gz")) {
    try {
      buffer = gunzipSync(buffer);
    } catch (error) {
      throw new ValidationError(`trace ${path} is not valid gzip: ${(error as Error).message}`);
    }
  }
  return buffer.toString("utf8");
}

/** A file, or every .csv / .csv.gz in a directory (sorted by name, numerically where possible). */
export function traceFiles(path: string): string[] {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    throw new ValidationError(`trace ${path} does not exist`);
  }
  if (!stat.isDirectory()) return [path];
  const files = readdirSync(path)
    .filter((name) => /\.csv(\.gz)?$/.test(name))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  if (files.length === 0) throw new ValidationError(`trace directory ${path} has no .csv or .csv.gz files`);
  return files.map((name) => join(path, name));
}

/** Collects rows of one workload before they become typed arrays. */
export class SeriesBuilder {
  readonly ts: number[] = [];
  readonly values = new Map<Resource, number[]>();
  readonly limits = { cpu: [] as number[], mem: [] as number[] };
  private hasCpuLimit = false;
  private hasMemLimit = false;

  constructor(
    readonly workload: string,
    readonly image: string,
    readonly user: string,
    private readonly resources: readonly Resource[],
  ) {
    for (const resource of resources) this.values.set(resource, []);
  }

  push(ts: number, values: Partial<Record<Resource, number>>, cpuLimit = Number.NaN, memLimit = Number.NaN): void {
    this.ts.push(ts);
    for (const resource of this.resources) this.values.get(resource)!.push(values[resource] ?? Number.NaN);
    this.limits.cpu.push(cpuLimit);
    this.limits.mem.push(memLimit);
    if (!Number.isNaN(cpuLimit)) this.hasCpuLimit = true;
    if (!Number.isNaN(memLimit)) this.hasMemLimit = true;
  }

  /** Sorted by time; rows at a timestamp already taken are dropped (duplicates). */
  build(onDuplicate: (ts: number) => void): WorkloadSeries {
    const order = this.ts.map((_, i) => i).sort((a, b) => this.ts[a]! - this.ts[b]! || a - b);
    const keep: number[] = [];
    for (const i of order) {
      if (keep.length > 0 && this.ts[keep[keep.length - 1]!] === this.ts[i]) onDuplicate(this.ts[i]!);
      else keep.push(i);
    }
    const pick = (source: number[]) => Float64Array.from(keep, (i) => source[i]!);
    const values: WorkloadSeries["values"] = {};
    for (const [resource, column] of this.values) if (column.some((v) => !Number.isNaN(v))) values[resource] = pick(column);
    return {
      workload: this.workload,
      image: this.image,
      user: this.user,
      ts: pick(this.ts),
      values,
      limits: { cpu: this.hasCpuLimit ? pick(this.limits.cpu) : undefined, mem: this.hasMemLimit ? pick(this.limits.mem) : undefined },
    };
  }
}

export class RejectLog {
  readonly rows: RejectedRow[] = [];
  count = 0;
  add(source: string, line: number, reason: string): void {
    this.count++;
    if (this.rows.length < MAX_REJECTED_KEPT) this.rows.push({ source, line, reason });
  }
}

/** Parses a number cell: empty is NaN (not measured); anything else must be a finite number >= 0. */
export function cellNumber(cell: string | undefined, column: string): number {
  if (cell === undefined) return Number.NaN;
  const text = cell.trim();
  if (text === "") return Number.NaN;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new ValidationError(`${column} is not a finite number: ${JSON.stringify(text.slice(0, 40))}`);
  if (value < 0) throw new ValidationError(`${column} is negative: ${value}`);
  return value;
}

const CANONICAL_COLUMNS = ["ts", "workload", "image", "user", ...RESOURCES, "cpu_limit", "mem_limit"] as const;

/** A CSV cell: quoted when it holds a comma, a quote or a line break. */
export function csvCell(value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** Writes a trace in the canonical format (DESIGN.md), rows in time order per workload. */
export function* canonicalLines(trace: Trace): Generator<string> {
  yield CANONICAL_COLUMNS.join(",");
  for (const series of trace.workloads) {
    const ids = [csvCell(series.workload), csvCell(series.image), csvCell(series.user)];
    for (let i = 0; i < series.ts.length; i++) {
      const cells = [String(series.ts[i]), ...ids];
      for (const resource of RESOURCES) {
        const value = series.values[resource]?.[i];
        cells.push(value === undefined || Number.isNaN(value) ? "" : String(value));
      }
      for (const limit of [series.limits.cpu?.[i], series.limits.mem?.[i]]) cells.push(limit === undefined || Number.isNaN(limit) ? "" : String(limit));
      yield cells.join(",");
    }
  }
}
