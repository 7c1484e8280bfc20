// The global models of every resource and the examples they learn from, as
// one piece shared by every key's forecaster: the backtest's augur policy and
// the live forecast stage's ensemble model train, use, save and load them
// the same way.
import { ValidationError } from "../core/errors.js";
import { isResource, type Resource } from "../core/types.js";
import type { GlobalLearner } from "./ensemble.js";
import { ExampleReservoir, GLOBAL_MODEL_VERSION, GlobalQuantileModel, type GlobalModelState } from "./global-model.js";

/** Examples needed before the first training, and new examples between retrainings. */
export const FIRST_TRAINING_EXAMPLES = 5_000;
export const RETRAIN_EVERY_EXAMPLES = 100_000;
const TRAINING = { steps: 400, batch: 512, learningRate: 0.01, seed: 7 };
/**
 * A retraining goes on from the last model's weights: a quarter of the steps
 * reaches the loss of a training from scratch (checked on examples whose
 * relation drifted between the two trainings).
 */
const RETRAINING = { ...TRAINING, steps: 100 };
/** Examples kept per resource (reservoir sampling over all it has seen). */
const RESERVOIR = 50_000;
/** Every how many blocks of a key one example is kept. */
const SAMPLE_EVERY = 4;
const KIND = "augur-global-models";

export type GlobalModels = Partial<Record<Resource, GlobalModelState>>;

/** What `GlobalLearners.export` writes: versioned, checked by `parseGlobalModels` before it is trusted. */
export interface SavedGlobalModels {
  kind: typeof KIND;
  version: number;
  models: GlobalModels;
}

export interface GlobalLearnersOptions {
  /** Train on the examples the forecasters give (default true); false only uses `models`. */
  learn?: boolean;
  /** Models saved by an earlier run, per resource (checked by `parseGlobalModels`). */
  models?: GlobalModels;
  /** Examples before the first training (default FIRST_TRAINING_EXAMPLES). */
  firstTraining?: number;
}

export class GlobalLearners {
  private readonly learners = new Map<Resource, GlobalLearner & { trainedAt: number }>();
  private readonly learn: boolean;
  private readonly firstTraining: number;
  /** Trainings so far: a saved copy older than this is stale. */
  trainings = 0;

  constructor(private readonly options: GlobalLearnersOptions = {}) {
    this.learn = options.learn ?? true;
    this.firstTraining = options.firstTraining ?? FIRST_TRAINING_EXAMPLES;
  }

  /** The learner of a resource: the model every key's forecaster uses, and the examples they give it. */
  of(resource: Resource): GlobalLearner {
    return this.entry(resource);
  }

  private entry(resource: Resource): GlobalLearner & { trainedAt: number } {
    let found = this.learners.get(resource);
    if (!found) {
      const saved = this.options.models?.[resource];
      // One that never trains keeps no examples worth the memory.
      found = { model: saved ? GlobalQuantileModel.fromState(saved) : null, reservoir: new ExampleReservoir(this.learn ? RESERVOIR : 1), sampleEvery: SAMPLE_EVERY, trainedAt: 0 };
      this.learners.set(resource, found);
    }
    return found;
  }

  /**
   * Trains the resource's model when due: first once it holds
   * `firstTraining` examples, then after every RETRAIN_EVERY_EXAMPLES new
   * ones (from the last weights). Synchronous (a replay trains between two
   * steps); returns whether it trained.
   */
  trainIfDue(resource: Resource): boolean {
    if (!this.learn) return false;
    const l = this.learners.get(resource);
    if (!l) return false;
    const due = l.model === null ? l.reservoir.size >= this.firstTraining : l.reservoir.seen - l.trainedAt >= RETRAIN_EVERY_EXAMPLES;
    if (due) this.train(l);
    return due;
  }

  /** Trains every resource with a fifth of the first training's examples (the end of a training trace). */
  trainWhatCan(): void {
    if (!this.learn) return;
    for (const l of this.learners.values()) if (l.reservoir.size >= this.firstTraining / 5) this.train(l);
  }

  private train(l: GlobalLearner & { trainedAt: number }): void {
    l.model = GlobalQuantileModel.train(l.reservoir, l.model ? RETRAINING : TRAINING, l.model);
    l.trainedAt = l.reservoir.seen;
    this.trainings++;
  }

  /** Takes saved models (from `parseGlobalModels`) in place of the ones held; the examples are kept. */
  load(models: GlobalModels): void {
    for (const [resource, state] of Object.entries(models) as Array<[Resource, GlobalModelState]>) {
      const l = this.entry(resource);
      l.model = GlobalQuantileModel.fromState(state);
      l.trainedAt = l.reservoir.seen;
    }
  }

  /** Every trained model, as versioned JSON-safe data. */
  export(): SavedGlobalModels {
    const models: GlobalModels = {};
    for (const [resource, l] of this.learners) if (l.model) models[resource] = l.model.toState();
    return savedGlobalModels(models);
  }
}

export function savedGlobalModels(models: GlobalModels): SavedGlobalModels {
  return { kind: KIND, version: GLOBAL_MODEL_VERSION, models };
}

/** Checks what `GlobalLearners.export` wrote (and a user may have edited) before it is trusted. */
export function parseGlobalModels(saved: unknown): GlobalModels | undefined {
  if (saved === undefined) return undefined;
  const file = saved as { kind?: string; version?: number; models?: Record<string, GlobalModelState> };
  if (file?.kind !== KIND || file.version !== GLOBAL_MODEL_VERSION || typeof file.models !== "object" || file.models === null) {
    throw new ValidationError(`not augur global models of version ${GLOBAL_MODEL_VERSION}`);
  }
  const out: GlobalModels = {};
  for (const [resource, state] of Object.entries(file.models)) {
    if (!isResource(resource)) throw new ValidationError(`global models name an unknown resource '${resource}'`);
    try {
      GlobalQuantileModel.fromState(state);
    } catch (error) {
      throw new ValidationError(`global model for ${resource}: ${(error as Error).message}`);
    }
    out[resource] = state;
  }
  return out;
}
