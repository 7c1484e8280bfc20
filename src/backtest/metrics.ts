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
  private readonly lastLimit = new Map<number, number>();
  private readonly spanByWorkload = new Map<number, { first: number; last: number; steps: number }>();

  constructor(readonly isMemory: boolean) {}

  /**
   * One scored step of one workload. `coldStart` is true during the
   * workload's first hour of life.
   */
  add(workload: number, ts: number, usage: number, limit: number, coldStart: boolean): void {
    this.all.add(usage, limit);
    if (coldStart) this.cold.add(usage, limit);
    const previous = this.lastLimit.get(workload);
    if (previous !== undefined && Math.abs(previous - limit) > 1e-9 * Math.max(1, Math.abs(previous))) this.changes++;
    this.lastLimit.set(workload, limit);
    const span = this.spanByWorkload.get(workload);
    if (!span) this.spanByWorkload.set(workload, { first: ts, last: ts, steps: 1 });
    else {
      span.last = ts;
      span.steps++;
    }
  }

  /** Workload-days scored: each workload's span plus one median step. */
  private workloadDays(): number {
    let ms = 0;
    for (const span of this.spanByWorkload.values()) {
      const step = span.steps > 1 ? (span.last - span.first) / (span.steps - 1) : 0;
      ms += span.last - span.first + step;
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
