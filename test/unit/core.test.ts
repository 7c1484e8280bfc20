import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ValidationError } from "../../src/core/errors.js";
import { parsePairKey, pairKey, safePathSegment, validateId } from "../../src/core/keys.js";
import { validateSample } from "../../src/core/sample.js";
import { QuantileSketch } from "../../src/core/sketch.js";
import { USER_FACTOR_BOUNDS, userFactor } from "../../src/core/user-factor.js";
import { T0, sample } from "../helpers.js";

describe("quantile sketch", () => {
  it("answers every quantile within its relative accuracy of a value of that rank", () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 1e-6, max: 1e12, noNaN: true }), { minLength: 1, maxLength: 300 }), fc.double({ min: 0, max: 1, noNaN: true }), (values, q) => {
        const sketch = new QuantileSketch(0.01);
        for (const v of values) sketch.add(v);
        const sorted = [...values].sort((a, b) => a - b);
        const rank = Math.floor(q * (sorted.length - 1));
        const truth = sorted[rank]!;
        const estimate = sketch.quantile(q);
        // DDSketch: within α of the value at rank ⌊q(n−1)⌋ (or its neighbour, by bucket boundaries).
        const near = [sorted[rank]!, sorted[Math.min(rank + 1, sorted.length - 1)]!];
        assert.ok(
          near.some((v) => Math.abs(estimate - v) <= 0.0100001 * v) || Math.abs(estimate - truth) <= 0.0100001 * truth,
          `q=${q} estimate ${estimate} truth ${truth}`,
        );
      }),
    );
  });

  it("merges exactly: two halves merged answer like one sketch of everything", () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 2, maxLength: 200 }), (values) => {
        const whole = new QuantileSketch(0.02);
        const left = new QuantileSketch(0.02);
        const right = new QuantileSketch(0.02);
        values.forEach((v, i) => {
          whole.add(v);
          (i % 2 ? left : right).add(v);
        });
        left.merge(right);
        for (const q of [0, 0.1, 0.5, 0.9, 0.99, 1]) assert.equal(left.quantile(q), whole.quantile(q));
        assert.equal(left.count, whole.count);
      }),
    );
  });

  it("round-trips through its serialised state", () => {
    const sketch = new QuantileSketch(0.01);
    for (const v of [0, 0, 1, 2, 3, 1000, 5e9]) sketch.add(v);
    const copy = QuantileSketch.fromState(JSON.parse(JSON.stringify(sketch.toState())));
    for (const q of [0, 0.25, 0.5, 0.75, 1]) assert.equal(copy.quantile(q), sketch.quantile(q));
  });

  it("refuses NaN, negative and infinite values and corrupt states", () => {
    const sketch = new QuantileSketch();
    assert.throws(() => sketch.add(Number.NaN), RangeError);
    assert.throws(() => sketch.add(-1), RangeError);
    assert.throws(() => sketch.add(Infinity), RangeError);
    assert.throws(() => QuantileSketch.fromState({ relativeAccuracy: 0.01, minIndexedValue: 1e-9, zeroCount: 0, indexes: [1, 2], counts: [1] }), RangeError);
    assert.throws(() => QuantileSketch.fromState({ relativeAccuracy: 0.01, minIndexedValue: 1e-9, zeroCount: 0, indexes: [1.5], counts: [1] }), RangeError);
  });
});

describe("ids and keys", () => {
  it("accepts image references with slashes, colons and digests", () => {
    assert.equal(validateId("image", "registry.example.com/team/app:1.2@sha256:abc"), "registry.example.com/team/app:1.2@sha256:abc");
    assert.deepEqual(parsePairKey(pairKey("a/b:1", "bob")), { image: "a/b:1", user: "bob" });
  });

  for (const [label, id] of [
    ["NUL", "img\u0000evil"],
    ["newline", "img\nX"],
    ["key separator", "a|b"],
    ["empty", ""],
    ["wildcard", "*"],
    ["very long", "x".repeat(600)],
  ] as const) {
    it(`rejects an id with ${label} with a clear error`, () => {
      assert.throws(() => validateId("image", id), (error: unknown) => error instanceof ValidationError && /image/.test(error.message));
    });
  }

  it("rejects non-strings", () => {
    assert.throws(() => validateId("user", 42), ValidationError);
    assert.throws(() => validateId("user", { toString: () => "x" }), ValidationError);
  });

  it("turns any id into one harmless path segment, keeping distinct ids distinct", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), (a, b) => {
        const sa = safePathSegment(a);
        assert.match(sa, /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/);
        assert.ok(!sa.includes("/") && sa !== "." && sa !== "..");
        if (a !== b) assert.notEqual(sa, safePathSegment(b));
      }),
    );
    for (const hostile of ["../../etc/passwd", "..", ".", "/", "a/../../b", "$(rm -rf /)", "`id`;ls", "x\u0000y"]) {
      const segment = safePathSegment(hostile);
      assert.ok(!segment.includes("/") && !segment.startsWith("."), segment);
    }
  });
});

describe("sample validation", () => {
  const base = sample({ ts: T0, cpuCores: 0.5, memoryWorkingSetBytes: 1e8 });

  it("passes a good sample through and fills absent counters with 0", () => {
    const raw: Record<string, unknown> = { ...base };
    delete raw.oomKills;
    const clean = validateSample(raw);
    assert.equal(clean.cpuCores, 0.5);
    assert.equal(clean.oomKills, 0);
  });

  for (const [field, value, pattern] of [
    ["cpuCores", Number.NaN, /cpuCores must be a number/],
    ["cpuCores", -0.1, /cpuCores must be between/],
    ["cpuCores", 1e9, /cpuCores must be between/],
    ["memoryWorkingSetBytes", Infinity, /memoryWorkingSetBytes must be between/],
    ["memoryWorkingSetBytes", "100", /must be a number/],
    ["oomKills", -1, /oomKills/],
    ["ts", 1700000000, /epoch milliseconds/], // seconds, not ms
    ["ts", 1.5e12 + 0.5, /epoch milliseconds/],
    ["image", "a\u0000b", /control character/],
    ["user", undefined, /user must be a string/],
  ] as const) {
    it(`rejects ${field} = ${String(value)}`, () => {
      assert.throws(() => validateSample({ ...base, [field]: value }), (error: unknown) => error instanceof ValidationError && pattern.test(error.message));
    });
  }

  it("rejects things that are not objects", () => {
    for (const junk of [null, 3, "sample", [1, 2], undefined]) assert.throws(() => validateSample(junk), ValidationError);
  });
});

describe("user factor", () => {
  it("is the geometric mean of the ratios, clamped, 1 without any", () => {
    const close = (actual: number, expected: number) => assert.ok(Math.abs(actual - expected) < 1e-12, `${actual} ≠ ${expected}`);
    close(userFactor([0.5, 2]), 1);
    close(userFactor([0.25, 1]), 0.5);
    close(userFactor([2, 2, 0.5]), Math.cbrt(2)); // (2 · 2 · 0.5)^(1/3)
    assert.equal(userFactor([]), 1);
    assert.equal(userFactor([0.01]), USER_FACTOR_BOUNDS.min);
    assert.equal(userFactor([100]), USER_FACTOR_BOUNDS.max);
    close(userFactor([0.01], { min: 0.001, max: 10 }), 0.01);
  });

  it("skips ratios that are not finite and positive", () => {
    assert.ok(Math.abs(userFactor([Number.NaN, -1, 0, Infinity, -Infinity, 2]) - 2) < 1e-12);
    assert.equal(userFactor([Number.NaN, 0]), 1);
  });
});
