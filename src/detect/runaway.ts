import type { Resource } from "../core/types.js";
import { capacityOf, expectedMax, firstOverCompute, last, type Detector, type DetectorView, type Finding } from "./detector.js";
import { isMostlyIdle } from "./miner.js";

/** Hourly means a stuck thread must hold above the workload's highest, and hours of history before. */
const SUSTAINED_HOURS = 2;
/** Three days: a workload's first busy days are its profile being learned, not a runaway. */
const MIN_HOURS_BEFORE = 72;
/** How far above its highest hourly mean: half a busy thread (cores or GPUs), and a quarter of that mean. */
const SUSTAINED_RISE = 0.5;
const SUSTAINED_FACTOR = 1.25;

/**
 * Runaway: `steps` consecutive steps of CPU (or GPU) use far above anything the
 * workload (or its profile) has done: more than `factor` × its historical
 * maximum and at least `minShare` of its capacity. A workload whose profile
 * is mostly idle is left to the miner detector. Or a stuck thread: a
 * sustained rise of hourly means (see `sustained`), idle workloads included.
 */
export class RunawayDetector implements Detector {
  readonly type = "cpu_runaway" as const;
  constructor(
    private readonly steps = 3,
    private readonly factor = 1.5,
    private readonly minShare = 0.3,
  ) {}

  check(view: DetectorView): Finding | null {
    return firstOverCompute((resource) => this.checkResource(view, resource));
  }

  private checkResource(view: DetectorView, resource: Resource): Finding | null {
    if (isMostlyIdle(view, resource)) return this.sustained(view, resource);
    const values = last(view, resource, this.steps);
    if (values.length < this.steps) return null;
    const expected = expectedMax(view, resource);
    const capacity = capacityOf(view, resource);
    const floor = capacity !== null ? capacity * this.minShare : 0;
    const threshold = Math.max(expected * this.factor, floor);
    if (!(expected > 0) || !values.every((v) => v > threshold)) return this.sustained(view, resource);
    const observed = Math.min(...values);
    const unit = resource === "cpu" ? "cores" : "GPUs";
    return {
      resource,
      observed,
      expected,
      score: observed / expected,
      severity: capacity !== null && observed > 0.9 * capacity ? "critical" : "warning",
      startIndex: view.ts.length - this.steps,
      message: `${resource === "cpu" ? "CPU" : "GPU"} above ${threshold.toPrecision(3)} ${unit} for ${this.steps} steps (at least ${observed.toPrecision(3)}), against a most-ever of ${expected.toPrecision(3)}`,
    };
  }

  /**
   * A stuck thread: the last SUSTAINED_HOURS hourly means each above both
   * 1.25 × and half a core (or GPU) more than the highest hourly mean before
   * them (the hour before them left out: it may hold the start; three days
   * of hours at least), and no step of the last hour back down to it — a
   * loop spinning for hours, often below the peaks of the workload's busiest
   * minutes (which the step path needs to clear). Idle workloads too: one
   * busy core on an idle machine is below what the miner detector calls
   * mining.
   */
  private sustained(view: DetectorView, resource: Resource): Finding | null {
    const blocks = view.blocks(resource);
    if (!blocks) return null;
    const { means, ends } = blocks;
    const n = means.length;
    // The hour before those may hold the start (part busy): it is neither judged nor part of the past.
    const past = n - SUSTAINED_HOURS - 1;
    if (blocks.completed - SUSTAINED_HOURS - 1 < MIN_HOURS_BEFORE) return null;
    let before = blocks.before;
    for (let i = 0; i < past; i++) if (means[i]! > before) before = means[i]!;
    if (!(before >= 0)) return null;
    const threshold = Math.max(before * SUSTAINED_FACTOR, before + SUSTAINED_RISE);
    let observed = Infinity;
    for (let i = n - SUSTAINED_HOURS; i < n; i++) {
      if (!(means[i]! > threshold)) return null;
      observed = Math.min(observed, means[i]!);
    }
    const lastHour = last(view, resource, view.ts.length);
    if (!lastHour.every((v) => v > before)) return null;
    const unit = resource === "cpu" ? "cores" : "GPUs";
    return {
      resource,
      observed,
      expected: before,
      score: observed / Math.max(before, 1e-9),
      severity: "warning",
      startIndex: 0,
      startTs: ends[past - 1] ?? ends[0]!,
      message: `${resource === "cpu" ? "CPU" : "GPU"} averaged at least ${observed.toPrecision(3)} ${unit} for ${SUSTAINED_HOURS} hours, without a step back down to ${before.toPrecision(3)}, its highest hourly mean before`,
    };
  }
}
