/**
 * The means of consecutive blocks of a workload's steps (an hour of
 * 5-minute steps each), the last `kept` of them, and the highest mean of
 * every block before those: what a slow trend is judged on. A block's mean
 * shrinks the step-to-step noise that hides a leak of a few percent an
 * hour, and the blocks are not learned into the per-step baseline, which
 * a slow rise would otherwise carry along with it.
 */
export class BlockMeans {
  /** Means of the blocks kept, oldest first (NaN: a block with no value). */
  readonly means: number[] = [];
  /** Event time of each kept block's last step. */
  readonly ends: number[] = [];
  /** The highest mean of the blocks no longer kept (−∞ before one left). */
  before = -Infinity;
  /** Blocks completed since the first step. */
  completed = 0;
  private sum = 0;
  private count = 0;
  private steps = 0;

  constructor(
    readonly blockSteps: number,
    readonly kept: number,
  ) {
    if (!(Number.isInteger(blockSteps) && blockSteps >= 1 && Number.isInteger(kept) && kept >= 1)) throw new RangeError("block means need whole numbers of steps and blocks ≥ 1");
  }

  /** Takes a step's value (NaN: not measured; the step still counts toward its block). */
  push(ts: number, value: number): void {
    if (Number.isFinite(value)) {
      this.sum += value;
      this.count++;
    }
    if (++this.steps < this.blockSteps) return;
    this.means.push(this.count > 0 ? this.sum / this.count : Number.NaN);
    this.completed++;
    this.ends.push(ts);
    this.sum = 0;
    this.count = 0;
    this.steps = 0;
    if (this.means.length > this.kept) {
      const left = this.means.shift()!;
      this.ends.shift();
      if (left > this.before) this.before = left;
    }
  }
}
