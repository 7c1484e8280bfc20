// What every key's forecaster of a resource shares, as one piece: the global
// model and the examples it learns from, and the overrun price and overrun
// rates pooled by age. The backtest's augur policy and the live forecast
// stage's ensemble model train, use, save and load them the same way.
import { ValidationError } from "../core/errors.js";
import { isResource, type Resource } from "../core/types.js";
import { AGE_CLASSES, OverrunPrice, PooledMisses, type GlobalLearner, type PooledMissesState, type PriceUsageState } from "./ensemble.js";
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

/**
 * What a run over many pairs learned of a resource's overruns: the overrun
 * rates pooled by age over all its pairs and the overrun price that steered
 * them to the service level. Pairs that share them (the backtest's augur
 * policy, a live stage with `poolAcrossPairs`) start from it and go on.
 */
export interface Calibration {
  /** The service level the price was steered to: only pairs aiming at the same one take it. */
  targetMissRate: number;
  missDecay: number;
  price: number;
  /** The mean usage under the price's floor (absent: it starts afresh). */
  usage?: PriceUsageState;
  pool: PooledMissesState;
}

/** What `GlobalLearners.export` writes: versioned, checked by `parseGlobalModels` before it is trusted. */
export interface SavedGlobalModels {
  kind: typeof KIND;
  version: number;
  models: GlobalModels;
  /** Per resource; files written before it lack it. */
  calibration?: Partial<Record<Resource, Calibration>>;
}

/** The overrun price and pooled rates every pair of a resource shares. */
export interface SharedOverruns {
  pool: PooledMisses;
  price: OverrunPrice;
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
  /** Loaded calibrations, per resource: where shared overruns start. */
  private readonly calibrations = new Map<Resource, Calibration>();
  private readonly overruns = new Map<Resource, SharedOverruns>();
  /** Trainings and windows that moved the shared overruns: a saved copy older than this is stale. */
  private changes = 0;

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
    this.changes++;
  }

  /** Moves each time what is shared changes (a training, a step scored against the shared overruns; see `sharedChanged`). */
  get generation(): number {
    return this.changes;
  }

  /** Says the shared overruns moved (a pair that uses them observed a step). */
  sharedChanged(): void {
    this.changes++;
  }

  /** Takes saved models and calibrations (from `parseGlobalModels`) in place of the ones held; the examples are kept. */
  load(saved: SavedGlobalModels): void {
    for (const [resource, state] of Object.entries(saved.models) as Array<[Resource, GlobalModelState]>) {
      const l = this.entry(resource);
      l.model = GlobalQuantileModel.fromState(state);
      l.trainedAt = l.reservoir.seen;
    }
    this.calibrations.clear();
    this.overruns.clear();
    for (const [resource, calibration] of Object.entries(saved.calibration ?? {}) as Array<[Resource, Calibration]>) this.calibrations.set(resource, calibration);
  }

  /**
   * The overrun price and pooled rates every pair of a resource shares, for
   * this service level: from the loaded calibration where one was steered
   * to it, else afresh.
   */
  sharedOverruns(resource: Resource, options: { targetMissRate: number; missDecay: number; priceStep: number }): SharedOverruns {
    let found = this.overruns.get(resource);
    if (found && found.price.targetMissRate === options.targetMissRate) return found;
    found = { pool: new PooledMisses(options.missDecay), price: new OverrunPrice(options.targetMissRate, options.priceStep) };
    const calibration = this.calibrations.get(resource);
    if (calibration && calibration.targetMissRate === options.targetMissRate && calibration.missDecay === options.missDecay) {
      found.pool.restore(calibration.pool);
      found.price.value = calibration.price;
      if (calibration.usage) found.price.restoreUsage(calibration.usage);
    }
    this.overruns.set(resource, found);
    return found;
  }

  /**
   * Every trained model and a calibration per resource (of the overruns
   * shared here, else as loaded), as versioned JSON-safe data.
   */
  export(): SavedGlobalModels {
    const models: GlobalModels = {};
    for (const [resource, l] of this.learners) if (l.model) models[resource] = l.model.toState();
    const calibration: Partial<Record<Resource, Calibration>> = Object.fromEntries(this.calibrations);
    for (const [resource, { pool, price }] of this.overruns) {
      if (price.value > 0 && Number.isFinite(price.value)) calibration[resource] = { targetMissRate: price.targetMissRate, missDecay: pool.decay, price: price.value, usage: price.usageState(), pool: pool.toState() };
    }
    return { ...savedGlobalModels(models), ...(Object.keys(calibration).length > 0 ? { calibration } : {}) };
  }
}

/**
 * What learners that each ran one resource (a backtest's shards) exported,
 * joined as the export of learners that ran them all: each resource's model
 * and calibration from the learners that ran it; the others' (loaded, the
 * same in every part) from any part.
 */
export function joinSavedGlobalModels(byResource: Partial<Record<Resource, SavedGlobalModels>>): SavedGlobalModels {
  const parts = Object.entries(byResource) as Array<[Resource, SavedGlobalModels]>;
  const models: GlobalModels = { ...parts[0]?.[1].models };
  const calibration: Partial<Record<Resource, Calibration>> = { ...parts[0]?.[1].calibration };
  for (const [resource, part] of parts) {
    for (const [joined, own] of [
      [models, part.models],
      [calibration, part.calibration ?? {}],
    ] as const) {
      const mine = own[resource];
      if (mine === undefined) delete joined[resource];
      else (joined as Record<string, unknown>)[resource] = mine;
    }
  }
  return { ...savedGlobalModels(models), ...(Object.keys(calibration).length > 0 ? { calibration } : {}) };
}

export function savedGlobalModels(models: GlobalModels): SavedGlobalModels {
  return { kind: KIND, version: GLOBAL_MODEL_VERSION, models };
}

/** Checks what `GlobalLearners.export` wrote (and a user may have edited) before it is trusted. */
export function parseGlobalModels(saved: unknown): SavedGlobalModels | undefined {
  if (saved === undefined) return undefined;
  const file = saved as { kind?: string; version?: number; models?: Record<string, GlobalModelState>; calibration?: Record<string, Calibration> };
  if (file?.kind !== KIND || file.version !== GLOBAL_MODEL_VERSION || typeof file.models !== "object" || file.models === null) {
    throw new ValidationError(`not augur global models of version ${GLOBAL_MODEL_VERSION}`);
  }
  const models: GlobalModels = {};
  for (const [resource, state] of Object.entries(file.models)) {
    if (!isResource(resource)) throw new ValidationError(`global models name an unknown resource '${resource}'`);
    try {
      GlobalQuantileModel.fromState(state);
    } catch (error) {
      throw new ValidationError(`global model for ${resource}: ${(error as Error).message}`);
    }
    models[resource] = state;
  }
  if (file.calibration === undefined) return savedGlobalModels(models);
  if (typeof file.calibration !== "object" || file.calibration === null || Array.isArray(file.calibration)) throw new ValidationError("the calibration must be an object of resources");
  const calibration: Partial<Record<Resource, Calibration>> = {};
  for (const [resource, saved] of Object.entries(file.calibration)) {
    if (!isResource(resource)) throw new ValidationError(`the calibration names an unknown resource '${resource}'`);
    const { targetMissRate, missDecay, price, usage, pool } = (saved ?? {}) as Partial<Calibration>;
    if (!(typeof targetMissRate === "number" && targetMissRate > 0 && targetMissRate < 0.5)) throw new ValidationError(`calibration of ${resource}: targetMissRate must be a fraction in (0, 0.5)`);
    if (!(typeof missDecay === "number" && missDecay > 0 && missDecay <= 1)) throw new ValidationError(`calibration of ${resource}: missDecay must be in (0, 1]`);
    if (!(typeof price === "number" && price > 0 && Number.isFinite(price))) throw new ValidationError(`calibration of ${resource}: price must be a finite number > 0`);
    try {
      new PooledMisses(missDecay, AGE_CLASSES).restore(pool as PooledMissesState);
      if (usage !== undefined) new OverrunPrice(targetMissRate, 0).restoreUsage(usage);
    } catch (error) {
      throw new ValidationError(`calibration of ${resource}: ${(error as Error).message}`);
    }
    calibration[resource] = { targetMissRate, missDecay, price, ...(usage === undefined ? {} : { usage }), pool: pool as PooledMissesState };
  }
  return { ...savedGlobalModels(models), calibration };
}
