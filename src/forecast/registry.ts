import { z } from "zod";
import type { ModelFactory } from "./model.js";
import { createEnsembleModelFactory, ensembleModelConfig } from "./ensemble-model.js";
import { createPercentileModelFactory, percentileModelConfig } from "./percentile-model.js";

/** Model name (as config files spell it) → config schema and factory. Add a model: one file, one line. */
export const MODEL_REGISTRY = {
  "decaying-percentile": { config: percentileModelConfig, create: createPercentileModelFactory },
  "augur-ensemble": { config: ensembleModelConfig, create: createEnsembleModelFactory },
} satisfies Record<string, { config: z.ZodTypeAny; create: (config: never) => ModelFactory }>;

export type ModelName = keyof typeof MODEL_REGISTRY;
export const MODEL_NAMES = Object.keys(MODEL_REGISTRY) as [ModelName, ...ModelName[]];

/** The fallback levels' model unless configured: order-insensitive, so every run of the same windows gives the same profiles. */
export const DEFAULT_FALLBACK_MODEL: ModelName = "decaying-percentile";

export function createModelFactory(name: ModelName, options: unknown): ModelFactory {
  const entry: { config: z.ZodTypeAny; create: (config: never) => ModelFactory } = MODEL_REGISTRY[name];
  return entry.create(entry.config.parse(options ?? {}) as never);
}
