// Daily and weekly seasonality of one series, kept as hourly peaks and means
// over the last eight days. A period counts only once the data show it: the
// autocorrelation of hourly means at that lag must reach a threshold.

const HOUR = 3_600_000;
const HOURS_KEPT = 8 * 24 + 2;
export const SEASONAL_LAGS_HOURS = [24, 168] as const;
/** Autocorrelation from which a period is believed (a moderate, common choice). */
const ACF_THRESHOLD = 0.3;

/** Hours a profile's ring holds at first; it doubles as the series spans more, up to HOURS_KEPT. */
const FIRST_HOURS = 4;

/** The slot of an hour in a ring of `slots` (hours before the epoch too). */
const ringSlot = (hour: number, slots: number): number => ((hour % slots) + slots) % slots;

export class SeasonalProfile {
  /**
   * A ring of hour slots: per slot its peak (NaN: no sample), sum and
   * count, side by side (one cache line per step). It holds every hour
   * from the first to the current one, up to HOURS_KEPT: a key that lives
   * an hour takes a few slots, not eight days' worth.
   */
  private hours = SeasonalProfile.ring(FIRST_HOURS);
  private currentHour = Number.NaN;
  private firstHour = Number.NaN;
  private lastDetectionHour = Number.NaN;
  readonly detected = SEASONAL_LAGS_HOURS.map(() => false);

  private static ring(slots: number): Float64Array {
    const hours = new Float64Array(slots * 3);
    for (let s = 0; s < slots; s++) hours[3 * s] = Number.NaN;
    return hours;
  }

  private slot(hour: number): number {
    return ringSlot(hour, this.hours.length / 3);
  }

  /** Grows the ring to hold the hours from the first to `hour` (up to HOURS_KEPT), each kept hour in its new slot. */
  private widen(hour: number): void {
    const slots = this.hours.length / 3;
    const span = hour - this.firstHour + 1;
    if (span <= slots || slots >= HOURS_KEPT) return;
    const old = this.hours;
    this.hours = SeasonalProfile.ring(Math.min(HOURS_KEPT, Math.max(2 * slots, span)));
    // Every hour from the first to the current one is in the old ring (it held the whole span so far).
    for (let h = this.firstHour; h <= this.currentHour; h++) {
      const from = 3 * ringSlot(h, slots);
      const to = 3 * this.slot(h);
      this.hours[to] = old[from]!;
      this.hours[to + 1] = old[from + 1]!;
      this.hours[to + 2] = old[from + 2]!;
    }
  }

  push(ts: number, value: number): void {
    const hour = Math.floor(ts / HOUR);
    if (Number.isNaN(this.currentHour)) this.firstHour = this.currentHour = hour - 1;
    if (hour < this.currentHour) return; // an old sample: hours behind us are settled
    if (hour > this.currentHour) this.widen(hour);
    for (let h = this.currentHour + 1; h <= hour && h - this.currentHour <= HOURS_KEPT; h++) {
      const s = this.slot(h);
      this.hours[3 * s] = Number.NaN;
      this.hours[3 * s + 1] = 0;
      this.hours[3 * s + 2] = 0;
    }
    if (hour > this.currentHour) this.currentHour = hour;
    const s = this.slot(hour);
    const hours = this.hours;
    const peak = hours[3 * s]!;
    hours[3 * s] = peak !== peak ? value : Math.max(peak, value);
    hours[3 * s + 1] = hours[3 * s + 1]! + value;
    hours[3 * s + 2] = hours[3 * s + 2]! + 1;
    if (Number.isNaN(this.lastDetectionHour) || hour - this.lastDetectionHour >= 24) {
      this.detect();
      this.lastDetectionHour = hour;
    }
  }

  /** One field of every slot in the saved layout (HOURS_KEPT slots, hour h at h mod HOURS_KEPT), whatever the ring's size. */
  private column(field: number): number[] {
    const slots = this.hours.length / 3;
    if (slots === HOURS_KEPT) return Array.from({ length: HOURS_KEPT }, (_, s) => this.hours[3 * s + field]!);
    const column = new Array<number>(HOURS_KEPT).fill(field === 0 ? Number.NaN : 0);
    // A ring short of HOURS_KEPT holds exactly the hours from the first to the current one.
    for (let h = this.firstHour; h <= this.currentHour; h++) column[ringSlot(h, HOURS_KEPT)] = this.hours[3 * this.slot(h) + field]!;
    return column;
  }

  /** Peak within ±1 hour of the same time one period ago; NaN when the period is not detected or not covered. */
  peakAround(ts: number, lagIndex: number): number {
    if (!this.detected[lagIndex]) return Number.NaN;
    const hour = Math.floor(ts / HOUR) - SEASONAL_LAGS_HOURS[lagIndex]!;
    let max = Number.NaN;
    for (let h = hour - 1; h <= hour + 1; h++) {
      if (h <= this.currentHour - HOURS_KEPT || h > this.currentHour || h < this.firstHour) continue;
      const value = this.hours[3 * this.slot(h)]!;
      if (!Number.isNaN(value) && !(value <= max)) max = value;
    }
    return max;
  }

  toState(): SeasonalState {
    return {
      peak: toJsonNumbers(this.column(0)),
      sum: this.column(1),
      count: this.column(2),
      currentHour: nanToNull(this.currentHour),
      firstHour: nanToNull(this.firstHour),
      lastDetectionHour: nanToNull(this.lastDetectionHour),
      detected: [...this.detected],
    };
  }

  static fromState(state: SeasonalState): SeasonalProfile {
    const profile = new SeasonalProfile();
    profile.hours = SeasonalProfile.ring(HOURS_KEPT);
    const hourly = { length: HOURS_KEPT };
    if (typeof state !== "object" || state === null || !isNumberArray(state.peak, { ...hourly, nullable: true }) || !isNumberArray(state.sum, hourly) || !isNumberArray(state.count, hourly)) {
      throw new RangeError(`seasonal state must hold ${HOURS_KEPT} hourly peaks, sums and counts`);
    }
    if (!isNumberArray([state.currentHour, state.firstHour, state.lastDetectionHour], { nullable: true })) throw new RangeError("seasonal state's hours must be numbers or null");
    const peaks = fromJsonNumbers(state.peak);
    for (let s = 0; s < HOURS_KEPT; s++) {
      profile.hours[3 * s] = peaks[s]!;
      profile.hours[3 * s + 1] = state.sum[s]!;
      profile.hours[3 * s + 2] = state.count[s]!;
    }
    profile.currentHour = nullToNan(state.currentHour);
    profile.firstHour = nullToNan(state.firstHour);
    profile.lastDetectionHour = nullToNan(state.lastDetectionHour);
    if (!Array.isArray(state.detected) || state.detected.length !== SEASONAL_LAGS_HOURS.length) throw new RangeError("seasonal state must say which periods are detected");
    state.detected.forEach((d, i) => (profile.detected[i] = Boolean(d)));
    return profile;
  }

  /** Autocorrelation of hourly means at each lag, over the hours kept. */
  private detect(): void {
    const means: number[] = [];
    for (let h = Math.max(this.firstHour, this.currentHour - HOURS_KEPT + 1); h < this.currentHour; h++) {
      const s = this.slot(h);
      const count = this.hours[3 * s + 2]!;
      means.push(count > 0 ? this.hours[3 * s + 1]! / count : Number.NaN);
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

/**
 * Whether a restored state's `values` is an array of finite numbers: of
 * `length` when given, each ≥ `min` or > 0 when `positive`, null allowed
 * where `nullable` (a NaN saved as JSON).
 */
export function isNumberArray(values: unknown, options: { length?: number; nullable?: boolean; min?: number; positive?: boolean } = {}): values is Array<number | null> {
  const { length, nullable = false, min = -Infinity, positive = false } = options;
  return (
    Array.isArray(values) &&
    (length === undefined || values.length === length) &&
    values.every((v) => (nullable && v === null) || (typeof v === "number" && Number.isFinite(v) && v >= min && (!positive || v > 0)))
  );
}

/** JSON has no NaN: it travels as null. */
export const nanToNull = (value: number): number | null => (Number.isNaN(value) ? null : value);
export const nullToNan = (value: number | null): number => (value === null ? Number.NaN : value);
export const toJsonNumbers = (values: ArrayLike<number>): Array<number | null> => Array.from(values, nanToNull);
export const fromJsonNumbers = (values: Array<number | null>): number[] => values.map(nullToNan);
