import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { emptySample } from "../src/core/sample.js";
import type { Sample } from "../src/core/types.js";

export const T0 = Date.UTC(2026, 0, 1);

/**
 * A seeded generator of numbers in [0, 1) (mulberry32: 32-bit state, period
 * 2^32), for synthetic data that must be the same on every run. The textbook
 * LCG written in doubles (seed × 1103515245 loses bits) falls into a cycle
 * of about 10,000 draws, which copies whole workloads in a generated trace.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A fresh temporary directory, removed by the returned cleanup. */
export function tempDir(prefix = "augur-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sample(overrides: Partial<Sample> & { ts: number }): Sample {
  return {
    ...emptySample({ ts: overrides.ts, workload: "w1", image: "img", user: "alice", host: "node-a", source: "test" }),
    ...overrides,
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
}
