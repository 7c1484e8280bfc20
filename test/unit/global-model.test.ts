import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { ExampleReservoir, GLOBAL_FEATURES, GlobalQuantileModel, initTensorflow } from "../../src/forecast/global-model.js";
import { seededRandom } from "../helpers.js";

describe("global quantile model (tfjs)", () => {
  let backend = "";
  before(async () => {
    backend = await initTensorflow();
  });

  it("runs on the WASM backend here (tfjs-node is not installed)", () => {
    assert.ok(["wasm", "tensorflow"].includes(backend), backend);
  });

  it("learns high quantiles that grow with the feature they depend on", () => {
    // target = 2·f0 + noise uniform in [0, 1): the 0.99 quantile is about 2·f0 + 0.99
    const reservoir = new ExampleReservoir(20_000);
    const random = seededRandom(3);
    const features = new Float32Array(GLOBAL_FEATURES);
    for (let i = 0; i < 20_000; i++) {
      features.fill(0);
      features[0] = random();
      reservoir.add(features, 2 * features[0] + random());
    }
    const model = GlobalQuantileModel.train(reservoir, { steps: 600, batch: 512, learningRate: 0.02, seed: 1 });
    const out = new Float64Array(2);
    for (const f0 of [0.1, 0.5, 0.9]) {
      features.fill(0);
      features[0] = f0;
      model.predict(features, out);
      assert.ok(Math.abs(out[0]! - (2 * f0 + 0.99)) < 0.25, `f0=${f0}: q99 ${out[0]}`);
      assert.ok(out[1]! >= out[0]!, "quantiles stay ordered");
    }
    // A retraining starts from the model it is given: one tiny step leaves its predictions where they were.
    const retrained = GlobalQuantileModel.train(reservoir, { steps: 1, batch: 32, learningRate: 1e-7, seed: 9 }, model);
    const again = new Float64Array(2);
    for (const f0 of [0.1, 0.5, 0.9]) {
      features.fill(0);
      features[0] = f0;
      model.predict(features, out);
      retrained.predict(features, again);
      assert.ok(Math.abs(again[0]! - out[0]!) < 1e-3 && Math.abs(again[1]! - out[1]!) < 1e-3, `f0=${f0}: retrained ${again} vs ${out}`);
    }
  });

  it("round-trips its state and refuses a broken or foreign one", () => {
    const reservoir = new ExampleReservoir(100);
    const features = new Float32Array(GLOBAL_FEATURES).fill(0.5);
    for (let i = 0; i < 100; i++) reservoir.add(features, 1);
    const model = GlobalQuantileModel.train(reservoir, { steps: 5, batch: 32, learningRate: 0.01, seed: 2 });
    const state = JSON.parse(JSON.stringify(model.toState()));
    const copy = GlobalQuantileModel.fromState(state);
    const a = new Float64Array(2);
    const b = new Float64Array(2);
    model.predict(features, a);
    copy.predict(features, b);
    assert.deepEqual(a, b);
    assert.throws(() => GlobalQuantileModel.fromState({ ...state, version: 99 }), /version/);
    assert.throws(() => GlobalQuantileModel.fromState({ ...state, layers: state.layers.slice(1) }), /do not fit/);
    // A chain that fits but is not this model's layout (one layer, features straight to levels).
    const single = { rows: GLOBAL_FEATURES, cols: 2, weights: new Array(GLOBAL_FEATURES * 2).fill(0), bias: [0, 0] };
    assert.throws(() => GlobalQuantileModel.fromState({ ...state, layers: [single] }), /do not fit/);
    const poisoned = JSON.parse(JSON.stringify(state));
    poisoned.layers[0].weights[0] = null;
    assert.throws(() => GlobalQuantileModel.fromState(poisoned), /non-finite/);
  });

  it("keeps a bounded, uniform sample of what it was shown", () => {
    const reservoir = new ExampleReservoir(1000);
    const features = new Float32Array(GLOBAL_FEATURES);
    for (let i = 0; i < 100_000; i++) reservoir.add(features, i);
    assert.equal(reservoir.size, 1000);
    const mean = reservoir.targets.reduce((s, v) => s + v, 0) / 1000;
    assert.ok(Math.abs(mean - 50_000) < 5_000, `mean ${mean}`);
  });
});
