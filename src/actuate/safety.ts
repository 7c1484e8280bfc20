import { z } from "zod";

/**
 * Guard rails every actuation passes, in one place (DESIGN.md, "Actuation
 * and remediation"): a memory limit never below current usage plus a
 * margin, nothing beyond the node's capacity, at most N changes per
 * workload per hour, and a dry-run switch that writes nothing.
 */
export const safetyConfig = z
  .object({
    /** Report what would be done, change nothing. */
    dryRun: z.boolean().default(false),
    /** A memory limit stays at least usage × (1 + fraction) + bytes. */
    memoryMarginFraction: z.number().min(0).max(10).default(0.1),
    memoryMarginBytes: z.number().min(0).default(32 * 1024 * 1024),
    /** Limit changes of one running workload per sliding hour (its first setting is not a change). */
    maxChangesPerHour: z.number().int().min(0).max(3600).default(12),
  })
  .strict();
export type SafetyConfig = z.infer<typeof safetyConfig>;

export interface Capacity {
  cpu: number;
  memory: number;
}

export interface ProposedLimits {
  cpuLimitCores: number | null;
  memoryLimitBytes: number | null;
}

export interface SafetyVerdict {
  limits: ProposedLimits;
  /** Why a value was changed or the change refused; empty when the proposal passed as is. */
  notes: string[];
  /** False when the rate limit refused the change altogether. */
  allowed: boolean;
}

const HOUR_MS = 3_600_000;

/**
 * Sliding-hour change counter per workload. The clock is passed in. It holds
 * only workloads changed in the last hour (swept at most every ten minutes of
 * that clock), so workloads that come and go leave nothing behind.
 */
export class ChangeLimiter {
  private readonly changes = new Map<string, number[]>();
  private sweptAt = -Infinity;

  constructor(private readonly maxPerHour: number) {}

  private recent(workload: string, nowMs: number): number[] {
    if (nowMs - this.sweptAt >= HOUR_MS / 6) {
      this.sweptAt = nowMs;
      for (const [other, times] of this.changes) if (times[times.length - 1]! <= nowMs - HOUR_MS) this.changes.delete(other);
    }
    const kept = (this.changes.get(workload) ?? []).filter((at) => at > nowMs - HOUR_MS);
    if (kept.length > 0) this.changes.set(workload, kept);
    else this.changes.delete(workload);
    return kept;
  }

  allows(workload: string, nowMs: number): boolean {
    return this.recent(workload, nowMs).length < this.maxPerHour;
  }

  record(workload: string, nowMs: number): void {
    this.changes.set(workload, [...this.recent(workload, nowMs), nowMs]);
  }

  forget(workload: string): void {
    this.changes.delete(workload);
  }

  /** Workloads it holds changes of. */
  get size(): number {
    return this.changes.size;
  }
}

/** The smallest memory limit allowed over a usage. */
export function memoryFloor(config: SafetyConfig, usageBytes: number): number {
  // Less a hair, so that binary fractions (0.1) do not add a byte.
  return Math.ceil(usageBytes * (1 + config.memoryMarginFraction) + config.memoryMarginBytes - 1e-6);
}

/**
 * Checks limits proposed for a workload against the rules. Pure: usage,
 * capacity and whether the rate limit still has room are inputs.
 * `initial` is the first setting of a new workload (usage is zero, the rate
 * limit does not apply).
 */
export function checkProposal(
  config: SafetyConfig,
  proposed: ProposedLimits,
  context: { memoryUsageBytes: number | null; capacity: Capacity; initial: boolean; rateAllows: boolean },
): SafetyVerdict {
  const notes: string[] = [];
  if (!context.initial && !context.rateAllows) {
    return { limits: proposed, notes: [`refused: more than ${config.maxChangesPerHour} limit changes in the last hour`], allowed: false };
  }
  let { cpuLimitCores, memoryLimitBytes } = proposed;
  if (cpuLimitCores !== null && cpuLimitCores > context.capacity.cpu) {
    notes.push(`cpu limit ${cpuLimitCores.toFixed(3)} cores capped at node capacity ${context.capacity.cpu}`);
    cpuLimitCores = context.capacity.cpu;
  }
  if (memoryLimitBytes !== null) {
    const usage = context.memoryUsageBytes ?? 0;
    const floor = memoryFloor(config, usage);
    if (!context.initial && usage > 0 && memoryLimitBytes < floor) {
      notes.push(`memory limit ${memoryLimitBytes} raised to ${floor}: current usage ${usage} plus margin`);
      memoryLimitBytes = floor;
    }
    if (memoryLimitBytes > context.capacity.memory) {
      notes.push(`memory limit ${memoryLimitBytes} capped at node capacity ${context.capacity.memory}`);
      memoryLimitBytes = context.capacity.memory;
    }
  }
  return { limits: { cpuLimitCores, memoryLimitBytes }, notes, allowed: true };
}
