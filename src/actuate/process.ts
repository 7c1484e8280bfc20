import { constants } from "node:os";
import { z } from "zod";
import { readProcCgroups, readStartTicks } from "../collect/proc.js";
import { ActuationError, ValidationError } from "../core/errors.js";
import type { CgroupConnector } from "./cgroup.js";

export const processConnectorConfig = z
  .object({
    kind: z.literal("process"),
    /** After SIGTERM, how long a cgroup's processes get before SIGKILL. */
    graceSeconds: z.number().min(0).max(600).default(5),
  })
  .strict();
export type ProcessConnectorConfig = z.infer<typeof processConnectorConfig>;

const SIGNALS = new Set(["SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGSTOP", "SIGCONT", "SIGUSR1", "SIGUSR2", "SIGQUIT"]);

/**
 * Signals and kills, for remediation. It only signals processes that sit in
 * a cgroup below augur's root (read from /proc/PID/cgroup at the moment of
 * the signal): a process augur did not start is never touched.
 */
export class ProcessConnector {
  constructor(
    readonly config: ProcessConnectorConfig,
    private readonly cgroups: CgroupConnector,
    private readonly procRoot = "/proc",
  ) {}

  /** True when the process's cgroup (any hierarchy) is below augur's root. */
  owns(pid: number): boolean {
    const root = `/${this.cgroups.config.root}/`;
    for (const path of readProcCgroups(pid, this.procRoot).values()) if ((path + "/").startsWith(root)) return true;
    return false;
  }

  /** Whether `pid` is still the process that started at `startTicks` (not gone, and not a later one given its pid). */
  isSame(pid: number, startTicks: number): boolean {
    return readStartTicks(pid, this.procRoot) === startTicks;
  }

  /**
   * Signals a process of augur's. With `startTicks`, only the process that started
   * then: a pid reused since names another process. False when it has gone.
   */
  signal(pid: number, signal: string, startTicks?: number): boolean {
    if (!Number.isInteger(pid) || pid <= 1) throw new ValidationError(`not a process id augur may signal: ${pid}`, pid);
    if (!SIGNALS.has(signal)) throw new ValidationError(`unknown or disallowed signal ${JSON.stringify(signal)}`, signal);
    if (startTicks !== undefined && !this.isSame(pid, startTicks)) return false;
    if (!this.owns(pid)) throw new ActuationError(`process ${pid} is not in a cgroup below /${this.cgroups.config.root}: augur does not touch it`, pid);
    try {
      process.kill(pid, signal as keyof typeof constants.signals);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      return false; // already gone
    }
  }

  /**
   * Kills every process of a cgroup: freeze (so none can fork away), SIGKILL
   * each, thaw (so the kills are delivered). Returns the pids signalled.
   */
  killCgroup(path: string): number[] {
    const pids = this.cgroups.read(path).pids;
    if (pids.length === 0) return [];
    let frozen = false;
    try {
      frozen = this.cgroups.setFrozen(path, true) || this.cgroups.isFrozen(path) === true;
    } catch {
      // no freezer: kill without freezing
    }
    const killed: number[] = [];
    for (const pid of this.cgroups.read(path).pids) {
      try {
        process.kill(pid, "SIGKILL");
        killed.push(pid);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      }
    }
    if (frozen) this.cgroups.setFrozen(path, false);
    return killed;
  }
}
