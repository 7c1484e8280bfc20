// A learned global model: one small network for all keys of a resource,
// trained with @tensorflow/tfjs on history to predict high quantiles of the
// next step's usage from the recent past, in units of the key's own scale.
// Training uses tfjs (the WASM backend, or tfjs-node's native one when it is
// installed); prediction runs the learned weights in plain code, because a
// tensor call per key and step would cost more than the whole ensemble.
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type * as Tf from "@tensorflow/tfjs";

const require = createRequire(import.meta.url);
let tfjs: typeof Tf | null = null;
/**
 * tfjs, loaded when first needed: it takes about half a second to load, and
 * only training needs it (every command that never trains starts without it).
 * Its Node entry is CommonJS, so this is the same instance an import gives.
 */
function tensorflow(): typeof Tf {
  return (tfjs ??= require("@tensorflow/tfjs") as typeof Tf);
}

/** Quantile levels the network predicts (pinball loss). */
export const GLOBAL_LEVELS = [0.99, 0.999] as const;
/**
 * Peaks over six windows and four decaying percentiles in units of the week's
 * peak, time of day and of week (sine, cosine), and how much history the key
 * has (log of its observations, 1 at a week of minutes).
 */
export const GLOBAL_FEATURES = 15;
const HIDDEN = 16;
/** Bumped when the feature set or the layer layout changes. */
export const GLOBAL_MODEL_VERSION = 2;

let backendReady: Promise<string> | null = null;

/** Picks the fastest backend here: tfjs-node if installed, else WASM, else plain JS. */
export function initTensorflow(): Promise<string> {
  backendReady ??= (async () => {
    const tf = tensorflow();
    try {
      await import(/* optional */ "@tensorflow/tfjs-node" as string);
      if (await tf.setBackend("tensorflow")) return "tensorflow";
    } catch {
      // not installed: its install downloads a binary, which is not always possible
    }
    try {
      const wasm = await import("@tensorflow/tfjs-backend-wasm");
      wasm.setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"))}/dist/`);
      if (await tf.setBackend("wasm")) return "wasm";
    } catch {
      // fall through to the CPU backend
    }
    await tf.setBackend("cpu");
    return "cpu";
  })();
  return backendReady;
}

export interface GlobalModelState {
  version: number;
  levels: number[];
  layers: Array<{ rows: number; cols: number; weights: number[]; bias: number[] }>;
}

/** Training examples kept by reservoir sampling, so memory stays bounded. */
export class ExampleReservoir {
  readonly features: Float32Array;
  readonly targets: Float32Array;
  size = 0;
  seen = 0;
  private seed = 12345;

  constructor(readonly capacity: number) {
    this.features = new Float32Array(capacity * GLOBAL_FEATURES);
    this.targets = new Float32Array(capacity);
  }

  private random(): number {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    return this.seed / 2 ** 32;
  }

  add(features: Float32Array, target: number): void {
    this.seen++;
    let slot = this.size;
    if (this.size < this.capacity) this.size++;
    else {
      slot = Math.floor(this.random() * this.seen);
      if (slot >= this.capacity) return;
    }
    this.features.set(features, slot * GLOBAL_FEATURES);
    this.targets[slot] = target;
  }
}

/** The trained network: a forward pass over plain arrays. */
export class GlobalQuantileModel {
  /** One output buffer per layer, reused by every prediction. */
  private readonly outputs: Float64Array[];
  /** Each layer's weights column by column (a column is contiguous), and its bias. */
  private readonly columns: Float64Array[];
  private readonly biases: Float64Array[];
  private readonly input = new Float64Array(GLOBAL_FEATURES);
  private constructor(private readonly layers: GlobalModelState["layers"]) {
    this.outputs = layers.map((layer) => new Float64Array(layer.cols));
    this.columns = layers.map(({ rows, cols, weights }) => {
      const columns = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) columns[c * rows + r] = weights[r * cols + c]!;
      return columns;
    });
    this.biases = layers.map((layer) => Float64Array.from(layer.bias));
  }

  /** Predicted quantiles (GLOBAL_LEVELS order, non-decreasing, ≥ 0) into `out`. */
  predict(features: Float32Array, out: Float64Array): void {
    // Every layer reads a Float64Array (one element kind keeps the loop monomorphic).
    const first = this.input;
    for (let i = 0; i < GLOBAL_FEATURES; i++) first[i] = features[i]!;
    let input: Float64Array = first;
    const last = this.layers.length - 1;
    for (let l = 0; l <= last; l++) {
      const rows = input.length;
      const columns = this.columns[l]!;
      const bias = this.biases[l]!;
      const output = this.outputs[l]!;
      const cols = output.length;
      // Four outputs at a time: each input read once per four weights (twice the speed of one at a time).
      let c = 0;
      for (; c + 4 <= cols; c += 4) {
        let a0 = bias[c]!;
        let a1 = bias[c + 1]!;
        let a2 = bias[c + 2]!;
        let a3 = bias[c + 3]!;
        const k0 = c * rows;
        const k1 = k0 + rows;
        const k2 = k1 + rows;
        const k3 = k2 + rows;
        for (let r = 0; r < rows; r++) {
          const x = input[r]!;
          a0 += x * columns[k0 + r]!;
          a1 += x * columns[k1 + r]!;
          a2 += x * columns[k2 + r]!;
          a3 += x * columns[k3 + r]!;
        }
        output[c] = a0;
        output[c + 1] = a1;
        output[c + 2] = a2;
        output[c + 3] = a3;
      }
      for (; c < cols; c++) {
        let sum = bias[c]!;
        const k = c * rows;
        for (let r = 0; r < rows; r++) sum += input[r]! * columns[k + r]!;
        output[c] = sum;
      }
      if (l < last) for (let j = 0; j < cols; j++) if (output[j]! < 0) output[j] = 0;
      input = output;
    }
    // Output: the lowest quantile, then non-negative increments (keeps quantiles ordered).
    let value = Math.max(0, input[0]!);
    out[0] = value;
    for (let q = 1; q < GLOBAL_LEVELS.length; q++) {
      value += Math.abs(input[q]!);
      out[q] = value;
    }
  }

  toState(): GlobalModelState {
    return { version: GLOBAL_MODEL_VERSION, levels: [...GLOBAL_LEVELS], layers: this.layers.map((l) => ({ ...l, weights: [...l.weights], bias: [...l.bias] })) };
  }

  static fromState(state: GlobalModelState): GlobalQuantileModel {
    if (state.version !== GLOBAL_MODEL_VERSION || state.levels.join() !== GLOBAL_LEVELS.join()) {
      throw new RangeError(`global model version ${state.version} is not ${GLOBAL_MODEL_VERSION}`);
    }
    if (!Array.isArray(state.layers) || state.layers.length !== 3 || state.layers[0]!.cols !== HIDDEN || state.layers[1]!.cols !== HIDDEN) throw new RangeError("global model layers do not fit together");
    let rows = GLOBAL_FEATURES;
    for (const layer of state.layers) {
      if (layer.rows !== rows || layer.weights.length !== layer.rows * layer.cols || layer.bias.length !== layer.cols) throw new RangeError("global model layers do not fit together");
      if (![...layer.weights, ...layer.bias].every(Number.isFinite)) throw new RangeError("global model has non-finite weights");
      rows = layer.cols;
    }
    if (rows !== GLOBAL_LEVELS.length) throw new RangeError("global model output does not match its levels");
    return new GlobalQuantileModel(state.layers);
  }

  /**
   * Trains on the reservoir with the pinball loss of every level, by Adam on
   * mini-batches, from the given model's weights (a retraining goes on from
   * where the last one ended) or He-initialised. Synchronous, so a replay can
   * train between two steps. Call `initTensorflow` once before.
   *
   * The gradients are written out rather than taken from tfjs's tape, and the
   * parameters are one vector (one Adam update instead of one per layer):
   * for a network this small each kernel call costs more than its
   * arithmetic, and this takes under half the calls of `optimizer.minimize`
   * (2.3× faster on the WASM backend, the same loss in a check).
   */
  static train(reservoir: ExampleReservoir, options: { steps: number; batch: number; learningRate: number; seed: number }, from: GlobalQuantileModel | null = null): GlobalQuantileModel {
    const shapes: Array<[number, number]> = [
      [GLOBAL_FEATURES, HIDDEN],
      [HIDDEN, HIDDEN],
      [HIDDEN, GLOBAL_LEVELS.length],
    ];
    const sizes = shapes.flatMap(([rows, cols]) => [rows * cols, cols]);
    const levels = GLOBAL_LEVELS.length;
    const n = reservoir.size;
    const batch = Math.min(options.batch, n);
    const tf = tensorflow();
    const learned = tf.tidy(() => {
      const x = tf.tensor2d(reservoir.features.subarray(0, n * GLOBAL_FEATURES), [n, GLOBAL_FEATURES]);
      const y = tf.tensor2d(reservoir.targets.subarray(0, n), [n, 1]);
      const start = from?.layers;
      const initial = shapes.flatMap(([rows, cols], l) =>
        start
          ? [tf.tensor1d(start[l]!.weights), tf.tensor1d(start[l]!.bias)]
          : [tf.randomNormal([rows * cols], 0, Math.sqrt(2 / rows), "float32", options.seed + l), tf.fill([cols], l === shapes.length - 1 ? 1 : 0)],
      );
      let params = tf.keep(tf.concat(initial));
      let moment = tf.keep(tf.zerosLike(params));
      let variance = tf.keep(tf.zerosLike(params));
      // Quantiles from the raw outputs r: q_k = relu(r_0) + Σ_{1≤j≤k} |r_j| (ordered, ≥ 0) = relu(r)·A + |r|·B.
      const a = tf.tensor2d(Array.from({ length: levels * levels }, (_, i) => (i < levels ? 1 : 0)), [levels, levels]);
      const b = tf.tensor2d(Array.from({ length: levels * levels }, (_, i) => (Math.floor(i / levels) >= 1 && Math.floor(i / levels) <= i % levels ? 1 : 0)), [levels, levels]);
      const tau = tf.tensor2d([...GLOBAL_LEVELS], [1, levels]);
      const [beta1, beta2, epsilon] = [0.9, 0.999, 1e-7]; // tfjs's Adam defaults
      let random = options.seed >>> 0;
      for (let step = 1; step <= options.steps; step++) {
        const indices = new Int32Array(batch);
        for (let i = 0; i < batch; i++) {
          random = (Math.imul(random, 1103515245) + 12345) >>> 0;
          indices[i] = random % n;
        }
        const next = tf.tidy(() => {
          const index = tf.tensor1d(indices, "int32");
          const [w1, b1, w2, b2, w3, b3] = tf.split(params, sizes) as [Tf.Tensor, Tf.Tensor, Tf.Tensor, Tf.Tensor, Tf.Tensor, Tf.Tensor];
          const [W1, W2, W3] = [w1.reshape(shapes[0]!), w2.reshape(shapes[1]!), w3.reshape(shapes[2]!)] as [Tf.Tensor2D, Tf.Tensor2D, Tf.Tensor2D];
          const xb = tf.gather(x, index) as Tf.Tensor2D;
          const yb = tf.gather(y, index);
          const z1 = xb.matMul(W1).add(b1) as Tf.Tensor2D;
          const h1 = tf.relu(z1);
          const z2 = h1.matMul(W2).add(b2) as Tf.Tensor2D;
          const h2 = tf.relu(z2);
          const raw = h2.matMul(W3).add(b3) as Tf.Tensor2D;
          const quantiles = tf.relu(raw).matMul(a).add(tf.abs(raw).matMul(b));
          // Pinball loss, mean over the batch and the levels: d/dq = ([y ≤ q] − τ) / (batch · levels).
          const dq = tf.lessEqual(yb, quantiles).cast("float32").sub(tau).div(batch * levels) as Tf.Tensor2D;
          const dRaw = dq.matMul(a.transpose()).mul(tf.step(raw)).add(dq.matMul(b.transpose()).mul(tf.sign(raw))) as Tf.Tensor2D;
          const dz2 = dRaw.matMul(W3.transpose()).mul(tf.step(z2)) as Tf.Tensor2D;
          const dz1 = dz2.matMul(W2.transpose()).mul(tf.step(z1)) as Tf.Tensor2D;
          const gradient = tf.concat([
            xb.transpose().matMul(dz1).reshape([-1]),
            dz1.sum(0),
            h1.transpose().matMul(dz2).reshape([-1]),
            dz2.sum(0),
            h2.transpose().matMul(dRaw).reshape([-1]),
            dRaw.sum(0),
          ]);
          const m = moment.mul(beta1).add(gradient.mul(1 - beta1));
          const v = variance.mul(beta2).add(gradient.square().mul(1 - beta2));
          const rate = (options.learningRate * Math.sqrt(1 - beta2 ** step)) / (1 - beta1 ** step);
          return [params.sub(m.div(v.sqrt().add(epsilon)).mul(rate)), m, v];
        });
        params.dispose();
        moment.dispose();
        variance.dispose();
        [params, moment, variance] = next as [Tf.Tensor, Tf.Tensor, Tf.Tensor];
      }
      moment.dispose();
      variance.dispose();
      return params;
    });
    const values = learned.dataSync();
    learned.dispose();
    let at = 0;
    const layers = shapes.map(([rows, cols]) => {
      const weights = Array.from(values.subarray(at, (at += rows * cols)));
      const bias = Array.from(values.subarray(at, (at += cols)));
      return { rows, cols, weights, bias };
    });
    return new GlobalQuantileModel(layers);
  }
}
