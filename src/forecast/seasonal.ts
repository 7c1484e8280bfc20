// Daily and weekly seasonality of one series, kept as hourly peaks and means
// over the last eight days. A period counts only once the data show it: the
// autocorrelation of hourly means at that lag must reach a threshold.

const HOUR = 3_600_000;
const HOURS_KEPT = 8 * 24 + 2;
export const SEASONAL_LAGS_HOURS = [24, 168] as const;
/** Autocorrelation from which a period is believed (a moderate, common choice). */
const ACF_THRESHOLD = 0.3;

export class SeasonalProfile {
  private readonly peak = new Float64Array(HOURS_KEPT).fill(Number.NaN);
  private readonly sum = new Float64Array(HOURS_KEPT);
  private readonly count = new Float64Array(HOURS_KEPT);
  private currentHour = Number.NaN;
  private firstHour = Number.NaN;
  private lastDetectionHour = Number.NaN;
  readonly detected = SEASONAL_LAGS_HOURS.map(() => false);

  private slot(hour: number): number {
    return ((hour % HOURS_KEPT) + HOURS_KEPT) % HOURS_KEPT;
  }

  push(ts: number, value: number): void {
    const hour = Math.floor(ts / HOUR);
    if (Number.isNaN(this.currentHour)) this.firstHour = this.currentHour = hour - 1;
    if (hour < this.currentHour) return; // an old sample: hours behind us are settled
    for (let h = this.currentHour + 1; h <= hour && h - this.currentHour <= HOURS_KEPT; h++) {
      const s = this.slot(h);
      this.peak[s] = Number.NaN;
      this.sum[s] = 0;
      this.count[s] = 0;
    }
    if (hour > this.currentHour) this.currentHour = hour;
    const s = this.slot(hour);
    this.peak[s] = Number.isNaN(this.peak[s]!) ? value : Math.max(this.peak[s]!, value);
    this.sum[s] = this.sum[s]! + value;
    this.count[s] = this.count[s]! + 1;
    if (Number.isNaN(this.lastDetectionHour) || hour - this.lastDetectionHour >= 24) {
      this.detect();
      this.lastDetectionHour = hour;
    }
  }

  /** Peak within ±1 hour of the same time one period ago; NaN when the period is not detected or not covered. */
  peakAround(ts: number, lagIndex: number): number {
    if (!this.detected[lagIndex]) return Number.NaN;
    const hour = Math.floor(ts / HOUR) - SEASONAL_LAGS_HOURS[lagIndex]!;
    let max = Number.NaN;
    for (let h = hour - 1; h <= hour + 1; h++) {
      if (h <= this.currentHour - HOURS_KEPT || h > this.currentHour || h < this.firstHour) continue;
      const value = this.peak[this.slot(h)]!;
      if (!Number.isNaN(value) && !(value <= max)) max = value;
    }
    return max;
  }

  toState(): SeasonalState {
    return {
      peak: toJsonNumbers(this.peak),
      sum: [...this.sum],
      count: [...this.count],
      currentHour: nanToNull(this.currentHour),
      firstHour: nanToNull(this.firstHour),
      lastDetectionHour: nanToNull(this.lastDetectionHour),
      detected: [...this.detected],
    };
  }

  static fromState(state: SeasonalState): SeasonalProfile {
    const profile = new SeasonalProfile();
    if (state.peak.length !== HOURS_KEPT || state.sum.length !== HOURS_KEPT || state.count.length !== HOURS_KEPT) throw new RangeError("seasonal state has the wrong size");
    profile.peak.set(fromJsonNumbers(state.peak));
    profile.sum.set(state.sum);
    profile.count.set(state.count);
    profile.currentHour = nullToNan(state.currentHour);
    profile.firstHour = nullToNan(state.firstHour);
    profile.lastDetectionHour = nullToNan(state.lastDetectionHour);
    state.detected.forEach((d, i) => (profile.detected[i] = Boolean(d)));
    return profile;
  }

  /** Autocorrelation of hourly means at each lag, over the hours kept. */
  private detect(): void {
    const means: number[] = [];
    for (let h = Math.max(this.firstHour, this.currentHour - HOURS_KEPT + 1); h < this.currentHour; h++) {
      const s = this.slot(h);
      means.push(this.count[s]! > 0 ? this.sum[s]! / this.count[s]! : Number.NaN);
    }
    SEASONAL_LAGS_HOURS.forEach((lag, i) => {
      this.detected[i] = means.length >= lag + 24 && autocorrelation(means, lag) >= ACF_THRESHOLD;
    });
  }
}

/** Sample autocorrelation at `lag`, over the pairs where both values exist. */
export function autocorrelation(values: number[], lag: number): number {
  let n = 0;
  let sum = 0;
  for (const v of values) if (!Number.isNaN(v)) {
    n++;
    sum += v;
  }
  if (n < 2) return 0;
  const mean = sum / n;
  let variance = 0;
  for (const v of values) if (!Number.isNaN(v)) variance += (v - mean) ** 2;
  if (variance === 0) return 0;
  let covariance = 0;
  for (let i = lag; i < values.length; i++) {
    const a = values[i]!;
    const b = values[i - lag]!;
    if (!Number.isNaN(a) && !Number.isNaN(b)) covariance += (a - mean) * (b - mean);
  }
  return covariance / variance;
}

export interface SeasonalState {
  peak: Array<number | null>;
  sum: number[];
  count: number[];
  currentHour: number | null;
  firstHour: number | null;
  lastDetectionHour: number | null;
  detected: boolean[];
}

/** JSON has no NaN: it travels as null. */
export const nanToNull = (value: number): number | null => (Number.isNaN(value) ? null : value);
export const nullToNan = (value: number | null): number => (value === null ? Number.NaN : value);
export const toJsonNumbers = (values: ArrayLike<number>): Array<number | null> => Array.from(values, nanToNull);
export const fromJsonNumbers = (values: Array<number | null>): number[] => values.map(nullToNan);
