import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";

/** One process as /proc shows it. Counters are cumulative. */
export interface ProcessReading {
  pid: number;
  /** Start time in clock ticks since boot: with the pid, a unique id. */
  startTicks: number;
  comm: string;
  exe: string | null;
  uid: number;
  cpuSeconds: number;
  rssBytes: number;
  ioReadBytes: number | null;
  ioWriteBytes: number | null;
}

export interface NetCounters {
  rxBytes: number;
  txBytes: number;
}

let clockTicks: number | null = null;
/** USER_HZ; 100 on every mainstream Linux, asked of getconf once. */
export function clockTicksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

const PAGE_SIZE = 4096;

function read(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/**
 * Parses /proc/PID/stat. The command name is in parentheses and may itself
 * contain spaces and parentheses, so fields are counted from the last ')'.
 */
export function parseStat(text: string): { comm: string; utime: number; stime: number; startTicks: number; rssPages: number } | null {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return null;
  const rest = text.slice(close + 2).split(" ");
  // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22, rss 24.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const startTicks = Number(rest[19]);
  const rssPages = Number(rest[21]);
  if (![utime, stime, startTicks, rssPages].every(Number.isFinite)) return null;
  return { comm: text.slice(open + 1, close), utime, stime, startTicks, rssPages };
}

export function parseStatusUid(text: string | null): number | null {
  const match = text?.match(/^Uid:\s+(\d+)/m);
  return match ? Number(match[1]) : null;
}

export function parseProcIo(text: string | null): { read: number; write: number } | null {
  if (text === null) return null;
  const read = text.match(/^read_bytes:\s+(\d+)/m);
  const write = text.match(/^write_bytes:\s+(\d+)/m);
  return read && write ? { read: Number(read[1]), write: Number(write[1]) } : null;
}

/** Parses /proc/PID/net/dev: bytes over every interface but loopback. */
export function parseNetDev(text: string | null): NetCounters | null {
  if (text === null) return null;
  let rxBytes = 0;
  let txBytes = 0;
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (name === "lo") continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    rxBytes += fields[0] ?? 0;
    txBytes += fields[8] ?? 0;
  }
  return { rxBytes, txBytes };
}

export function listPids(procRoot = "/proc"): number[] {
  return readdirSync(procRoot)
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

/** When a process started, in clock ticks after boot (with its pid, what names one process); null when it has gone. */
export function readStartTicks(pid: number, procRoot = "/proc"): number | null {
  const text = read(join(procRoot, String(pid), "stat"));
  return text === null ? null : (parseStat(text)?.startTicks ?? null);
}

/** Reads one process; null when it has gone or is a kernel thread (no executable). */
export function readProcess(pid: number, procRoot = "/proc"): ProcessReading | null {
  const dir = join(procRoot, String(pid));
  const statText = read(join(dir, "stat"));
  if (statText === null) return null;
  const stat = parseStat(statText);
  if (!stat) return null;
  let exe: string | null = null;
  try {
    exe = readlinkSync(join(dir, "exe"));
  } catch {
    return null; // kernel thread, or gone
  }
  const uid = parseStatusUid(read(join(dir, "status")));
  if (uid === null) return null;
  const io = parseProcIo(read(join(dir, "io")));
  return {
    pid,
    startTicks: stat.startTicks,
    comm: stat.comm,
    exe: exe.replace(/ \(deleted\)$/, ""),
    uid,
    cpuSeconds: (stat.utime + stat.stime) / clockTicksPerSecond(),
    rssBytes: stat.rssPages * PAGE_SIZE,
    ioReadBytes: io?.read ?? null,
    ioWriteBytes: io?.write ?? null,
  };
}

/** Environment of a process (NUL-separated), or an empty map if unreadable. */
export function readEnviron(pid: number, procRoot = "/proc"): Map<string, string> {
  const env = new Map<string, string>();
  const text = read(join(procRoot, String(pid), "environ"));
  if (!text) return env;
  for (const entry of text.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

/** Network counters of the process's namespace, only when it is not the host's own. */
export function readOwnNetns(pid: number, procRoot = "/proc"): NetCounters | null {
  try {
    const own = readlinkSync(join(procRoot, String(pid), "ns", "net"));
    const host = readlinkSync(join(procRoot, "1", "ns", "net"));
    if (own === host) return null; // host namespace: bytes are not this workload's alone
  } catch {
    return null;
  }
  return parseNetDev(read(join(procRoot, String(pid), "net", "dev")));
}

/** The process's cgroup paths per v1 controller (and "" for v2's unified entry). */
export function readProcCgroups(pid: number, procRoot = "/proc"): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of (read(join(procRoot, String(pid), "cgroup")) ?? "").split("\n")) {
    const [, controllers, path] = line.split(":");
    if (controllers === undefined || path === undefined) continue;
    for (const controller of controllers.split(",")) out.set(controller, path);
  }
  return out;
}

/** uid → user name from an /etc/passwd text. */
export function parsePasswd(text: string | null): Map<number, string> {
  const users = new Map<number, string>();
  for (const line of (text ?? "").split("\n")) {
    const [name, , uid] = line.split(":");
    if (name && uid !== undefined && /^\d+$/.test(uid)) users.set(Number(uid), name);
  }
  return users;
}
