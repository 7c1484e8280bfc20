import { readFileSync } from "node:fs";
import { z } from "zod";
import type { Metrics } from "../core/metrics.js";
import { emptySample, validateSample } from "../core/sample.js";
import type { Sample } from "../core/types.js";
import { regexSchema } from "../config/load.js";
import { pairKey } from "../core/keys.js";
import { TOPICS, type Transport } from "../transport/topic.js";
import { attributeCgroup, attributeProcess, cgroupRuleSchema, processRuleSchema } from "./attribution.js";
import { detectHostLayout, listCgroups, readCgroup, type CgroupLayout, type CgroupReading } from "./cgroup.js";
import { listPids, parsePasswd, type NetCounters, readEnviron, readOwnNetns, readProcCgroups, readProcess } from "./proc.js";

export const hostCollectorConfig = z
  .object({
    kind: z.literal("host"),
    /** How often every workload is sampled. */
    intervalSeconds: z.number().min(0.1).max(3600).default(10),
    cgroup: z
      .object({
        enabled: z.boolean().default(true),
        version: z.enum(["auto", "v1", "v2"]).default("auto"),
        /** How deep below the hierarchy roots to look for workload cgroups. */
        maxDepth: z.number().int().min(1).max(16).default(6),
        rules: z.array(cgroupRuleSchema).default([]),
        /**
         * Cgroups left to their owner: neither they nor their processes are
         * sampled here. augur's launcher samples the runs it starts under
         * its own root itself (it knows their image and user).
         */
        ignore: z.array(regexSchema).default(["^/augur(/|$)"]),
      })
      .strict()
      .default({}),
    process: z
      .object({
        enabled: z.boolean().default(true),
        rules: z.array(processRuleSchema).default([]),
        /** uid → user name, over /etc/passwd. */
        users: z.record(z.string().regex(/^\d+$/, "a numeric uid"), z.string().min(1)).default({}),
        /** Leave augur's own process out. */
        excludeSelf: z.boolean().default(true),
      })
      .strict()
      .default({}),
  })
  .strict();
export type HostCollectorConfig = z.infer<typeof hostCollectorConfig>;

/** A workload's cumulative counters at one reading (monotonic seconds). */
export interface Counters {
  atSeconds: number;
  cpuSeconds: number | null;
  ioReadBytes: number | null;
  ioWriteBytes: number | null;
  netRxBytes: number | null;
  netTxBytes: number | null;
  oomKills: number | null;
  throttledPeriods: number | null;
  throttledSeconds: number | null;
}

/** Per-second rate between two cumulative readings; null across a reset or a gap in data. */
export function rate(now: number | null, before: number | null | undefined, seconds: number): number | null {
  if (now === null || before === null || before === undefined || seconds <= 0 || now < before) return null;
  return (now - before) / seconds;
}

export function delta(now: number | null, before: number | null | undefined): number {
  if (now === null || before === null || before === undefined || now < before) return 0;
  return now - before;
}

/** The counters of a cgroup or process reading and its network namespace's, at `atSeconds`. */
export function countersOf(
  raw: Pick<Counters, "cpuSeconds" | "ioReadBytes" | "ioWriteBytes" | "oomKills" | "throttledPeriods" | "throttledSeconds">,
  net: NetCounters | null,
  atSeconds: number,
): Counters {
  return {
    atSeconds,
    cpuSeconds: raw.cpuSeconds,
    ioReadBytes: raw.ioReadBytes,
    ioWriteBytes: raw.ioWriteBytes,
    netRxBytes: net?.rxBytes ?? null,
    netTxBytes: net?.txBytes ?? null,
    oomKills: raw.oomKills,
    throttledPeriods: raw.throttledPeriods,
    throttledSeconds: raw.throttledSeconds,
  };
}

/**
 * The sample's rates (CPU, disk, network) and throttling between two
 * readings of the same workload; returns the seconds between them. OOM kills
 * are the caller's: what a first reading's count means differs.
 */
export function fillRates(sample: Sample, now: Counters, before: Counters): number {
  const seconds = now.atSeconds - before.atSeconds;
  sample.cpuCores = rate(now.cpuSeconds, before.cpuSeconds, seconds);
  sample.diskReadBytesPerSecond = rate(now.ioReadBytes, before.ioReadBytes, seconds);
  sample.diskWriteBytesPerSecond = rate(now.ioWriteBytes, before.ioWriteBytes, seconds);
  sample.netRxBytesPerSecond = rate(now.netRxBytes, before.netRxBytes, seconds);
  sample.netTxBytesPerSecond = rate(now.netTxBytes, before.netTxBytes, seconds);
  sample.cpuThrottledPeriods = delta(now.throttledPeriods, before.throttledPeriods);
  sample.cpuThrottledSeconds = delta(now.throttledSeconds, before.throttledSeconds);
  return seconds;
}

/**
 * Samples every workload on this host: cgroups that an attribution rule
 * matches, and plain processes (outside those cgroups) that a process rule
 * matches. Counters become rates between consecutive readings; the first
 * reading of a workload carries only gauges (memory).
 */
export class HostCollector {
  private readonly layout: CgroupLayout | null;
  private readonly previous = new Map<string, Counters>();
  private readonly environCache = new Map<string, Map<string, string>>();
  private users: Map<number, string>;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();

  constructor(
    readonly config: HostCollectorConfig,
    private readonly transport: Transport,
    private readonly metrics: Metrics,
    private readonly host: string,
    private readonly procRoot = "/proc",
  ) {
    this.layout = config.cgroup.enabled ? detectHostLayout(config.cgroup.version) : null;
    this.users = this.loadUsers();
  }

  get cgroupVersion(): string | null {
    return this.layout?.version ?? null;
  }

  private loadUsers(): Map<number, string> {
    let passwd: string | null = null;
    try {
      passwd = readFileSync("/etc/passwd", "utf8");
    } catch {
      // no passwd: uids stay numeric unless configured
    }
    const users = parsePasswd(passwd);
    for (const [uid, name] of Object.entries(this.config.process.users)) users.set(Number(uid), name);
    return users;
  }

  /** One pass over the host. `nowMs` stamps the samples; `monotonicSeconds` measures rates. */
  collectOnce(nowMs: number, monotonicSeconds: number): Sample[] {
    const samples: Sample[] = [];
    const alive = new Set<string>();
    const claimedPids = new Set<number>();
    const claimedPaths = new Set<string>();
    let cgroupCount = 0;
    let processCount = 0;

    if (this.layout && (this.config.cgroup.rules.length > 0 || this.config.cgroup.ignore.length > 0)) {
      for (const path of listCgroups(this.layout, this.config.cgroup.maxDepth)) {
        if (this.config.cgroup.ignore.some((pattern) => pattern.test(path))) {
          claimedPaths.add(path); // its processes are not plain processes either
          continue;
        }
        // Read once, and only for cgroups a rule cares about.
        let cached: CgroupReading | undefined;
        const read = () => (cached ??= readCgroup(this.layout!, path));
        const firstPid = () => read().pids[0];
        const attribution = attributeCgroup(this.config.cgroup.rules, path, (name) => {
          if (name !== "user" && name !== "uid") return undefined;
          const pid = firstPid();
          const process = pid === undefined ? null : readProcess(pid, this.procRoot);
          if (!process) return undefined;
          return name === "uid" ? String(process.uid) : (this.users.get(process.uid) ?? String(process.uid));
        });
        if (!attribution) continue;
        const reading = read();
        for (const pid of reading.pids) claimedPids.add(pid);
        claimedPaths.add(path);
        const net = reading.pids[0] === undefined ? null : readOwnNetns(reading.pids[0], this.procRoot);
        const workload = `cgroup:${path}`;
        alive.add(workload);
        cgroupCount++;
        samples.push(
          this.toSample(workload, attribution, "cgroup", nowMs, monotonicSeconds, { ...reading, net }, {
            memoryWorkingSetBytes: reading.memoryWorkingSetBytes,
            memoryRssBytes: reading.memoryRssBytes,
            memoryLimitBytes: reading.memoryLimitBytes,
            cpuLimitCores: reading.cpuLimitCores,
          }),
        );
      }
    }

    if (this.config.process.enabled && this.config.process.rules.length > 0) {
      for (const pid of listPids(this.procRoot)) {
        if (claimedPids.has(pid) || (this.config.process.excludeSelf && pid === process.pid)) continue;
        const reading = readProcess(pid, this.procRoot);
        if (!reading || reading.exe === null) continue;
        if (this.inClaimedCgroup(pid, claimedPaths)) continue;
        const workload = `pid:${pid}@${reading.startTicks}`;
        const attribution = attributeProcess(this.config.process.rules, {
          pid,
          exe: reading.exe,
          comm: reading.comm,
          uid: reading.uid,
          userName: this.users.get(reading.uid),
          environ: () => this.environ(workload, pid),
        });
        if (!attribution) continue;
        alive.add(workload);
        processCount++;
        samples.push(
          this.toSample(
            workload,
            attribution,
            "proc",
            nowMs,
            monotonicSeconds,
            { ...reading, oomKills: null, throttledPeriods: null, throttledSeconds: null, net: readOwnNetns(pid, this.procRoot) },
            { memoryWorkingSetBytes: reading.rssBytes, memoryRssBytes: reading.rssBytes, memoryLimitBytes: null, cpuLimitCores: null },
          ),
        );
      }
    }

    for (const workload of this.previous.keys()) if (!alive.has(workload)) this.previous.delete(workload);
    for (const workload of this.environCache.keys()) if (!alive.has(workload)) this.environCache.delete(workload);
    this.metrics.workloads.set({ source: "cgroup" }, cgroupCount);
    this.metrics.workloads.set({ source: "proc" }, processCount);
    return samples;
  }

  /** A process counts once: if it sits in (or below) a cgroup a rule claimed, the cgroup speaks for it. */
  private inClaimedCgroup(pid: number, claimedPaths: Set<string>): boolean {
    if (claimedPaths.size === 0) return false;
    const groups = readProcCgroups(pid, this.procRoot);
    const path = this.layout?.version === "v2" ? groups.get("") : (groups.get("memory") ?? groups.get("cpuacct"));
    if (path === undefined) return false;
    for (let at = path; at.length > 1; at = at.slice(0, at.lastIndexOf("/")) || "/") if (claimedPaths.has(at)) return true;
    return false;
  }

  private environ(workload: string, pid: number): Map<string, string> {
    let env = this.environCache.get(workload);
    if (!env) this.environCache.set(workload, (env = readEnviron(pid, this.procRoot)));
    return env;
  }

  private toSample(
    workload: string,
    attribution: { image: string; user: string },
    source: string,
    nowMs: number,
    monotonicSeconds: number,
    raw: Omit<Counters, "atSeconds" | "netRxBytes" | "netTxBytes"> & { net: NetCounters | null },
    gauges: Pick<Sample, "memoryWorkingSetBytes" | "memoryRssBytes" | "memoryLimitBytes" | "cpuLimitCores">,
  ): Sample {
    const counters = countersOf(raw, raw.net, monotonicSeconds);
    const before = this.previous.get(workload);
    this.previous.set(workload, counters);
    const sample = emptySample({ ts: Math.round(nowMs), workload, image: attribution.image, user: attribution.user, host: this.host, source });
    Object.assign(sample, gauges);
    if (before) {
      fillRates(sample, counters, before);
      sample.oomKills = delta(counters.oomKills, before.oomKills);
    }
    return sample;
  }

  /** Samples every interval and publishes to `augur.samples` until stopped. */
  start(): void {
    const tick = () => {
      this.running = this.running.then(async () => {
        try {
          const samples = this.collectOnce(Date.now(), performance.now() / 1000).map((sample) => validateSample(sample));
          this.metrics.recordsOut.inc({ stage: "collect" }, samples.length);
          await this.transport
            .topic<Sample>(TOPICS.samples)
            .publish(samples.map((sample) => ({ key: pairKey(sample.image, sample.user), value: sample, timestamp: sample.ts })));
        } catch (error) {
          this.metrics.stageErrors.inc({ stage: "collect" });
          console.error(`augur: collection failed: ${(error as Error).message}`);
        }
      });
    };
    tick();
    this.timer = setInterval(tick, this.config.intervalSeconds * 1000);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
