import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync, realpathSync } from "node:fs";
import { join, sep } from "node:path";
import { z } from "zod";
import { ValidationError } from "../core/errors.js";
import type { BacktestResultView, ReportEntry } from "./types.js";

/** Report names: one plain file name, no path, no leading dot. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
/** Larger files are not read: a backtest result is a few kilobytes, a report a few hundred. */
export const MAX_REPORT_BYTES = 16 << 20;

const metricsShape = z
  .object({
    slack: z.number().nullable(),
    violation_rate: z.number().nullable(),
    unmet: z.number().nullable().optional(),
    changes_per_day: z.number().nullable().optional(),
    cold_start: z.object({ slack: z.number().nullable(), violation_rate: z.number().nullable() }).partial().optional(),
    oom_events: z.number().nullable().optional(),
  })
  .passthrough();

/** The parts of a backtest RESULT.json the dashboard reads; anything else is kept as it is. */
export const backtestResult = z
  .object({
    trace: z.string(),
    samples: z.number(),
    workloads: z.number(),
    elapsed_ms: z.number().optional(),
    policies: z.record(z.string(), z.record(z.string(), metricsShape)),
  })
  .passthrough();
export type BacktestResult = z.infer<typeof backtestResult>;
// What the schema accepts is what the page is typed to read.
const _readsAsView: (result: BacktestResult) => BacktestResultView = (result) => result;
void _readsAsView;

/**
 * Backtest results in one directory, read on request. Only regular files
 * directly in it count (no symlinks, nothing that resolves elsewhere); names
 * are checked before they touch the file system; big files are refused.
 */
export class ReportDirectory {
  private readonly root: string;

  constructor(dir: string) {
    this.root = realpathSync(dir);
  }

  static checkName(name: unknown): string {
    if (typeof name !== "string" || !NAME.test(name)) throw new ValidationError("report name must be a file name of letters, digits, '.', '_' and '-' (no path, no leading dot)", { name: String(name).slice(0, 80) });
    return name;
  }

  /** Modification time of `file` if it is a regular file directly in the directory, else null. */
  private modified(file: string): number | null {
    const path = join(this.root, file);
    try {
      const stat = lstatSync(path);
      // A symlink, a directory, a device: not a report.
      return stat.isFile() && realpathSync(path).startsWith(this.root + sep) ? stat.mtimeMs : null;
    } catch {
      return null;
    }
  }

  /** Reads `file` if it is a regular file directly in the directory and small enough; null if there is none. */
  private read(file: string): { text: string; modified: number } | null {
    const modified = this.modified(file);
    if (modified === null) return null;
    // O_NOFOLLOW: a file swapped for a symlink after the check is not followed.
    const fd = openSync(join(this.root, file), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) return null;
      const size = stat.size;
      if (size > MAX_REPORT_BYTES) throw new ValidationError(`${file} is larger than ${MAX_REPORT_BYTES} bytes`);
      const buffer = Buffer.alloc(size);
      let at = 0;
      while (at < size) {
        const n = readSync(fd, buffer, at, size - at, at);
        if (n === 0) break;
        at += n;
      }
      return { text: buffer.subarray(0, at).toString("utf8"), modified };
    } finally {
      closeSync(fd);
    }
  }

  result(name: string): BacktestResult | null {
    const file = this.read(`${ReportDirectory.checkName(name)}.json`);
    if (!file) return null;
    let raw: unknown;
    try {
      raw = JSON.parse(file.text);
    } catch (error) {
      throw new ValidationError(`${name}.json is not JSON: ${(error as Error).message}`);
    }
    const parsed = backtestResult.safeParse(raw);
    if (!parsed.success) throw new ValidationError(`${name}.json is not a backtest result: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    return parsed.data;
  }

  html(name: string): string | null {
    return this.read(`${ReportDirectory.checkName(name)}.html`)?.text ?? null;
  }

  /** Every readable result, newest first; files that are not results are listed under `refused` with the reason. */
  list(): { reports: ReportEntry[]; refused: Array<{ file: string; reason: string }> } {
    const reports: ReportEntry[] = [];
    const refused: Array<{ file: string; reason: string }> = [];
    const names = readdirSync(this.root).filter((file) => file.endsWith(".json"));
    for (const file of names) {
      const name = file.slice(0, -".json".length);
      if (!NAME.test(name)) {
        refused.push({ file: file.slice(0, 140), reason: "name is not a plain file name" });
        continue;
      }
      try {
        const result = this.result(name);
        if (!result) {
          refused.push({ file, reason: "not a regular file in the directory" });
          continue;
        }
        const resources = new Set<string>();
        for (const perResource of Object.values(result.policies)) for (const resource of Object.keys(perResource)) resources.add(resource);
        reports.push({
          name,
          trace: result.trace,
          samples: result.samples,
          workloads: result.workloads,
          policies: Object.keys(result.policies),
          resources: [...resources],
          html: this.modified(`${name}.html`) !== null,
          modified: this.modified(file) ?? 0,
        });
      } catch (error) {
        refused.push({ file, reason: (error as Error).message });
      }
    }
    reports.sort((a, b) => b.modified - a.modified || a.name.localeCompare(b.name));
    return { reports, refused };
  }
}
