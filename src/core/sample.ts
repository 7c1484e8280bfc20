import { ValidationError } from "./errors.js";
import { validateId } from "./keys.js";
import type { Sample } from "./types.js";

/**
 * Upper bounds past which a value is a measurement error, not usage. They are
 * deliberately far beyond any real machine (VPA's MaxResourceAmount is 1e14).
 */
export const SAMPLE_LIMITS = {
  cpuCores: 1e5,
  bytes: 1e15,
  bytesPerSecond: 1e13,
  gpus: 1e3,
  counter: 1e9,
  seconds: 1e7,
} as const;

const NUMERIC_FIELDS: Array<[keyof Sample, number, boolean]> = [
  // field, upper bound, nullable
  ["cpuCores", SAMPLE_LIMITS.cpuCores, true],
  ["memoryWorkingSetBytes", SAMPLE_LIMITS.bytes, true],
  ["memoryRssBytes", SAMPLE_LIMITS.bytes, true],
  ["netRxBytesPerSecond", SAMPLE_LIMITS.bytesPerSecond, true],
  ["netTxBytesPerSecond", SAMPLE_LIMITS.bytesPerSecond, true],
  ["diskReadBytesPerSecond", SAMPLE_LIMITS.bytesPerSecond, true],
  ["diskWriteBytesPerSecond", SAMPLE_LIMITS.bytesPerSecond, true],
  ["gpuUtilization", SAMPLE_LIMITS.gpus, true],
  ["gpuMemoryBytes", SAMPLE_LIMITS.bytes, true],
  ["oomKills", SAMPLE_LIMITS.counter, false],
  ["cpuThrottledPeriods", SAMPLE_LIMITS.counter, false],
  ["cpuThrottledSeconds", SAMPLE_LIMITS.seconds, false],
  ["cpuLimitCores", SAMPLE_LIMITS.cpuCores, true],
  ["memoryLimitBytes", SAMPLE_LIMITS.bytes * 1e4, true], // "unlimited" in cgroup v1 is 2^63
];

/** Earliest and latest event times accepted (1990 to 2200): catches seconds-vs-ms mix-ups. */
const MIN_TS = Date.UTC(1990, 0, 1);
const MAX_TS = Date.UTC(2200, 0, 1);

/** Builds a Sample with every optional measurement empty. */
export function emptySample(base: Pick<Sample, "ts" | "workload" | "image" | "user" | "host" | "source">): Sample {
  // Listed field by field (no spread): every Sample gets one hidden class.
  return {
    ts: base.ts,
    workload: base.workload,
    image: base.image,
    user: base.user,
    host: base.host,
    source: base.source,
    cpuCores: null,
    memoryWorkingSetBytes: null,
    memoryRssBytes: null,
    netRxBytesPerSecond: null,
    netTxBytesPerSecond: null,
    diskReadBytesPerSecond: null,
    diskWriteBytesPerSecond: null,
    gpuUtilization: null,
    gpuMemoryBytes: null,
    oomKills: 0,
    cpuThrottledPeriods: 0,
    cpuThrottledSeconds: 0,
    cpuLimitCores: null,
    memoryLimitBytes: null,
  };
}

/**
 * Checks a decoded record against the Sample contract and returns a clean
 * copy. Throws ValidationError naming the field for NaN, infinite, negative
 * or absurdly large values, bad ids and bad timestamps.
 */
export function validateSample(input: unknown): Sample {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ValidationError("sample must be an object", input);
  }
  const raw = input as Record<string, unknown>;
  const ts = raw.ts;
  if (typeof ts !== "number" || !Number.isInteger(ts) || ts < MIN_TS || ts > MAX_TS) {
    throw new ValidationError(`sample.ts must be epoch milliseconds between 1990 and 2200, got ${String(ts)}`, input);
  }
  const sample = emptySample({
    ts,
    workload: validateId("workload", raw.workload),
    image: validateId("image", raw.image),
    user: validateId("user", raw.user),
    host: validateId("host", raw.host ?? "unknown"),
    source: typeof raw.source === "string" ? raw.source.slice(0, 64) : "unknown",
  });
  for (const [field, max, nullable] of NUMERIC_FIELDS) {
    const value = raw[field];
    // An absent measurement stays null; an absent counter stays 0.
    if (value === undefined || (value === null && nullable)) continue;
    if (typeof value !== "number" || Number.isNaN(value)) {
      throw new ValidationError(`sample.${field} must be a number, got ${String(value)}`, input);
    }
    if (!Number.isFinite(value) || value < 0 || value > max) {
      throw new ValidationError(`sample.${field} must be between 0 and ${max}, got ${value}`, input);
    }
    (sample as unknown as Record<string, number>)[field] = value;
  }
  return sample;
}
