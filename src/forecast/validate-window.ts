import { z } from "zod";
import { ValidationError } from "../core/errors.js";
import { validateId } from "../core/keys.js";
import { RESOURCES, type WindowAggregate } from "../core/types.js";

const nonNegative = z.number().finite().nonnegative();

const sketchSchema = z.object({
  relativeAccuracy: z.number().gt(0).lt(1),
  minIndexedValue: z.number().positive(),
  zeroCount: nonNegative,
  indexes: z.array(z.number().int()),
  counts: z.array(z.number().finite().positive()),
});

const statsSchema = z.object({
  count: nonNegative,
  mean: nonNegative,
  min: nonNegative,
  max: nonNegative,
  p50: nonNegative,
  p90: nonNegative,
  p95: nonNegative,
  p99: nonNegative,
  sketch: sketchSchema,
});

const windowSchema = z.object({
  image: z.string(),
  user: z.string(),
  windowStart: z.number().int(),
  windowEnd: z.number().int(),
  sampleCount: nonNegative,
  workloadCount: nonNegative,
  resources: z.record(z.enum(RESOURCES), statsSchema),
  oomKills: nonNegative,
  cpuThrottledPeriods: nonNegative,
  cpuThrottledSeconds: nonNegative,
  memoryLimitBytes: nonNegative.nullable(),
  cpuLimitCores: nonNegative.nullable(),
});

/** Checks a WindowAggregate that came off a topic. */
export function validateWindow(input: unknown): WindowAggregate {
  const parsed = windowSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ValidationError(`window.${issue.path.join(".")}: ${issue.message}`, input);
  }
  const window = parsed.data as WindowAggregate;
  validateId("image", window.image);
  validateId("user", window.user);
  if (window.windowEnd <= window.windowStart) throw new ValidationError("window ends before it starts", input);
  for (const stats of Object.values(window.resources)) {
    if (stats && stats.sketch.indexes.length !== stats.sketch.counts.length) throw new ValidationError("window sketch has mismatched arrays", input);
  }
  return window;
}
