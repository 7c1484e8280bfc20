import { execFile } from "node:child_process";
import { basename, isAbsolute } from "node:path";
import { promisify } from "node:util";
import { z } from "zod";
import { DecodeError, TransientError, errorMessage } from "../core/errors.js";

const run = promisify(execFile);
const MIB = 1024 * 1024;

/** One GPU as `nvidia-smi --query-gpu` or DCGM's exporter reports it. */
export interface GpuDevice {
  index: number;
  uuid: string | null;
  name: string | null;
  /** Percent of time a kernel ran (utilization.gpu, DCGM_FI_DEV_GPU_UTIL). */
  utilizationPercent: number | null;
  memoryUsedBytes: number | null;
  memoryTotalBytes: number | null;
}

/** One process on a GPU (`--query-compute-apps`, `pmon`). */
export interface GpuProcess {
  pid: number;
  gpuUuid: string | null;
  gpuIndex: number | null;
  processName: string | null;
  usedMemoryBytes: number | null;
  /** SM utilisation of this process, percent (pmon only). */
  smPercent: number | null;
}

export interface GpuSnapshot {
  devices: GpuDevice[];
  processes: GpuProcess[];
}

const MISSING = new Set(["[N/A]", "N/A", "[Not Supported]", "[Not Found]", "[Unknown Error]", "-", ""]);

/** "used_gpu_memory [MiB]" → "used_memory"; "utilization.gpu [%]" → "utilization.gpu". */
function fieldName(header: string): string {
  const name = header.trim().replace(/\s*\[[^\]]*\]$/, "").toLowerCase();
  return name === "used_gpu_memory" ? "used_memory" : name;
}

function cellValue(text: string): string | null {
  const value = text.trim();
  return MISSING.has(value) ? null : value;
}

function number(text: string | null | undefined): number | null {
  if (text === null || text === undefined) return null;
  const match = /^(-?[\d.]+)\s*(MiB|%|W|MHz|C)?$/.exec(text.trim());
  if (!match) return null;
  const value = Number(match[1]);
  return Number.isFinite(value) ? value : null;
}

/**
 * Parses `nvidia-smi --query-* --format=csv[,noheader][,nounits]` output
 * into rows keyed by field name. With a header, the header names the
 * fields (units in brackets dropped); without one, `fields` must. nvidia-smi
 * does not quote: a process name holding ", " spills into extra cells,
 * which are joined back into `process_name`.
 */
export function parseSmiCsv(text: string, fields?: string[]): Array<Record<string, string | null>> {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== "");
  if (lines.length === 0) return [];
  let names: string[];
  if (fields) names = fields.map(fieldName);
  else {
    names = lines.shift()!.split(",").map(fieldName);
    if (names.some((name) => !/^[a-z_][a-z0-9_.]*$/.test(name))) throw new DecodeError(`nvidia-smi output does not start with a CSV header: ${JSON.stringify(text.slice(0, 80))}`);
  }
  const spill = names.indexOf("process_name");
  return lines.map((line, row) => {
    let cells = line.split(",");
    if (cells.length > names.length && spill >= 0) {
      const extra = cells.length - names.length;
      cells = [...cells.slice(0, spill), cells.slice(spill, spill + extra + 1).join(","), ...cells.slice(spill + extra + 1)];
    }
    if (cells.length !== names.length) throw new DecodeError(`nvidia-smi CSV row ${row + 1} has ${cells.length} cells, the header ${names.length}`, line);
    return Object.fromEntries(names.map((name, i) => [name, cellValue(cells[i]!)]));
  });
}

export function devicesFromSmi(rows: Array<Record<string, string | null>>): GpuDevice[] {
  return rows.map((row, position) => ({
    index: number(row["index"]) ?? position,
    uuid: row["uuid"] ?? null,
    name: row["name"] ?? null,
    utilizationPercent: number(row["utilization.gpu"]),
    memoryUsedBytes: scale(number(row["memory.used"]), MIB),
    memoryTotalBytes: scale(number(row["memory.total"]), MIB),
  }));
}

export function processesFromSmi(rows: Array<Record<string, string | null>>): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const row of rows) {
    const pid = number(row["pid"]);
    if (pid === null || !Number.isInteger(pid) || pid <= 0) continue;
    out.push({
      pid,
      gpuUuid: row["gpu_uuid"] ?? null,
      gpuIndex: null,
      processName: row["process_name"] ?? null,
      usedMemoryBytes: scale(number(row["used_memory"]), MIB),
      smPercent: null,
    });
  }
  return out;
}

function scale(value: number | null, factor: number): number | null {
  return value === null ? null : value * factor;
}

/** Parses `nvidia-smi pmon -c 1` (per-process SM and memory-controller use); idle GPUs show dashes. */
export function parsePmon(text: string): GpuProcess[] {
  const lines = text.split(/\r?\n/);
  const header = lines.find((line) => line.startsWith("# gpu"));
  if (!header) return [];
  const names = header.replace(/^#\s*/, "").trim().split(/\s+/);
  const out: GpuProcess[] = [];
  for (const line of lines) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const cells = line.trim().split(/\s+/);
    const get = (name: string) => {
      const at = names.indexOf(name);
      return at < 0 ? null : cellValue(cells[at] ?? "");
    };
    const pid = number(get("pid"));
    if (pid === null || pid <= 0) continue;
    out.push({
      pid,
      gpuUuid: null,
      gpuIndex: number(get("gpu")),
      processName: names.includes("command") ? cells.slice(names.indexOf("command")).join(" ") || null : null,
      usedMemoryBytes: null,
      smPercent: number(get("sm")),
    });
  }
  return out;
}

const PROM_LINE = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/;
const PROM_LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Reads DCGM exporter metrics (Prometheus text format) into devices: utilisation and framebuffer use. */
export function devicesFromDcgm(text: string): GpuDevice[] {
  const byGpu = new Map<string, GpuDevice>();
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const match = PROM_LINE.exec(line.trim());
    if (!match) continue;
    const labels = new Map<string, string>();
    for (const label of (match[3] ?? "").matchAll(PROM_LABEL)) labels.set(label[1]!, label[2]!);
    const gpu = labels.get("gpu");
    const value = Number(match[4]);
    if (gpu === undefined || !Number.isFinite(value)) continue;
    let device = byGpu.get(gpu);
    if (!device) {
      device = { index: Number(gpu), uuid: labels.get("UUID") ?? null, name: labels.get("modelName") ?? null, utilizationPercent: null, memoryUsedBytes: null, memoryTotalBytes: null };
      byGpu.set(gpu, device);
    }
    if (match[1] === "DCGM_FI_DEV_GPU_UTIL") device.utilizationPercent = value;
    else if (match[1] === "DCGM_FI_DEV_FB_USED") device.memoryUsedBytes = value * MIB;
    else if (match[1] === "DCGM_FI_DEV_FB_TOTAL") device.memoryTotalBytes = value * MIB;
    else if (match[1] === "DCGM_FI_DEV_FB_FREE" && device.memoryTotalBytes === null && device.memoryUsedBytes !== null) device.memoryTotalBytes = device.memoryUsedBytes + value * MIB;
  }
  return [...byGpu.values()].sort((a, b) => a.index - b.index);
}

export const gpuCollectorConfig = z
  .object({
    kind: z.literal("gpu"),
    /** Absolute path to nvidia-smi; the collector is off when it is not there. */
    nvidiaSmi: z
      .string()
      .refine((path) => isAbsolute(path) && basename(path) === "nvidia-smi" && !path.includes("\0"), "an absolute path to the 'nvidia-smi' binary")
      .default("/usr/bin/nvidia-smi"),
    /** Also ask `pmon` for per-process SM use (it samples for about a second). */
    perProcessUtilization: z.boolean().default(true),
    timeoutSeconds: z.number().min(1).max(60).default(10),
  })
  .strict();
export type GpuCollectorConfig = z.infer<typeof gpuCollectorConfig>;

export const QUERY_GPU = ["index", "uuid", "name", "utilization.gpu", "utilization.memory", "memory.used", "memory.total"];
export const QUERY_APPS = ["gpu_uuid", "pid", "process_name", "used_memory"];

/** What a set of processes uses: GPUs busy (sum of SM shares) and bytes of GPU memory. */
export function usageOf(snapshot: GpuSnapshot, pids: ReadonlySet<number>): { gpuUtilization: number | null; gpuMemoryBytes: number | null } {
  const mine = snapshot.processes.filter((process) => pids.has(process.pid));
  if (mine.length === 0) return { gpuUtilization: null, gpuMemoryBytes: null };
  const memory = mine.reduce((sum, process) => sum + (process.usedMemoryBytes ?? 0), 0);
  const sm = mine.filter((process) => process.smPercent !== null);
  let utilization: number | null = null;
  if (sm.length > 0) utilization = sm.reduce((sum, process) => sum + process.smPercent!, 0) / 100;
  else {
    // No per-process figure: a process alone on its GPU gets that GPU's utilisation.
    const byUuid = new Map(snapshot.devices.map((device) => [device.uuid, device]));
    let total = 0;
    let known = false;
    for (const process of mine) {
      const device = process.gpuUuid ? byUuid.get(process.gpuUuid) : undefined;
      const sharing = snapshot.processes.filter((other) => other.gpuUuid === process.gpuUuid).length;
      if (device?.utilizationPercent !== null && device?.utilizationPercent !== undefined && sharing === 1) {
        total += device.utilizationPercent / 100;
        known = true;
      }
    }
    utilization = known ? total : null;
  }
  return { gpuUtilization: utilization, gpuMemoryBytes: memory };
}

/**
 * Reads per-GPU and per-process use from nvidia-smi (argument vector, no
 * shell). Only queries: it never changes a device setting.
 */
export class GpuCollector {
  constructor(readonly config: GpuCollectorConfig) {}

  private async smi(args: string[]): Promise<string> {
    try {
      const { stdout } = await run(this.config.nvidiaSmi, args, { timeout: this.config.timeoutSeconds * 1000, maxBuffer: 8 << 20 });
      return stdout;
    } catch (error) {
      throw new TransientError(`nvidia-smi ${args.join(" ")}: ${(error as { stderr?: string }).stderr?.trim() || errorMessage(error)}`);
    }
  }

  async snapshot(): Promise<GpuSnapshot> {
    const [gpus, apps] = await Promise.all([
      this.smi([`--query-gpu=${QUERY_GPU.join(",")}`, "--format=csv,nounits"]),
      this.smi([`--query-compute-apps=${QUERY_APPS.join(",")}`, "--format=csv,nounits"]),
    ]);
    const devices = devicesFromSmi(parseSmiCsv(gpus));
    const processes = processesFromSmi(parseSmiCsv(apps));
    if (this.config.perProcessUtilization) {
      const pmon = parsePmon(await this.smi(["pmon", "-c", "1", "-s", "u"]).catch(() => ""));
      const uuidOf = new Map(devices.map((device) => [device.index, device.uuid]));
      for (const row of pmon) {
        const match = processes.find((process) => process.pid === row.pid && (row.gpuIndex === null || process.gpuUuid === uuidOf.get(row.gpuIndex)));
        if (match) match.smPercent = row.smPercent;
        else processes.push({ ...row, gpuUuid: row.gpuIndex === null ? null : (uuidOf.get(row.gpuIndex) ?? null) });
      }
    }
    return { devices, processes };
  }
}
