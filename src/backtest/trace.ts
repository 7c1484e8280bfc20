import { once } from "node:events";
import { createReadStream, createWriteStream, openSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { createGunzip, createGzip } from "node:zlib";
import { cannotRead, ValidationError } from "../core/errors.js";
import { forEachLineOfChunks } from "../core/lines.js";
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

/** Bytes read at a time; a line may not be longer than MAX_LINE_CHARS. */
export const CHUNK_BYTES = 1 << 20;
/** A longer line (a file with no line breaks, a runaway quoted cell) is refused rather than held in memory. */
export const MAX_LINE_CHARS = 1 << 24;

/**
 * Calls `onLine` with each line of a .csv or .csv.gz file and its number
 * (from 1), without its line break (LF or CRLF) and without a leading BOM,
 * streamed: a trace may be far larger than one string can hold.
 */
export async function forEachLine(path: string, onLine: (line: string, number: number) => void): Promise<void> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    throw new ValidationError(cannotRead("trace", path, error));
  }
  const file = createReadStream(path, { fd, highWaterMark: CHUNK_BYTES });
  const gzipped = path.endsWith(".gz");
  const gunzip = gzipped ? createGunzip({ chunkSize: CHUNK_BYTES }) : null;
  let readError: Error | null = null;
  if (gunzip) {
    file.on("error", (error) => {
      readError = error;
      gunzip.destroy(error);
    });
    file.pipe(gunzip);
  }
  const stream = (gunzip ?? file) as AsyncIterable<Buffer>;
  let number = 0;
  const emit = (line: string) => {
    number++;
    onLine(line.length > 0 && line.charCodeAt(line.length - 1) === 13 ? line.slice(0, -1) : line, number);
  };
  try {
    await forEachLineOfChunks(stream, MAX_LINE_CHARS, () => new ValidationError(`trace ${path}: line ${number + 1} is longer than ${MAX_LINE_CHARS} characters`), emit);
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    if (gzipped && readError === null) throw new ValidationError(`trace ${path} is not valid gzip: ${(error as Error).message}`);
    throw new ValidationError(cannotRead("trace", path, error));
  } finally {
    gunzip?.destroy();
    file.destroy();
  }
}

/**
 * The records of a CSV file (RFC 4180: cells separated by commas; a cell in
 * double quotes may hold commas, line breaks and doubled quotes), streamed,
 * with the number of the line each starts on. Empty lines are skipped. A
 * record whose quoting is broken goes to `onBad` with the reason; the rest
 * of the file is still read.
 */
export async function forEachCsvRecord(path: string, onRecord: (cells: string[], line: number) => void, onBad: (reason: string, line: number) => void): Promise<void> {
  /** A record whose quoted cell goes on past the end of its first line(s). */
  let pending: string | null = null;
  let pendingLine = 0;
  /** Quotes in `pending`: its quoted cell can only have closed once the count is even (a quote inside one is doubled). */
  let quotes = 0;
  const parsed = (text: string, line: number): boolean => {
    const result = parseQuotedRecord(text);
    if (result === OPEN_QUOTE) return false;
    if (typeof result === "string") onBad(result, line);
    else onRecord(result, line);
    return true;
  };
  await forEachLine(path, (line, number) => {
    let count = 0;
    for (let at = line.indexOf('"'); at >= 0; at = line.indexOf('"', at + 1)) count++;
    if (pending === null) {
      if (count === 0) {
        if (line.length > 0) onRecord(line.split(","), number);
      } else if (!parsed(line, number)) {
        pending = line;
        pendingLine = number;
        quotes = count;
      }
      return;
    }
    pending += "\n" + line;
    quotes += count;
    if (quotes % 2 === 0 && parsed(pending, pendingLine)) pending = null;
    else if (pending.length > MAX_RECORD_CHARS) {
      onBad(`a quoted cell is not closed within ${MAX_RECORD_CHARS} characters (lines ${pendingLine}–${number} skipped)`, pendingLine);
      pending = null;
    }
  });
  if (pending !== null) onBad("a quoted cell is not closed before the end of the file", pendingLine);
}

/** The longest record a quoted cell may stretch over several lines to. */
const MAX_RECORD_CHARS = 1 << 20;

const OPEN_QUOTE = Symbol("open quote");

/** One CSV record holding quotes: its cells, the reason it is malformed, or OPEN_QUOTE where a quoted cell goes on past the text. */
function parseQuotedRecord(text: string): string[] | string | typeof OPEN_QUOTE {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    if (text.charCodeAt(i) === 34) {
      let cell = "";
      let from = i + 1;
      for (;;) {
        const quote = text.indexOf('"', from);
        if (quote < 0) return OPEN_QUOTE;
        cell += text.slice(from, quote);
        if (text.charCodeAt(quote + 1) === 34) {
          cell += '"';
          from = quote + 2;
          continue;
        }
        i = quote + 1;
        break;
      }
      cells.push(cell);
      if (i === text.length) return cells;
      if (text.charCodeAt(i) !== 44) return `text after the closing quote of cell ${cells.length}`;
      i++;
    } else {
      const comma = text.indexOf(",", i);
      const cell = comma < 0 ? text.slice(i) : text.slice(i, comma);
      if (cell.indexOf('"') >= 0) return `a quote inside the unquoted cell ${cells.length + 1}`;
      cells.push(cell);
      if (comma < 0) return cells;
      i = comma + 1;
    }
  }
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

/** The header line of the canonical format. */
export const CANONICAL_HEADER = CANONICAL_COLUMNS.join(",");

/** Writes a trace in the canonical format (DESIGN.md), rows in time order per workload. */
export function* canonicalLines(trace: Trace): Generator<string> {
  yield CANONICAL_HEADER;
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

/** Lines gathered before one write: a write per line costs a system call (and a compression call) each. */
const WRITE_CHUNK_CHARS = 1 << 20;

/**
 * A text file written line by line, gzipped when its name ends in `.gz`:
 * lines are gathered into large writes, a full stream is waited for, and a
 * file that cannot be written is a ValidationError naming it (at the first
 * write or at `close`).
 */
export class LineFile {
  private readonly file: ReturnType<typeof createWriteStream>;
  private readonly sink: NodeJS.WritableStream;
  private readonly failed: Promise<never>;
  private pending: string[] = [];
  private pendingChars = 0;

  constructor(readonly path: string) {
    let fd: number;
    try {
      fd = openSync(path, "w");
    } catch (error) {
      throw new ValidationError(`cannot write ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
    this.file = createWriteStream(path, { fd });
    this.failed = new Promise<never>((_, reject) => this.file.once("error", (error) => reject(new ValidationError(`cannot write ${path}: ${error.message}`))));
    this.failed.catch(() => {});
    const gzip = path.endsWith(".gz") ? createGzip() : null;
    if (gzip) gzip.pipe(this.file);
    this.sink = gzip ?? this.file;
  }

  async write(line: string): Promise<void> {
    this.pending.push(line);
    this.pendingChars += line.length + 1;
    if (this.pendingChars >= WRITE_CHUNK_CHARS) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const text = this.pending.join("\n") + "\n";
    this.pending = [];
    this.pendingChars = 0;
    if (!this.sink.write(text)) await Promise.race([once(this.sink, "drain"), this.failed]);
  }

  async close(): Promise<void> {
    await this.flush();
    this.sink.end();
    await Promise.race([once(this.file, "close"), this.failed]);
  }
}
