import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Raw cumulative counters and gauges of one cgroup, as the kernel reports them. */
export interface CgroupReading {
  /** CPU time used, seconds (cumulative). */
  cpuSeconds: number | null;
  memoryUsageBytes: number | null;
  /** Usage minus inactive file cache: what cAdvisor and the kubelet call the working set. */
  memoryWorkingSetBytes: number | null;
  memoryRssBytes: number | null;
  memoryLimitBytes: number | null;
  cpuLimitCores: number | null;
  oomKills: number | null;
  throttledPeriods: number | null;
  throttledSeconds: number | null;
  ioReadBytes: number | null;
  ioWriteBytes: number | null;
  pids: number[];
}

export type CgroupVersion = "v1" | "v2";

/** Where each controller of interest is mounted (v1) or the unified root (v2). */
export interface CgroupLayout {
  version: CgroupVersion;
  /** v2: the one root; v1: controller → mount point. */
  roots: { unified?: string; cpu?: string; cpuacct?: string; cpuset?: string; memory?: string; blkio?: string; freezer?: string };
}

/** cgroup v1 reports "no limit" as a page-rounded 2^63 − 1. */
const V1_UNLIMITED = 2 ** 62;

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null; // the cgroup vanished, or this controller is not there
  }
}

function readNumber(path: string): number | null {
  const text = readText(path);
  if (text === null) return null;
  const value = Number(text.trim());
  return Number.isFinite(value) ? value : null;
}

/** Parses "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control). */
export function parseFlatKeyed(text: string | null): Map<string, number> {
  const out = new Map<string, number>();
  if (text === null) return out;
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && Number.isFinite(Number(value))) out.set(key, Number(value));
  }
  return out;
}

/** Parses v1 blkio.throttle.io_service_bytes ("8:0 Read 123") into read and write totals. */
export function parseBlkioServiceBytes(text: string | null): { read: number; write: number } | null {
  if (text === null) return null;
  let read = 0;
  let write = 0;
  for (const line of text.split("\n")) {
    const [device, op, value] = line.trim().split(/\s+/);
    if (!device || device === "Total" || value === undefined) continue;
    if (op === "Read") read += Number(value) || 0;
    else if (op === "Write") write += Number(value) || 0;
  }
  return { read, write };
}

/** Parses v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=…") into read and write totals. */
export function parseIoStat(text: string | null): { read: number; write: number } | null {
  if (text === null) return null;
  let read = 0;
  let write = 0;
  for (const line of text.split("\n")) {
    for (const field of line.trim().split(/\s+/).slice(1)) {
      const [key, value] = field.split("=");
      if (key === "rbytes") read += Number(value) || 0;
      else if (key === "wbytes") write += Number(value) || 0;
    }
  }
  return { read, write };
}

function parsePids(text: string | null): number[] {
  if (text === null) return [];
  return text
    .split("\n")
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/** Finds the cgroup mounts from a mountinfo/mounts text ("… - cgroup cgroup rw,memory"). */
export function detectLayout(mountsText: string, preferred: "auto" | CgroupVersion = "auto"): CgroupLayout | null {
  const roots: CgroupLayout["roots"] = {};
  let unified: string | undefined;
  for (const line of mountsText.split("\n")) {
    const fields = line.trim().split(/\s+/);
    // /proc/mounts: device mountpoint fstype options …
    const [, mountPoint, fsType, options] = fields;
    if (!mountPoint || !fsType || !options) continue;
    const point = mountPoint.replace(/\\040/g, " ");
    if (fsType === "cgroup2") unified = point;
    if (fsType !== "cgroup") continue;
    for (const option of options.split(",")) {
      if (option === "cpu" || option === "cpuacct" || option === "cpuset" || option === "memory" || option === "blkio" || option === "freezer") roots[option] = point;
    }
  }
  const hasV1 = roots.memory !== undefined || roots.cpuacct !== undefined;
  // A hybrid host mounts an empty cgroup2 beside v1 controllers; v1 holds the data then.
  const unifiedControllers = unified === undefined ? [] : (readText(join(unified, "cgroup.controllers")) ?? "").trim().split(/\s+/);
  const unifiedHasControllers = unifiedControllers.includes("memory") || unifiedControllers.includes("cpu");
  if (preferred === "v2" || (preferred === "auto" && unified && (!hasV1 || unifiedHasControllers))) {
    return unified ? { version: "v2", roots: { unified } } : null;
  }
  return hasV1 ? { version: "v1", roots } : null;
}

export function detectHostLayout(preferred: "auto" | CgroupVersion = "auto"): CgroupLayout | null {
  return detectLayout(readText("/proc/mounts") ?? "", preferred);
}

/** Relative cgroup paths ("/a/b") under the layout's hierarchies, at most `maxDepth` deep. */
export function listCgroups(layout: CgroupLayout, maxDepth: number): string[] {
  const roots = layout.version === "v2" ? [layout.roots.unified] : [layout.roots.memory, layout.roots.cpuacct];
  const seen = new Set<string>();
  for (const root of roots) {
    if (!root || !existsSync(root)) continue;
    const walk = (relative: string, depth: number) => {
      if (depth > maxDepth) return;
      let entries;
      try {
        entries = readdirSync(join(root, relative), { withFileTypes: true });
      } catch {
        return;
      }
      for (const entry of entries) {
        if (!entry.isDirectory()) continue;
        const child = `${relative}/${entry.name}`;
        seen.add(child);
        walk(child, depth + 1);
      }
    };
    walk("", 1);
  }
  return [...seen].sort();
}

/** Reads one cgroup's counters. Missing controllers or files give nulls, never throw. */
export function readCgroup(layout: CgroupLayout, path: string): CgroupReading {
  return layout.version === "v2" ? readV2(layout.roots.unified!, path) : readV1(layout.roots, path);
}

function readV1(roots: CgroupLayout["roots"], path: string): CgroupReading {
  const memoryDir = roots.memory ? join(roots.memory, path) : null;
  const cpuacctDir = roots.cpuacct ? join(roots.cpuacct, path) : null;
  const cpuDir = roots.cpu ? join(roots.cpu, path) : null;
  const blkioDir = roots.blkio ? join(roots.blkio, path) : null;

  const usageNs = cpuacctDir ? readNumber(join(cpuacctDir, "cpuacct.usage")) : null;
  const memoryStat = parseFlatKeyed(memoryDir ? readText(join(memoryDir, "memory.stat")) : null);
  const usage = memoryDir ? readNumber(join(memoryDir, "memory.usage_in_bytes")) : null;
  const inactiveFile = memoryStat.get("total_inactive_file") ?? memoryStat.get("inactive_file") ?? 0;
  const limit = memoryDir ? readNumber(join(memoryDir, "memory.limit_in_bytes")) : null;
  const oomControl = parseFlatKeyed(memoryDir ? readText(join(memoryDir, "memory.oom_control")) : null);
  const cpuStat = parseFlatKeyed(cpuDir ? readText(join(cpuDir, "cpu.stat")) : null);
  const quota = cpuDir ? readNumber(join(cpuDir, "cpu.cfs_quota_us")) : null;
  const period = cpuDir ? readNumber(join(cpuDir, "cpu.cfs_period_us")) : null;
  const io = parseBlkioServiceBytes(blkioDir ? readText(join(blkioDir, "blkio.throttle.io_service_bytes")) : null);
  const pids = parsePids(readText(join(memoryDir ?? cpuacctDir ?? "/nonexistent", "cgroup.procs")));

  return {
    cpuSeconds: usageNs === null ? null : usageNs / 1e9,
    memoryUsageBytes: usage,
    memoryWorkingSetBytes: usage === null ? null : Math.max(0, usage - inactiveFile),
    memoryRssBytes: memoryStat.get("total_rss") ?? memoryStat.get("rss") ?? null,
    memoryLimitBytes: limit === null || limit >= V1_UNLIMITED ? null : limit,
    cpuLimitCores: quota !== null && period && quota > 0 ? quota / period : null,
    oomKills: oomControl.get("oom_kill") ?? null,
    throttledPeriods: cpuStat.get("nr_throttled") ?? null,
    throttledSeconds: cpuStat.has("throttled_time") ? cpuStat.get("throttled_time")! / 1e9 : null,
    ioReadBytes: io?.read ?? null,
    ioWriteBytes: io?.write ?? null,
    pids,
  };
}

function readV2(root: string, path: string): CgroupReading {
  const dir = join(root, path);
  const cpuStat = parseFlatKeyed(readText(join(dir, "cpu.stat")));
  const memoryStat = parseFlatKeyed(readText(join(dir, "memory.stat")));
  const usage = readNumber(join(dir, "memory.current"));
  const maxText = readText(join(dir, "memory.max"))?.trim();
  const cpuMax = readText(join(dir, "cpu.max"))?.trim().split(/\s+/);
  const events = parseFlatKeyed(readText(join(dir, "memory.events")));
  const io = parseIoStat(readText(join(dir, "io.stat")));
  const quota = cpuMax && cpuMax[0] !== "max" ? Number(cpuMax[0]) : null;
  const period = cpuMax ? Number(cpuMax[1]) : null;
  return {
    cpuSeconds: cpuStat.has("usage_usec") ? cpuStat.get("usage_usec")! / 1e6 : null,
    memoryUsageBytes: usage,
    memoryWorkingSetBytes: usage === null ? null : Math.max(0, usage - (memoryStat.get("inactive_file") ?? 0)),
    memoryRssBytes: memoryStat.get("anon") ?? null,
    memoryLimitBytes: maxText === undefined || maxText === "max" ? null : Number(maxText),
    cpuLimitCores: quota !== null && period ? quota / period : null,
    oomKills: events.get("oom_kill") ?? null,
    throttledPeriods: cpuStat.get("nr_throttled") ?? null,
    throttledSeconds: cpuStat.has("throttled_usec") ? cpuStat.get("throttled_usec")! / 1e6 : null,
    ioReadBytes: io?.read ?? null,
    ioWriteBytes: io?.write ?? null,
    pids: parsePids(readText(join(dir, "cgroup.procs"))),
  };
}
