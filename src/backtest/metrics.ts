// Backtest metrics of ../shared/DESIGN.md "Replay and backtest", summed over
// workloads and steps, per policy and resource.

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface ResourceScore {
  slack: number;
  violation_rate: number;
  unmet: number;
  changes_per_day: number;
  cold_start: { slack: number | null; violation_rate: number | null; steps: number };
  oom_events?: number;
  steps: number;
}

class Sums {
  limit = 0;
  slack = 0;
  usage = 0;
  unmet = 0;
  steps = 0;
  violations = 0;
  add(usage: number, limit: number): void {
    this.limit += limit;
    this.slack += Math.max(limit - usage, 0);
    this.usage += usage;
    this.unmet += Math.max(usage - limit, 0);
    this.steps++;
    if (usage > limit) this.violations++;
  }
}

/** Accumulates one policy's score on one resource. */
export class ScoreAccumulator {
  private readonly all = new Sums();
  private readonly cold = new Sums();
  private changes = 0;
  /** Per workload id (dense, from 0): its last limit, first and last scored step, steps. */
  private readonly lastLimit: number[] = [];
  private readonly first: number[] = [];
  private readonly last: number[] = [];
  private readonly stepsOf: number[] = [];

  constructor(readonly isMemory: boolean) {}

  /**
   * One scored step of one workload. `coldStart` is true during the
   * workload's first hour of life.
   */
  add(workload: number, ts: number, usage: number, limit: number, coldStart: boolean): void {
    this.all.add(usage, limit);
    if (coldStart) this.cold.add(usage, limit);
    const previous = this.lastLimit[workload];
    if (previous === undefined) {
      // A workload's first scored step: fill any ids skipped so the arrays stay dense.
      for (let w = this.stepsOf.length; w < workload; w++) this.stepsOf[w] = 0;
      this.first[workload] = ts;
      this.stepsOf[workload] = 0;
    } else if (Math.abs(previous - limit) > 1e-9 * Math.max(1, Math.abs(previous))) this.changes++;
    this.lastLimit[workload] = limit;
    this.last[workload] = ts;
    this.stepsOf[workload]!++;
  }

  /** Workload-days scored: each workload's span plus one median step. */
  private workloadDays(): number {
    let ms = 0;
    for (let w = 0; w < this.stepsOf.length; w++) {
      const steps = this.stepsOf[w]!;
      if (steps === 0) continue;
      const span = this.last[w]! - this.first[w]!;
      ms += span + (steps > 1 ? span / (steps - 1) : 0);
    }
    return ms / DAY;
  }

  result(): ResourceScore {
    const ratio = (a: number, b: number) => (b > 0 ? a / b : 0);
    const days = this.workloadDays();
    const score: ResourceScore = {
      slack: ratio(this.all.slack, this.all.limit),
      violation_rate: ratio(this.all.violations, this.all.steps),
      unmet: ratio(this.all.unmet, this.all.usage),
      changes_per_day: days > 0 ? this.changes / days : 0,
      cold_start: {
        slack: this.cold.steps > 0 ? ratio(this.cold.slack, this.cold.limit) : null,
        violation_rate: this.cold.steps > 0 ? ratio(this.cold.violations, this.cold.steps) : null,
        steps: this.cold.steps,
      },
      steps: this.all.steps,
    };
    if (this.isMemory) score.oom_events = this.all.violations;
    return score;
  }
}

export const COLD_START_MS = HOUR;

/** Periods of the clairvoyant references, aligned to UTC multiples; `trace` is the whole trace. */
export const CLAIRVOYANT_PERIODS: ReadonlyArray<readonly [string, number]> = [
  ["15m", HOUR / 4],
  ["1h", HOUR],
  ["6h", 6 * HOUR],
  ["24h", DAY],
  ["trace", Number.POSITIVE_INFINITY],
];

/**
 * The slack of clairvoyant limits: each workload's limit through each period
 * is its peak usage in that period, known in advance, so it never overruns.
 * Not a policy (it reads the future): a reference for how much of a trace's
 * slack a policy holding a limit for that long could remove at all.
 */
export function clairvoyantSlack(workloads: ReadonlyArray<{ ts: Float64Array; values: Partial<Record<string, Float64Array>> }>, resource: string): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const [name, period] of CLAIRVOYANT_PERIODS) {
    let limitSum = 0;
    let usageSum = 0;
    for (const workload of workloads) {
      const values = workload.values[resource];
      if (!values) continue;
      const { ts } = workload;
      let start = 0;
      while (start < values.length) {
        const bucket = Math.floor(ts[start]! / period); // 0 for the whole trace (period ∞)
        let end = start;
        let peak = 0;
        let usage = 0;
        let steps = 0;
        for (; end < values.length && Math.floor(ts[end]! / period) === bucket; end++) {
          const value = values[end]!;
          if (Number.isNaN(value)) continue;
          if (value > peak) peak = value;
          usage += value;
          steps++;
        }
        limitSum += peak * steps;
        usageSum += usage;
        start = end;
      }
    }
    out[name] = limitSum > 0 ? (limitSum - usageSum) / limitSum : null;
  }
  return out;
}
