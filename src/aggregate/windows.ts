import { pairKey } from "../core/keys.js";
import { QuantileSketch } from "../core/sketch.js";
import { RESOURCES, sampleValue, type Resource, type ResourceWindowStats, type Sample, type WindowAggregate } from "../core/types.js";

/** The aggregate stage's window and sketch accuracy when a config names none (also the backtest's `augur-live` policy's). */
export const DEFAULT_WINDOW_SECONDS = 60;
export const DEFAULT_SKETCH_ACCURACY = 0.01;

export interface WindowingOptions {
  kind: "tumbling" | "sliding";
  sizeMs: number;
  /** Distance between window starts; equals sizeMs for tumbling windows. */
  slideMs: number;
  /** How far behind the newest event time a sample may arrive and still count. */
  allowedLatenessMs: number;
  /** Relative accuracy of the per-window quantile sketch. */
  sketchAccuracy: number;
}

export type RejectReason = "late" | "duplicate";

export interface AddResult {
  /** Windows that the advancing watermark closed, oldest first. */
  closed: WindowAggregate[];
  /** Set when the sample was not counted. */
  rejected?: RejectReason;
}

class ResourceAccumulator {
  readonly sketch: QuantileSketch;
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;
  constructor(accuracy: number) {
    this.sketch = new QuantileSketch(accuracy);
  }
  add(value: number): void {
    this.sketch.add(value);
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }
  stats(): ResourceWindowStats {
    return {
      count: this.count,
      mean: this.sum / this.count,
      min: this.min,
      max: this.max,
      p50: this.sketch.quantile(0.5),
      p90: this.sketch.quantile(0.9),
      p95: this.sketch.quantile(0.95),
      p99: this.sketch.quantile(0.99),
      sketch: this.sketch.toState(),
    };
  }
}

class WindowAccumulator {
  readonly resources = new Map<Resource, ResourceAccumulator>();
  readonly workloads = new Set<string>();
  sampleCount = 0;
  oomKills = 0;
  cpuThrottledPeriods = 0;
  cpuThrottledSeconds = 0;
  memoryLimitBytes: number | null = null;
  cpuLimitCores: number | null = null;

  constructor(
    readonly image: string,
    readonly user: string,
    readonly windowStart: number,
    readonly windowEnd: number,
    private readonly accuracy: number,
  ) {}

  add(sample: Sample): void {
    this.sampleCount++;
    this.workloads.add(sample.workload);
    for (const resource of RESOURCES) {
      const value = sampleValue(sample, resource);
      if (value === null) continue;
      let accumulator = this.resources.get(resource);
      if (!accumulator) this.resources.set(resource, (accumulator = new ResourceAccumulator(this.accuracy)));
      accumulator.add(value);
    }
    this.oomKills += sample.oomKills;
    this.cpuThrottledPeriods += sample.cpuThrottledPeriods;
    this.cpuThrottledSeconds += sample.cpuThrottledSeconds;
    if (sample.memoryLimitBytes !== null) this.memoryLimitBytes = Math.max(this.memoryLimitBytes ?? 0, sample.memoryLimitBytes);
    if (sample.cpuLimitCores !== null) this.cpuLimitCores = Math.max(this.cpuLimitCores ?? 0, sample.cpuLimitCores);
  }

  result(): WindowAggregate {
    const resources: WindowAggregate["resources"] = {};
    for (const [resource, accumulator] of this.resources) resources[resource] = accumulator.stats();
    return {
      image: this.image,
      user: this.user,
      windowStart: this.windowStart,
      windowEnd: this.windowEnd,
      sampleCount: this.sampleCount,
      workloadCount: this.workloads.size,
      resources,
      oomKills: this.oomKills,
      cpuThrottledPeriods: this.cpuThrottledPeriods,
      cpuThrottledSeconds: this.cpuThrottledSeconds,
      memoryLimitBytes: this.memoryLimitBytes,
      cpuLimitCores: this.cpuLimitCores,
    };
  }
}

/** How many recent timestamps per workload are remembered to spot duplicates. */
const RECENT_TIMESTAMPS = 64;

/** What the windowing keeps of one (image, user) pair. */
interface PairState {
  /** The pair's own watermark: its newest event time less the allowed lateness, or a tick's. */
  mark: number;
  /** The lane (a partition) its samples come from, when the caller says. */
  lane: number | undefined;
  /** Open windows by their end. */
  windows: Map<number, WindowAccumulator>;
}

/**
 * Event-time windows per (image, user). The clock is the records' own, per
 * pair: a pair's watermark is the newest event time of that pair minus the
 * allowed lateness, and its window closes once that passes the window's end.
 * Per pair, not per stage, because a pair's samples arrive in order on one
 * partition while partitions run ahead of each other: one partition's fast
 * replay must not make another's samples late. Samples for windows that have
 * closed are late; a second sample of a workload at a timestamp already
 * counted is a duplicate. Both are refused and reported, never counted twice.
 *
 * Watermarks that hold for many pairs at once bound what is kept: the common
 * one (`advanceWatermark`: idle ticks, end of stream) for every pair, and a
 * lane's floor (`advanceLaneFloor`) for the pairs whose samples come from
 * that lane (a partition). A pair with no open window whose own watermark
 * one of those has passed is forgotten: what it would refuse, they refuse.
 * Without them a stream that is never idle would keep a watermark for every
 * pair it ever saw.
 */
export class WindowAggregator {
  private readonly pairs = new Map<string, PairState>();
  private readonly laneFloors = new Map<number, number>();
  private readonly recent = new Map<string, { ts: number[]; newest: number; pair: string; lane: number | undefined }>();
  private openWindows = 0;
  private maxEventTs = -Infinity;
  private watermarkMs = -Infinity;
  private forgottenUpTo = -Infinity;

  constructor(readonly options: WindowingOptions) {
    if (!(options.sizeMs > 0) || !(options.slideMs > 0) || options.slideMs > options.sizeMs) {
      throw new RangeError("window size and slide must be > 0 and slide <= size");
    }
    if (options.kind === "tumbling" && options.slideMs !== options.sizeMs) throw new RangeError("tumbling windows slide by their size");
  }

  /** The watermark every pair has passed (set by `advanceWatermark`). */
  get watermark(): number {
    return this.watermarkMs;
  }

  /** Window starts that contain ts, aligned to the epoch. */
  private windowStarts(ts: number): number[] {
    const { sizeMs, slideMs } = this.options;
    const starts: number[] = [];
    const last = Math.floor(ts / slideMs) * slideMs;
    for (let start = last; start > ts - sizeMs; start -= slideMs) starts.push(start);
    return starts;
  }

  /** The watermark every pair of a lane has passed. */
  private floor(lane: number | undefined): number {
    return lane === undefined ? this.watermarkMs : Math.max(this.watermarkMs, this.laneFloors.get(lane) ?? -Infinity);
  }

  private pairWatermark(key: string, lane: number | undefined): number {
    const state = this.pairs.get(key);
    return state ? Math.max(state.mark, this.floor(state.lane)) : this.floor(lane);
  }

  /** Counts a sample, from `lane` when the caller tells (the partition it was read from). */
  add(sample: Sample, lane?: number): AddResult {
    const { sizeMs } = this.options;
    const key = pairKey(sample.image, sample.user);
    let state = this.pairs.get(key);
    if (state && lane !== undefined) state.lane = lane;
    const watermark = this.pairWatermark(key, lane);
    const starts = this.windowStarts(sample.ts).filter((start) => start + sizeMs > watermark);
    if (starts.length === 0) return { closed: [], rejected: "late" };
    if (this.isDuplicate(sample, key, state?.lane ?? lane)) return { closed: [], rejected: "duplicate" };
    if (!state) this.pairs.set(key, (state = { mark: -Infinity, lane, windows: new Map() }));
    for (const start of starts) {
      const end = start + sizeMs;
      let window = state.windows.get(end);
      if (!window) {
        state.windows.set(end, (window = new WindowAccumulator(sample.image, sample.user, start, end, this.options.sketchAccuracy)));
        this.openWindows++;
      }
      window.add(sample);
    }
    if (sample.ts > this.maxEventTs) this.maxEventTs = sample.ts;
    state.mark = Math.max(state.mark, sample.ts - this.options.allowedLatenessMs);
    return { closed: this.closeUpTo(key, state) };
  }

  /** Closes the pair's windows its watermark has passed; forgets the pair once nothing of it says more than its lane's floor. */
  private closeUpTo(key: string, state: PairState): WindowAggregate[] {
    const floor = this.floor(state.lane);
    const watermarkMs = Math.max(state.mark, floor);
    let ends: number[] | null = null;
    for (const end of state.windows.keys()) if (end <= watermarkMs) (ends ??= []).push(end);
    let closed: WindowAggregate[] = [];
    if (ends) {
      ends.sort((a, b) => a - b);
      closed = ends.map((end) => {
        const window = state.windows.get(end)!.result();
        state.windows.delete(end);
        return window;
      });
      this.openWindows -= ends.length;
    }
    if (state.windows.size === 0 && state.mark <= floor) this.pairs.delete(key);
    if (ends) this.forgetIdleWorkloads();
    return closed;
  }

  private isDuplicate(sample: Sample, pair: string, lane: number | undefined): boolean {
    let seen = this.recent.get(sample.workload);
    if (!seen) this.recent.set(sample.workload, (seen = { ts: [], newest: sample.ts, pair, lane }));
    seen.pair = pair;
    seen.lane = lane;
    if (seen.ts.includes(sample.ts)) return true;
    seen.ts.push(sample.ts);
    if (seen.ts.length > RECENT_TIMESTAMPS) seen.ts.shift();
    if (sample.ts > seen.newest) seen.newest = sample.ts;
    return false;
  }

  /** Closes, oldest first, what the given pairs' watermarks now pass. */
  private closeEach(pairs: Iterable<[string, PairState]>): WindowAggregate[] {
    const closed: WindowAggregate[] = [];
    for (const [key, state] of [...pairs]) closed.push(...this.closeUpTo(key, state));
    return closed.sort((a, b) => a.windowEnd - b.windowEnd || a.windowStart - b.windowStart);
  }

  /**
   * Moves every pair's watermark forward (never back) and returns the windows
   * it closes, oldest first. Idle ticks use it so quiet pairs still close.
   */
  advanceWatermark(watermarkMs: number): WindowAggregate[] {
    if (watermarkMs <= this.watermarkMs) return [];
    this.watermarkMs = watermarkMs;
    return this.closeEach(this.pairs);
  }

  /**
   * Moves the floor of every pair whose samples come from `lane` forward
   * (never back) and returns the windows it closes, oldest first.
   */
  advanceLaneFloor(lane: number, watermarkMs: number): WindowAggregate[] {
    if (watermarkMs <= (this.laneFloors.get(lane) ?? -Infinity)) return [];
    this.laneFloors.set(lane, watermarkMs);
    return this.closeEach([...this.pairs].filter(([, state]) => state.lane === lane));
  }

  /** Moves one pair's watermark forward (never back) and returns the windows of that pair it closes, oldest first. */
  advancePairWatermark(key: string, watermarkMs: number, lane?: number): WindowAggregate[] {
    if (watermarkMs <= this.pairWatermark(key, lane)) return [];
    let state = this.pairs.get(key);
    if (!state) this.pairs.set(key, (state = { mark: watermarkMs, lane, windows: new Map() }));
    if (lane !== undefined) state.lane = lane;
    state.mark = watermarkMs;
    return this.closeUpTo(key, state);
  }

  /**
   * Forgets the timestamps of workloads whose every remembered sample would
   * now be refused as late anyway: newest ≤ their pair's watermark − window
   * size. Per pair, like the watermarks: a workload on a partition that lags
   * the others keeps its memory while its pair's windows are open, so a
   * redelivered sample (a retried batch) is still seen as a duplicate.
   */
  private forgetIdleWorkloads(): void {
    const clock = Math.max(this.watermarkMs, this.maxEventTs);
    if (clock < this.forgottenUpTo + this.options.sizeMs) return; // at most once per window length of progress
    this.forgottenUpTo = clock;
    for (const [workload, seen] of this.recent) if (seen.newest <= this.pairWatermark(seen.pair, seen.lane) - this.options.sizeMs) this.recent.delete(workload);
  }

  /**
   * Forgets everything of the pairs whose samples come from `lane`: their
   * open windows (not emitted), watermarks and workloads' timestamps, and
   * the lane's floor. For a partition now another member's: it reads them
   * again from the last commit and publishes those windows itself.
   */
  dropLane(lane: number): void {
    for (const [key, state] of this.pairs) {
      if (state.lane !== lane) continue;
      this.openWindows -= state.windows.size;
      this.pairs.delete(key);
    }
    for (const [workload, seen] of this.recent) if (seen.lane === lane) this.recent.delete(workload);
    this.laneFloors.delete(lane);
  }

  /** Closes every open window (end of a finite stream). */
  flush(): WindowAggregate[] {
    return this.advanceWatermark(Infinity);
  }

  /** What it holds: open windows, pairs it keeps a watermark or windows for, workloads whose recent timestamps it keeps. */
  held(): { openWindows: number; pairs: number; workloads: number } {
    return { openWindows: this.openWindows, pairs: this.pairs.size, workloads: this.recent.size };
  }
}
