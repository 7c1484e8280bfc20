import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve, sep } from "node:path";
import { z } from "zod";
import { detectHostLayout, readCgroup, type CgroupLayout, type CgroupReading } from "../collect/cgroup.js";
import { ActuationError, ConfigError, ValidationError, errorMessage } from "../core/errors.js";
import { safePathSegment } from "../core/keys.js";

/** A single directory name: no separators, never `.` or `..`. */
const segment = z
  .string()
  .regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/, "one directory name: letters, digits, '.', '_' and '-', not starting with '.'");

export const cgroupConnectorConfig = z
  .object({
    kind: z.literal("cgroup"),
    version: z.enum(["auto", "v1", "v2"]).default("auto"),
    /** augur's own subtree under each hierarchy: it creates, changes and removes cgroups only below it. */
    root: segment.default("augur"),
    /** CFS period for CPU quotas, microseconds (the kernel's default is 100 ms). */
    cpuPeriodMicros: z.number().int().min(1_000).max(1_000_000).default(100_000),
    /** Soft limit (v1 memory.soft_limit_in_bytes, v2 memory.high) as a fraction of the memory limit; 0: none. */
    memorySoftFraction: z.number().min(0).max(1).default(0.9),
  })
  .strict();
export type CgroupConnectorConfig = z.infer<typeof cgroupConnectorConfig>;

/** What a cgroup connector can set. Absent fields are left as they are; null removes a limit. */
export interface CgroupLimits {
  cpuLimitCores?: number | null;
  /** v2 weight scale 1..10000 (100 is the default); v1 shares are weight × 1024 / 100. */
  cpuWeight?: number;
  /** CPU list, e.g. "0-3,6". */
  cpuset?: string;
  memoryLimitBytes?: number | null;
  memorySoftLimitBytes?: number | null;
  /** Per block device "major:minor": bytes per second, 0 removes the limit. */
  io?: Array<{ device: string; readBytesPerSecond?: number; writeBytesPerSecond?: number }>;
}

/** One control file to bring to a value. */
export interface Setting {
  controller: "cpu" | "cpuset" | "memory" | "blkio" | "freezer" | "unified";
  file: string;
  value: string;
}

/** What `apply` changed (or would change, in dry-run): file → [before, after]. */
export type Changes = Record<string, [string | null, string]>;

const V1_UNLIMITED = 2 ** 62;
const PAGE = 4096;

/** The last segment of a run's cgroup: its id, sanitised, and a digest of it. */
export function runCgroupName(runId: string): string {
  return safePathSegment(runId, 64);
}

/** Expands "0-2,5" into a sorted, de-duplicated list, so "0,1,2" and "0-2" compare equal. */
export function parseCpuList(text: string): number[] {
  const out = new Set<number>();
  const trimmed = text.trim();
  if (trimmed === "") return [];
  for (const part of trimmed.split(",")) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!match) throw new ValidationError(`cpuset: '${part}' is not a CPU number or range`, text);
    const from = Number(match[1]);
    const to = match[2] === undefined ? from : Number(match[2]);
    if (to < from || to - from > 4096) throw new ValidationError(`cpuset: bad range '${part}'`, text);
    for (let cpu = from; cpu <= to; cpu++) out.add(cpu);
  }
  return [...out].sort((a, b) => a - b);
}

const DEVICE = /^\d{1,4}:\d{1,7}$/;

function checkLimits(limits: CgroupLimits): void {
  const positive = (name: string, value: number | null | undefined, max: number) => {
    if (value === undefined || value === null) return;
    if (!Number.isFinite(value) || value <= 0 || value > max) throw new ValidationError(`${name} must be a positive number up to ${max} (got ${value})`, limits);
  };
  positive("cpuLimitCores", limits.cpuLimitCores, 100_000);
  positive("memoryLimitBytes", limits.memoryLimitBytes, 2 ** 60);
  positive("memorySoftLimitBytes", limits.memorySoftLimitBytes, 2 ** 60);
  if (limits.cpuWeight !== undefined && (!Number.isInteger(limits.cpuWeight) || limits.cpuWeight < 1 || limits.cpuWeight > 10_000)) {
    throw new ValidationError(`cpuWeight must be an integer in 1..10000 (got ${limits.cpuWeight})`, limits);
  }
  if (limits.cpuset !== undefined && parseCpuList(limits.cpuset).length === 0) throw new ValidationError("cpuset must name at least one CPU", limits);
  for (const rule of limits.io ?? []) {
    if (!DEVICE.test(rule.device)) throw new ValidationError(`io device must be major:minor (got ${JSON.stringify(rule.device)})`, limits);
    for (const value of [rule.readBytesPerSecond, rule.writeBytesPerSecond]) {
      if (value !== undefined && (!Number.isInteger(value) || value < 0 || value > 2 ** 53)) throw new ValidationError(`io rate must be a non-negative integer (got ${value})`, limits);
    }
  }
}

/** The control files and values that express `limits` on one cgroup version. */
export function settingsFor(version: "v1" | "v2", limits: CgroupLimits, periodMicros: number): Setting[] {
  checkLimits(limits);
  const out: Setting[] = [];
  const pageRound = (bytes: number) => String(Math.max(PAGE, Math.floor(bytes / PAGE) * PAGE));
  const quota = (cores: number) => String(Math.max(1000, Math.round(cores * periodMicros)));
  if (version === "v1") {
    if (limits.cpuLimitCores !== undefined) {
      out.push({ controller: "cpu", file: "cpu.cfs_period_us", value: String(periodMicros) });
      out.push({ controller: "cpu", file: "cpu.cfs_quota_us", value: limits.cpuLimitCores === null ? "-1" : quota(limits.cpuLimitCores) });
    }
    if (limits.cpuWeight !== undefined) out.push({ controller: "cpu", file: "cpu.shares", value: String(Math.max(2, Math.round((limits.cpuWeight * 1024) / 100))) });
    if (limits.cpuset !== undefined) out.push({ controller: "cpuset", file: "cpuset.cpus", value: parseCpuList(limits.cpuset).join(",") });
    if (limits.memoryLimitBytes !== undefined) out.push({ controller: "memory", file: "memory.limit_in_bytes", value: limits.memoryLimitBytes === null ? "-1" : pageRound(limits.memoryLimitBytes) });
    if (limits.memorySoftLimitBytes !== undefined) {
      out.push({ controller: "memory", file: "memory.soft_limit_in_bytes", value: limits.memorySoftLimitBytes === null ? "-1" : pageRound(limits.memorySoftLimitBytes) });
    }
    for (const rule of limits.io ?? []) {
      if (rule.readBytesPerSecond !== undefined) out.push({ controller: "blkio", file: "blkio.throttle.read_bps_device", value: `${rule.device} ${rule.readBytesPerSecond}` });
      if (rule.writeBytesPerSecond !== undefined) out.push({ controller: "blkio", file: "blkio.throttle.write_bps_device", value: `${rule.device} ${rule.writeBytesPerSecond}` });
    }
  } else {
    if (limits.cpuLimitCores !== undefined) {
      out.push({ controller: "unified", file: "cpu.max", value: `${limits.cpuLimitCores === null ? "max" : quota(limits.cpuLimitCores)} ${periodMicros}` });
    }
    if (limits.cpuWeight !== undefined) out.push({ controller: "unified", file: "cpu.weight", value: String(limits.cpuWeight) });
    if (limits.cpuset !== undefined) out.push({ controller: "unified", file: "cpuset.cpus", value: parseCpuList(limits.cpuset).join(",") });
    if (limits.memoryLimitBytes !== undefined) out.push({ controller: "unified", file: "memory.max", value: limits.memoryLimitBytes === null ? "max" : pageRound(limits.memoryLimitBytes) });
    if (limits.memorySoftLimitBytes !== undefined) {
      out.push({ controller: "unified", file: "memory.high", value: limits.memorySoftLimitBytes === null ? "max" : pageRound(limits.memorySoftLimitBytes) });
    }
    for (const rule of limits.io ?? []) {
      const parts = [rule.device];
      if (rule.readBytesPerSecond !== undefined) parts.push(`rbps=${rule.readBytesPerSecond === 0 ? "max" : rule.readBytesPerSecond}`);
      if (rule.writeBytesPerSecond !== undefined) parts.push(`wbps=${rule.writeBytesPerSecond === 0 ? "max" : rule.writeBytesPerSecond}`);
      if (parts.length > 1) out.push({ controller: "unified", file: "io.max", value: parts.join(" ") });
    }
  }
  return out;
}

/**
 * Reduces a control file's text to the form `settingsFor` writes, so that a
 * value read back compares equal to the value that produced it (page
 * rounding, "max" vs v1's 2^63-ish, CPU list ranges, per-device lines).
 */
export function normalise(setting: Setting, text: string | null): string | null {
  if (text === null) return null;
  const value = text.trim();
  switch (setting.file) {
    case "memory.limit_in_bytes":
    case "memory.soft_limit_in_bytes":
      return Number(value) >= V1_UNLIMITED ? "-1" : value;
    case "cpuset.cpus":
      return parseCpuList(value).join(",");
    case "blkio.throttle.read_bps_device":
    case "blkio.throttle.write_bps_device":
    case "io.max": {
      // One line per device: compare the line of the device this setting is about.
      const device = setting.value.split(" ")[0]!;
      const line = value.split("\n").find((l) => l.startsWith(`${device} `));
      if (setting.file === "io.max") {
        if (!line) return `${device}${setting.value.includes("rbps") ? " rbps=max" : ""}${setting.value.includes("wbps") ? " wbps=max" : ""}`;
        const fields = new Map(line.split(/\s+/).slice(1).map((f) => f.split("=") as [string, string]));
        return [device, ...setting.value.split(" ").slice(1).map((f) => `${f.split("=")[0]}=${fields.get(f.split("=")[0]!) ?? "max"}`)].join(" ");
      }
      return line ?? `${device} 0`;
    }
    default:
      return value;
  }
}

/** What a cgroup holds now, read back from its files. */
export interface CgroupState {
  path: string;
  version: "v1" | "v2";
  reading: CgroupReading;
  settings: Record<string, string | null>;
  frozen: boolean | null;
}

/**
 * The cgroup connector: creates, sets, freezes and removes cgroups below
 * augur's own root on each hierarchy, for cgroup v1 and v2. Every path is
 * built from sanitised segments and checked to stay below the root; every
 * write goes to a known control file. Applying the same limits twice
 * writes nothing the second time; a failed apply restores what it changed.
 */
export class CgroupConnector {
  readonly layout: CgroupLayout;

  constructor(
    readonly config: CgroupConnectorConfig,
    layout?: CgroupLayout | null,
  ) {
    const found = layout === undefined ? detectHostLayout(config.version) : layout;
    if (!found) throw new ConfigError(`cgroup connector: no cgroup ${config.version === "auto" ? "" : config.version + " "}hierarchy is mounted on this host`);
    this.layout = found;
  }

  get version(): "v1" | "v2" {
    return this.layout.version;
  }

  /** The cgroup of one run: /<root>/<image>/<user>/<run>, each segment sanitised. */
  runPath(image: string, user: string, runId: string): string {
    return `/${this.config.root}/${safePathSegment(image)}/${safePathSegment(user)}/${runCgroupName(runId)}`;
  }

  /** Controller → mount point of the hierarchies this connector writes. */
  private mounts(): Array<[Setting["controller"], string]> {
    if (this.layout.version === "v2") return [["unified", this.layout.roots.unified!]];
    const roots = this.layout.roots as Record<string, string | undefined>;
    const out: Array<[Setting["controller"], string]> = [];
    const seen = new Set<string>();
    // cpu and cpuacct are often mounted together: one directory per mount point.
    for (const controller of ["cpu", "cpuacct", "cpuset", "memory", "blkio", "freezer"] as const) {
      const mount = roots[controller];
      if (mount && !seen.has(mount)) {
        seen.add(mount);
        out.push([controller as Setting["controller"], mount]);
      }
    }
    return out;
  }

  /**
   * The directory of `path` under a mount, refusing anything outside
   * `<mount>/<root>`: relative paths must start with the root and contain
   * no `.`/`..` segments, and an existing directory must resolve (symbolic
   * links followed) below the root.
   */
  dir(mount: string, path: string): string {
    const parts = path.split("/").filter((part) => part !== "");
    if (parts[0] !== this.config.root || parts.some((part) => part === "." || part === ".." || part.includes("\0"))) {
      throw new ValidationError(`cgroup path ${JSON.stringify(path)} is not below augur's root /${this.config.root}`, path);
    }
    const base = resolve(mount, this.config.root);
    const full = resolve(mount, ...parts);
    if (full !== base && !full.startsWith(base + sep)) throw new ValidationError(`cgroup path ${JSON.stringify(path)} leaves augur's root`, path);
    if (existsSync(full)) {
      const real = realpathSync(full);
      const realBase = realpathSync(base);
      if (real !== realBase && !real.startsWith(realBase + sep)) throw new ValidationError(`cgroup path ${JSON.stringify(path)} resolves outside augur's root`, path);
    }
    return full;
  }

  private mountOf(controller: Setting["controller"]): string | null {
    if (this.layout.version === "v2") return this.layout.roots.unified ?? null;
    return (this.layout.roots as Record<string, string | undefined>)[controller] ?? null;
  }

  /** Creates the cgroup on every hierarchy (v2: enabling controllers down the tree). Idempotent. */
  create(path: string): void {
    const parts = path.split("/").filter(Boolean);
    for (const [, mount] of this.mounts()) {
      const target = this.dir(mount, path);
      if (this.layout.version === "v2") {
        let at = mount;
        for (const part of parts) {
          this.enableSubtreeControllers(at);
          at = join(at, part);
          if (!existsSync(at)) mkdirSync(at);
        }
      } else {
        // v1 cpuset: a child starts with no CPUs or memory nodes; copy the parent's at each level.
        let at = mount;
        for (const part of parts) {
          const parent = at;
          at = join(at, part);
          if (existsSync(at)) continue;
          mkdirSync(at);
          if (mount === this.layout.roots.cpuset) {
            for (const file of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(at, file), readFileSync(join(parent, file), "utf8").trim() || "0");
          }
        }
      }
      if (!existsSync(target)) throw new ActuationError(`cgroup ${path} could not be created under ${mount}`, path);
    }
  }

  private enableSubtreeControllers(dir: string): void {
    const available = readOptional(join(dir, "cgroup.controllers"))?.trim().split(/\s+/) ?? [];
    const enabled = readOptional(join(dir, "cgroup.subtree_control"))?.trim().split(/\s+/) ?? [];
    const wanted = ["cpuset", "cpu", "memory", "io", "pids"].filter((c) => available.includes(c) && !enabled.includes(c));
    if (wanted.length > 0) writeFileSync(join(dir, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
  }

  exists(path: string): boolean {
    return this.mounts().some(([, mount]) => existsSync(this.dir(mount, path)));
  }

  private settingFile(path: string, setting: Setting): string {
    const mount = this.mountOf(setting.controller);
    if (!mount) throw new ActuationError(`the ${setting.controller} controller is not mounted on this host: cannot set ${setting.file}`, setting);
    return join(this.dir(mount, path), setting.file);
  }

  /** Current values of the settings `limits` would touch, normalised. */
  current(path: string, settings: Setting[]): Array<string | null> {
    return settings.map((setting) => {
      const mount = this.mountOf(setting.controller);
      return mount ? normalise(setting, readOptional(join(this.dir(mount, path), setting.file))) : null;
    });
  }

  /**
   * Brings the cgroup to `limits`. Writes only settings whose value differs;
   * if a write fails, restores the ones already written (newest first) and
   * throws an ActuationError naming the file and the kernel's answer.
   */
  apply(path: string, limits: CgroupLimits, options: { dryRun?: boolean } = {}): Changes {
    const settings = settingsFor(this.layout.version, limits, this.config.cpuPeriodMicros);
    const before = this.current(path, settings);
    const changes: Changes = {};
    const written: Array<{ setting: Setting; previous: string | null }> = [];
    for (const [index, setting] of settings.entries()) {
      const previous = before[index] ?? null;
      if (previous === normalise(setting, setting.value)) continue;
      changes[setting.file] = [previous, setting.value];
      if (options.dryRun) continue;
      const file = this.settingFile(path, setting);
      try {
        writeFileSync(file, setting.value);
        written.push({ setting, previous });
      } catch (error) {
        const rollbackErrors: string[] = [];
        for (const done of written.reverse()) {
          if (done.previous === null) continue;
          try {
            writeFileSync(this.settingFile(path, done.setting), done.previous);
          } catch (rollbackError) {
            rollbackErrors.push(`${done.setting.file}: ${errorMessage(rollbackError)}`);
          }
        }
        throw new ActuationError(
          `cgroup ${path}: writing ${JSON.stringify(setting.value)} to ${setting.file} failed: ${errorMessage(error)}; ` +
            (rollbackErrors.length ? `rollback failed for ${rollbackErrors.join(", ")}` : `rolled back ${written.length} earlier setting(s)`),
          { path, setting },
          (error as NodeJS.ErrnoException).code === "EBUSY",
        );
      }
    }
    return changes;
  }

  /** Freezes (or thaws) every process of the cgroup. Idempotent. */
  setFrozen(path: string, frozen: boolean): boolean {
    if (this.layout.version === "v2") {
      const file = join(this.dir(this.layout.roots.unified!, path), "cgroup.freeze");
      const wanted = frozen ? "1" : "0";
      if (readOptional(file)?.trim() === wanted) return false;
      writeFileSync(file, wanted);
      return true;
    }
    const mount = this.mountOf("freezer");
    if (!mount) throw new ActuationError("the freezer controller is not mounted on this host", path);
    const file = join(this.dir(mount, path), "freezer.state");
    const wanted = frozen ? "FROZEN" : "THAWED";
    if (readOptional(file)?.trim() === wanted) return false;
    writeFileSync(file, wanted);
    return true;
  }

  isFrozen(path: string): boolean | null {
    if (this.layout.version === "v2") {
      const events = readOptional(join(this.dir(this.layout.roots.unified!, path), "cgroup.events"));
      const match = events ? /^frozen (\d)$/m.exec(events) : null;
      return match ? match[1] === "1" : null;
    }
    const mount = this.mountOf("freezer");
    const state = mount ? readOptional(join(this.dir(mount, path), "freezer.state"))?.trim() : undefined;
    return state === undefined ? null : state === "FROZEN";
  }

  /** The `cgroup.procs` files a new process writes its pid into to join the cgroup on every hierarchy. */
  procsFiles(path: string): string[] {
    return this.mounts().map(([, mount]) => join(this.dir(mount, path), "cgroup.procs"));
  }

  /** Moves a process into the cgroup on every hierarchy. */
  attach(path: string, pid: number): void {
    if (!Number.isInteger(pid) || pid <= 0) throw new ValidationError(`not a process id: ${pid}`, pid);
    for (const file of this.procsFiles(path)) writeFileSync(file, String(pid));
  }

  read(path: string): CgroupReading {
    // readCgroup joins the mount with the path; check it first.
    for (const [, mount] of this.mounts()) this.dir(mount, path);
    return readCgroup(this.layout, path);
  }

  state(path: string, limits: CgroupLimits = { cpuLimitCores: null, cpuWeight: 100, memoryLimitBytes: null, memorySoftLimitBytes: null }): CgroupState {
    const settings = settingsFor(this.layout.version, limits, this.config.cpuPeriodMicros);
    const values = this.current(path, settings);
    return {
      path,
      version: this.layout.version,
      reading: this.read(path),
      settings: Object.fromEntries(settings.map((setting, index) => [setting.file, values[index] ?? null])),
      frozen: this.isFrozen(path),
    };
  }

  /**
   * Every run cgroup (`/<root>/<image>/<user>/<run>`) on any hierarchy: when
   * it was made (epoch ms, the newest of its directories' modification
   * times: a cgroup directory's is when it was made; writing its files or
   * adding processes does not change it), whether a process or a cgroup of
   * its own is in it on some hierarchy, and whether every one could be read.
   */
  private runCgroups(): Map<string, { madeAt: number; busy: boolean; readable: boolean }> {
    const runs = new Map<string, { madeAt: number; busy: boolean; readable: boolean }>();
    for (const [, mount] of this.mounts()) {
      const base = this.dir(mount, `/${this.config.root}`);
      for (const image of subdirectories(base)) {
        for (const user of subdirectories(join(base, image))) {
          for (const run of subdirectories(join(base, image, user))) {
            const path = `/${this.config.root}/${image}/${user}/${run}`;
            const entry = runs.get(path) ?? { madeAt: -Infinity, busy: false, readable: true };
            runs.set(path, entry);
            const dir = join(base, image, user, run);
            try {
              entry.madeAt = Math.max(entry.madeAt, statSync(dir).mtimeMs);
              entry.busy ||= readFileSync(join(dir, "cgroup.procs"), "utf8").trim() !== "" || subdirectories(dir).length > 0;
            } catch {
              // Removed meanwhile, or not a cgroup: not ours to judge.
              entry.readable = false;
            }
          }
        }
      }
    }
    return runs;
  }

  /**
   * The run cgroups that hold no process and no cgroup of their own on any
   * hierarchy and were made before `before` (epoch ms). What is left of a
   * run whose augur was killed before it cleaned up.
   */
  emptyRunsMadeBefore(before: number): string[] {
    return this.runsNow(before).empty;
  }

  /** The run cgroups a process (or a cgroup of their own) is in: runs going on, whichever augur started them. */
  busyRuns(): string[] {
    return this.runsNow(-Infinity).busy;
  }

  /** Both of the above from one walk of the run cgroups (what a sweep needs). */
  runsNow(emptyBefore: number): { empty: string[]; busy: string[] } {
    const empty: string[] = [];
    const busy: string[] = [];
    for (const [path, run] of this.runCgroups()) {
      if (run.busy) busy.push(path);
      else if (run.readable && run.madeAt < emptyBefore) empty.push(path);
    }
    return { empty, busy };
  }

  /** Removes the cgroup (it must be empty) and the image/user directories above it that became empty. */
  remove(path: string): void {
    const parts = path.split("/").filter(Boolean);
    for (const [, mount] of this.mounts()) {
      this.dir(mount, path);
      for (let depth = parts.length; depth > 1; depth--) {
        const dir = this.dir(mount, "/" + parts.slice(0, depth).join("/"));
        if (!existsSync(dir)) continue;
        try {
          rmdirSync(dir);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (depth === parts.length && code !== "ENOENT") throw new ActuationError(`cgroup ${path} could not be removed: ${errorMessage(error)}`, path, code === "EBUSY");
          break; // a parent still holds other runs
        }
      }
    }
  }
}

function subdirectories(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

function readOptional(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}
