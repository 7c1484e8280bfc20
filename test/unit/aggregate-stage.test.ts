import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AggregateStage } from "../../src/aggregate/stage.js";
import { Metrics } from "../../src/core/metrics.js";
import type { WindowAggregate } from "../../src/core/types.js";
import { EmbeddedTransport } from "../../src/transport/embedded/embedded-transport.js";
import { DEAD_LETTER_HEADERS, TOPICS, type DeadLetter, type OutgoingRecord, type TopicRecord } from "../../src/transport/topic.js";
import { T0, sample } from "../helpers.js";

describe("aggregate stage", () => {
  it("windows valid samples, dead-letters bad and late ones with the reason, and keeps going", async () => {
    const transport = new EmbeddedTransport({ partitions: 2, bufferRecords: 100 });
    const metrics = new Metrics();
    const windows: WindowAggregate[] = [];
    const dead: Array<TopicRecord<DeadLetter>> = [];
    await transport.consume<WindowAggregate>(TOPICS.windows, { group: "t" }, async (batch) => {
      windows.push(...batch.map((r) => r.value));
    });
    await transport.consume<DeadLetter>(TOPICS.deadLetter, { group: "t" }, async (batch) => {
      dead.push(...batch);
    });
    const stage = new AggregateStage(
      transport,
      { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 0, sketchAccuracy: 0.01, latePolicy: "dead-letter", duplicatePolicy: "drop", idleWatermarkMs: 0 },
      metrics,
    );
    await stage.start();
    const samples = transport.topic<unknown>(TOPICS.samples);
    const key = "img|alice";
    await samples.publish([
      { key, value: sample({ ts: T0, cpuCores: 1 }), timestamp: T0 },
      { key, value: "\u0000\u0001garbage", timestamp: T0 },
      { key, value: { ...sample({ ts: T0 + 1, workload: "w2" }), cpuCores: Number.NaN }, timestamp: T0 },
      { key, value: { ...sample({ ts: T0 + 2, workload: "w3" }), memoryWorkingSetBytes: -5 }, timestamp: T0 },
      { key, value: { ...sample({ ts: T0 + 3, workload: "w4" }), image: "../../etc\u0000" }, timestamp: T0 },
      { key, value: sample({ ts: T0, cpuCores: 3 }), timestamp: T0 }, // duplicate: dropped
      { key, value: sample({ ts: T0 + 15_000, cpuCores: 2 }), timestamp: T0 }, // closes [T0, T0+10s)
      { key, value: sample({ ts: T0 + 5_000, workload: "late" }), timestamp: T0 }, // late
    ]);
    await transport.drain();
    await stage.stop({ flush: true });
    await transport.drain();
    assert.equal(windows.length, 2);
    assert.equal(windows[0]!.resources.cpu!.max, 1, "the duplicate was not counted");
    assert.equal(dead.length, 5);
    assert.deepEqual(
      dead.map((d) => d.headers[DEAD_LETTER_HEADERS.code]),
      ["invalid", "invalid", "invalid", "invalid", "invalid"],
    );
    assert.match(dead[0]!.value.error, /sample must be an object/);
    assert.match(dead[1]!.value.error, /cpuCores must be a number/);
    assert.match(dead[4]!.value.error, /after its window closed/);
    assert.equal(dead[4]!.key, key);
    const text = await metrics.registry.metrics();
    assert.match(text, /augur_samples_rejected_total\{reason="duplicate"\} 1/);
    assert.match(text, /augur_samples_rejected_total\{reason="late"\} 1/);
    await transport.close();
  });

  it("keeps windows whose publish failed and publishes them with the retried batch: none lost", async () => {
    const transport = new EmbeddedTransport({ partitions: 1, bufferRecords: 100 });
    const windows: WindowAggregate[] = [];
    await transport.consume<WindowAggregate>(TOPICS.windows, { group: "t" }, async (batch) => {
      windows.push(...batch.map((r) => r.value));
    });
    let failures = 1;
    const flaky: typeof transport = Object.create(transport);
    flaky.topic = ((name: string) => {
      const topic = transport.topic<unknown>(name);
      if (name !== TOPICS.windows) return topic;
      return {
        name,
        publish: async (records: Array<OutgoingRecord<unknown>>) => {
          if (failures-- > 0) throw new Error("registry timed out");
          await topic.publish(records);
        },
      };
    }) as typeof transport.topic;
    const stage = new AggregateStage(
      flaky,
      { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 0, sketchAccuracy: 0.01, latePolicy: "drop", duplicatePolicy: "drop", idleWatermarkMs: 0 },
      new Metrics(),
    );
    await stage.start();
    const key = "img|alice";
    await transport.topic<unknown>(TOPICS.samples).publish([
      { key, value: sample({ ts: T0, cpuCores: 1 }), timestamp: T0 },
      { key, value: sample({ ts: T0 + 10_000, cpuCores: 2 }), timestamp: T0 }, // closes the first window: its publish fails once
      { key, value: sample({ ts: T0 + 20_000, cpuCores: 3 }), timestamp: T0 },
    ]);
    await transport.drain();
    await stage.stop({ flush: true });
    await transport.drain();
    assert.deepEqual(
      windows.map((w) => w.windowStart - T0),
      [0, 10_000, 20_000],
    );
    await transport.close();
  });
});
