import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EmbeddedTransport, partitionFor } from "../../src/transport/embedded/embedded-transport.js";
import type { TopicRecord } from "../../src/transport/topic.js";
import type { Trace } from "../../src/backtest/trace.js";
import { checkRetention } from "../../src/pipeline/replay.js";
import { sleep } from "../helpers.js";

describe("embedded transport", () => {
  it("delivers records of one key in the order they were published", async () => {
    const transport = new EmbeddedTransport({ partitions: 3, bufferRecords: 16 });
    const seen = new Map<string, number[]>();
    await transport.consume<number>("t", { group: "g", maxBatch: 4 }, async (batch) => {
      for (const record of batch) seen.set(record.key, [...(seen.get(record.key) ?? []), record.value]);
    });
    const topic = transport.topic<number>("t");
    await Promise.all(
      ["a", "b", "c", "d"].map(async (key) => {
        for (let i = 0; i < 50; i++) await topic.publish([{ key, value: i, timestamp: i }]);
      }),
    );
    await transport.drain();
    for (const key of ["a", "b", "c", "d"]) assert.deepEqual(seen.get(key), Array.from({ length: 50 }, (_, i) => i));
    await transport.close();
  });

  it("makes publishers wait while a consumer lags a full buffer behind (backpressure)", async () => {
    const transport = new EmbeddedTransport({ partitions: 1, bufferRecords: 4 });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const handled: number[] = [];
    await transport.consume<number>("t", { group: "g", maxBatch: 1 }, async (batch) => {
      await gate;
      handled.push(...batch.map((r) => r.value));
    });
    const topic = transport.topic<number>("t");
    let published = 0;
    const publisher = (async () => {
      for (let i = 0; i < 10; i++) {
        await topic.publish([{ key: "k", value: i, timestamp: i }]);
        published++;
      }
    })();
    await sleep(50);
    assert.equal(published, 4, "publisher should stop at the buffer size");
    release();
    await publisher;
    await transport.drain();
    assert.deepEqual(handled, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await transport.close();
  });

  it("gives each consumer group every record, and retries a batch whose handler failed", async () => {
    const transport = new EmbeddedTransport({ partitions: 2, bufferRecords: 100 });
    const first: Array<TopicRecord<string>> = [];
    const second: string[] = [];
    let failures = 0;
    await transport.consume<string>("t", { group: "one" }, async (batch) => {
      first.push(...batch);
    });
    await transport.consume<string>("t", { group: "two" }, async (batch) => {
      if (failures++ < 2) throw new Error("disk full (simulated)");
      second.push(...batch.map((r) => r.value));
    });
    await transport.topic<string>("t").publish([{ key: "k", value: "x", timestamp: 1, headers: { h: "1" } }]);
    await transport.drain();
    assert.equal(first.length, 1);
    assert.deepEqual(first[0]!.headers, { h: "1" });
    assert.deepEqual(second, ["x"]);
    assert.equal(failures, 3);
    await transport.close();
  });

  it("maps keys to partitions stably and within range", () => {
    for (const key of ["", "a", "img|user", "ü/../x"]) {
      const p = partitionFor(key, 7);
      assert.ok(p >= 0 && p < 7);
      assert.equal(partitionFor(key, 7), p);
    }
  });

  it("refuses nonsense sizes", () => {
    assert.throws(() => new EmbeddedTransport({ partitions: 0, bufferRecords: 1 }), RangeError);
    assert.throws(() => new EmbeddedTransport({ partitions: 1, bufferRecords: 0.5 }), RangeError);
  });
});

describe("replay into Kafka", () => {
  const trace = (firstTs: number): Trace => ({ name: "t", rows: 2, rejected: [], workloads: [{ workload: "w", image: "i", user: "u", ts: Float64Array.from([firstTs + 300_000, firstTs]), values: {}, limits: {} }] });
  const topics = { retentionHours: 168, overrides: {} };
  const now = Date.UTC(2026, 10, 29);

  it("refuses a trace older than the topics keep records, and says what to set", () => {
    assert.throws(() => checkRetention(topics, trace(Date.UTC(2013, 6, 1)), now), /beyond the 168 hours that augur\.samples keeps records.*retentionHours.*above \d+/);
    assert.doesNotThrow(() => checkRetention(topics, trace(now - 24 * 3_600_000), now));
    // Windows carry the same event time: a long-kept samples topic alone is not enough.
    assert.throws(() => checkRetention({ retentionHours: 168, overrides: { "augur.samples": { retentionHours: 24 * 365 * 20 } } }, trace(Date.UTC(2013, 6, 1)), now), /augur\.windows keeps/);
    assert.doesNotThrow(() => checkRetention({ retentionHours: 24 * 365 * 20, overrides: {} }, trace(Date.UTC(2013, 6, 1)), now));
  });
});
