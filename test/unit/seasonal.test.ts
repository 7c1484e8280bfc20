import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { autocorrelation, SeasonalProfile } from "../../src/forecast/seasonal.js";
import { seededRandom, T0 } from "../helpers.js";

const HOUR = 3_600_000;

describe("seasonal profile", () => {
  it("detects a daily period and answers the peak around the same time yesterday", () => {
    const profile = new SeasonalProfile();
    // busy 09:00–11:00 every day, idle otherwise, sampled every 5 minutes for 4 days
    for (let t = 0; t < 4 * 24 * HOUR; t += 5 * 60_000) {
      const hour = (t / HOUR) % 24;
      profile.push(T0 + t, hour >= 9 && hour < 11 ? 8 : 1);
    }
    assert.equal(profile.detected[0], true);
    assert.equal(profile.peakAround(T0 + 4 * 24 * HOUR + 10 * HOUR, 0), 8);
    assert.equal(profile.peakAround(T0 + 4 * 24 * HOUR + 15 * HOUR, 0), 1);
    assert.equal(profile.detected[1], false, "a week is not covered yet");
  });

  it("detects nothing in noise", () => {
    const profile = new SeasonalProfile();
    const random = seededRandom(7);
    for (let t = 0; t < 5 * 24 * HOUR; t += 5 * 60_000) profile.push(T0 + t, random());
    assert.deepEqual(profile.detected, [false, false]);
    assert.ok(Number.isNaN(profile.peakAround(T0 + 5 * 24 * HOUR, 0)));
  });

  it("round-trips its state exactly and refuses a malformed one", () => {
    const profile = new SeasonalProfile();
    const usage = (t: number) => ((t / HOUR) % 24 < 6 ? 5 : 2) + ((t / 60_000) % 7);
    for (let t = 0; t < 3 * 24 * HOUR; t += 5 * 60_000) profile.push(T0 + t, usage(t));
    const state = JSON.parse(JSON.stringify(profile.toState()));
    const restored = SeasonalProfile.fromState(state);
    for (let t = 3 * 24 * HOUR; t < 4 * 24 * HOUR; t += 5 * 60_000) {
      profile.push(T0 + t, usage(t));
      restored.push(T0 + t, usage(t));
      assert.equal(restored.peakAround(T0 + t, 0), profile.peakAround(T0 + t, 0));
    }
    assert.deepEqual(restored.toState(), profile.toState());
    for (const [field, value] of [
      ["sum", state.sum.map(() => "1")],
      ["count", state.count.slice(1)],
      ["peak", state.peak.map(() => Number.POSITIVE_INFINITY)],
      ["detected", "yes"],
      ["currentHour", "480000"],
      ["lastDetectionHour", Number.NaN],
    ] as const) {
      assert.throws(() => SeasonalProfile.fromState({ ...state, [field]: value }), /seasonal state/, field);
    }
    assert.throws(() => SeasonalProfile.fromState(null as never), /seasonal state/);
  });

  it("answers exactly as a profile that held eight days of slots from the start, through growth, gaps and late samples", () => {
    // The restored profile holds every slot (the saved layout); a new one grows its ring with the series.
    const random = seededRandom(21);
    for (let run = 0; run < 20; run++) {
      const growing = new SeasonalProfile();
      const full = SeasonalProfile.fromState(new SeasonalProfile().toState());
      let t = T0 + Math.floor(random() * 48) * HOUR + Math.floor(random() * HOUR);
      for (let step = 0; step < 4000; step++) {
        const roll = random();
        // Mostly 5-minute steps; now and then a gap of hours or days (past eight days too), or a sample from the past.
        t += roll < 0.97 ? 5 * 60_000 : roll < 0.985 ? Math.floor(random() * 30) * HOUR : roll < 0.99 ? Math.floor(random() * 10 * 24) * HOUR : -Math.floor(random() * 3) * HOUR;
        const value = ((t / HOUR) % 24 < 8 ? 5 : 1) + random();
        growing.push(t, value);
        full.push(t, value);
        if (step % 50 === 0 || roll >= 0.97) {
          assert.deepEqual(growing.detected, full.detected, `run ${run} step ${step}: detected`);
          for (const ask of [t, t + HOUR, t + 24 * HOUR, t + 168 * HOUR, t - 30 * HOUR]) {
            for (const lag of [0, 1]) assert.ok(Object.is(growing.peakAround(ask, lag), full.peakAround(ask, lag)), `run ${run} step ${step}: peak around ${ask}, lag ${lag}`);
          }
          assert.deepEqual(growing.toState(), full.toState(), `run ${run} step ${step}: saved state`);
        }
      }
    }
  });

  it("computes autocorrelation, skipping gaps", () => {
    assert.ok(Math.abs(autocorrelation([1, 2, 1, 2, 1, 2, 1, 2], 2) - 0.75) < 1e-9);
    assert.equal(autocorrelation([5, 5, 5], 1), 0);
    assert.ok(autocorrelation([1, Number.NaN, 1, 3, Number.NaN, 3], 2) > 0);
  });
});
