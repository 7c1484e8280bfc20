import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AggregateStage } from "../../src/aggregate/stage.js";
import { Metrics } from "../../src/core/metrics.js";
import type { Sample, WindowAggregate } from "../../src/core/types.js";
import { EmbeddedTransport } from "../../src/transport/embedded/embedded-transport.js";
import { DEAD_LETTER_HEADERS, TOPICS, revokedPartitions, type ConsumeOptions, type DeadLetter, type OutgoingRecord, type TopicRecord } from "../../src/transport/topic.js";
import { T0, sample } from "../helpers.js";

/** An aggregate stage (10 s tumbling windows, late samples dead-lettered) on an embedded transport, and what it published and dead-lettered. */
async function stageWithSinks(duplicatePolicy: "drop" | "dead-letter") {
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
    { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 0, sketchAccuracy: 0.01, latePolicy: "dead-letter", duplicatePolicy, idleWatermarkMs: 0 },
    metrics,
  );
  return { transport, metrics, windows, dead, stage };
}

describe("aggregate stage", () => {
  it("windows valid samples, dead-letters bad and late ones with the reason, and keeps going", async () => {
    const { transport, metrics, windows, dead, stage } = await stageWithSinks("drop");
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

  it("takes a record read again (a rebalance from the last commit) as already counted: not dead-lettered as late, not counted twice", async () => {
    const { transport, metrics, windows, dead, stage } = await stageWithSinks("dead-letter");
    const record = (partition: number, offset: number, value: unknown): TopicRecord<unknown> => ({ topic: TOPICS.samples, partition, offset, key: "img|alice", value, timestamp: T0, headers: {} });
    // Partition 0: two pairs; bob's window [T0, T0+10s) stays open (it holds the commit back to offset 1), alice's
    // closes at offset 3. Partition 1: a record that is not a sample, then alice's late sample.
    const first = [
      record(0, 0, sample({ ts: T0, cpuCores: 1 })),
      record(0, 1, sample({ ts: T0 + 1_000, workload: "wb", user: "bob", cpuCores: 5 })),
      record(0, 2, sample({ ts: T0 + 2_000, cpuCores: 2 })),
      record(0, 3, sample({ ts: T0 + 12_000, cpuCores: 3 })),
    ];
    await stage.handle(first);
    await stage.handle([record(1, 0, "garbage"), record(1, 1, sample({ ts: T0 + 3_000, workload: "late" }))]);
    await transport.drain();
    assert.deepEqual(windows.map((w) => [w.user, w.windowStart - T0, w.resources.cpu!.max]), [["alice", 0, 2]]);
    assert.equal(dead.length, 2, "the record that is not a sample and the late one");
    assert.equal(stage.resumeFrom(0), 1, "bob's open window holds partition 0 back");

    // Both partitions come again from their commits (0 and 1), then go on.
    await stage.handle([...first.slice(1), record(0, 4, sample({ ts: T0 + 14_000, cpuCores: 4 })), record(0, 5, sample({ ts: T0 + 21_000, workload: "wb", user: "bob", cpuCores: 6 }))]);
    await stage.handle([record(1, 0, "garbage"), record(1, 1, sample({ ts: T0 + 3_000, workload: "late" }))]);
    await stage.stop({ flush: true });
    await transport.drain();
    assert.equal(dead.length, 2, "nothing taken in before is dead-lettered again");
    assert.deepEqual(
      windows.map((w) => [w.user, w.windowStart - T0, w.sampleCount, w.resources.cpu!.max]).sort(),
      [["alice", 0, 2, 2], ["alice", 10_000, 2, 4], ["bob", 0, 1, 5], ["bob", 20_000, 1, 6]],
    );
    const text = await metrics.registry.metrics();
    assert.match(text, /augur_samples_rejected_total\{reason="redelivered"\} 5/);
    assert.doesNotMatch(text, /reason="duplicate"/);
    await transport.close();
  });

  it("closes the windows of a pair whose workloads ended while others go on, and lets the partition's offset move past it", async () => {
    const transport = new EmbeddedTransport({ partitions: 1, bufferRecords: 100 });
    const windows: WindowAggregate[] = [];
    await transport.consume<WindowAggregate>(TOPICS.windows, { group: "t" }, async (batch) => {
      windows.push(...batch.map((r) => r.value));
    });
    const stage = new AggregateStage(
      transport,
      { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 1_000, sketchAccuracy: 0.01, latePolicy: "drop", duplicatePolicy: "drop", idleWatermarkMs: 5_000 },
      new Metrics(),
    );
    let offset = 0;
    const record = (value: Sample): TopicRecord<unknown> => ({ topic: TOPICS.samples, partition: 0, offset: offset++, key: `${value.image}|${value.user}`, value, timestamp: value.ts, headers: {} });
    const busy = (from: number, to: number) => Array.from({ length: (to - from) / 1_000 + 1 }, (_, n) => record(sample({ ts: T0 + from + n * 1_000, image: "busy", workload: "b" })));
    // "ended" has one sample at 1 s; "busy" samples every second, one batch at a time.
    await stage.handle([record(sample({ ts: T0 + 1_000, image: "ended", workload: "e" }))]);
    for (let at = 1_000; at <= 39_000; at += 2_000) await stage.handle(busy(at, at + 1_000));
    await transport.drain();
    const published = () => windows.map((w) => `${w.image} ${(w.windowStart - T0) / 1000}`);
    assert.ok(published().includes("ended 0"), `the ended pair's window is published while busy goes on: ${published().join(", ")}`);
    assert.equal(stage.resumeFrom(0), 30, "only busy's open window [30 s, 40 s) holds the partition back");
    // A late sample of the ended pair is refused, and holds nothing back once busy's windows move on.
    const late = record(sample({ ts: T0 + 2_000, image: "ended", workload: "e" }));
    await stage.handle([late]);
    for (let at = 40_000; at <= 58_000; at += 2_000) await stage.handle(busy(at, at + 1_000));
    await transport.drain();
    assert.equal(windows.filter((w) => w.image === "ended").length, 1, "the late sample opened no window");
    assert.ok(stage.resumeFrom(0)! > late.offset, `the late sample's offset ${late.offset} is not what the partition resumes from (${stage.resumeFrom(0)})`);
    await stage.stop();
    await transport.close();
  });

  it("holds only the recent pairs and workloads of a stream that is never idle, and does not make a partition that lags late", async () => {
    const transport = new EmbeddedTransport({ partitions: 2, bufferRecords: 100 });
    const windows: WindowAggregate[] = [];
    await transport.consume<WindowAggregate>(TOPICS.windows, { group: "t" }, async (batch) => {
      windows.push(...batch.map((r) => r.value));
    });
    const metrics = new Metrics();
    const stage = new AggregateStage(
      transport,
      { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 1_000, sketchAccuracy: 0.01, latePolicy: "drop", duplicatePolicy: "drop", idleWatermarkMs: 5_000 },
      metrics,
    );
    const offsets = [0, 0];
    const record = (partition: number, value: Sample): TopicRecord<unknown> => ({ topic: TOPICS.samples, partition, offset: offsets[partition]!++, key: `${value.image}|${value.user}`, value, timestamp: value.ts, headers: {} });
    // Partition 0, 2,000 s: "busy" every second; every 10 s a new pair whose one workload samples twice and ends.
    for (let s = 0; s < 2_000; s += 2) {
      const batch = [record(0, sample({ ts: T0 + s * 1_000, image: "busy", workload: "b" })), record(0, sample({ ts: T0 + (s + 1) * 1_000, image: "busy", workload: "b" }))];
      if (s % 10 === 0) batch.push(record(0, sample({ ts: T0 + s * 1_000, image: `job-${s}`, workload: `job-${s}-1` })), record(0, sample({ ts: T0 + (s + 1) * 1_000, image: `job-${s}`, workload: `job-${s}-1` })));
      await stage.handle(batch);
    }
    const state = async () => {
      const text = await metrics.registry.metrics();
      return Object.fromEntries([...text.matchAll(/^augur_aggregate_state\{kind="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    };
    const held = await state();
    assert.ok(held.pairs! <= 4 && held.workloads! <= 4 && held.open_windows! <= 4, `only the last seconds' pairs and workloads are held: ${JSON.stringify(held)}`);
    // Partition 1 is read from far behind (taken over from a node that lagged): its samples count.
    await stage.handle([record(1, sample({ ts: T0 + 5_000, image: "other", workload: "o" })), record(1, sample({ ts: T0 + 25_000, image: "other", workload: "o" }))]);
    await transport.drain();
    assert.deepEqual(
      windows.filter((w) => w.image === "other").map((w) => w.windowStart - T0),
      [0],
    );
    const jobs = windows.filter((w) => w.image.startsWith("job-")).map((w) => w.image);
    assert.equal(new Set(jobs).size, jobs.length, "no window published twice");
    assert.equal(jobs.length, 199, "every ended pair's window was published (the last pair's 9 s are not yet quiet)");
    await stage.stop();
    await transport.close();
  });

  it("drops what it kept of a partition a rebalance gave to another member: none of its windows published from here", async () => {
    const { transport, metrics, windows, stage } = await stageWithSinks("drop");
    // The stage's consumer options, as the transport is given them.
    let options: ConsumeOptions | undefined;
    const consume = transport.consume.bind(transport);
    transport.consume = ((topic, given, handler) => consume(topic, (options = given), handler)) as typeof transport.consume;
    await stage.start();
    const record = (partition: number, offset: number, value: Sample): TopicRecord<unknown> => ({ topic: TOPICS.samples, partition, offset, key: `${value.image}|${value.user}`, value, timestamp: value.ts, headers: {} });
    await stage.handle([record(0, 0, sample({ ts: T0, image: "stays", workload: "s" })), record(0, 1, sample({ ts: T0 + 1_000, image: "stays", workload: "s" }))]);
    await stage.handle([record(1, 0, sample({ ts: T0, image: "moves", workload: "m" })), record(1, 1, sample({ ts: T0 + 1_000, image: "moves", workload: "m" }))]);
    assert.equal(stage.resumeFrom(1), 0);
    options!.onRevoke!(1); // a rebalance gave partition 1 to another member
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stage.resumeFrom(1), undefined, "nothing of partition 1 holds a commit back");
    assert.match(await metrics.registry.metrics(), /augur_aggregate_state\{kind="pairs"\} 1$/m);
    // Given back later from the other member's commit: read as new, not skipped as read before.
    await stage.handle([record(1, 1, sample({ ts: T0 + 1_000, image: "moves", workload: "m" }))]);
    await stage.stop({ flush: true });
    await transport.drain();
    assert.deepEqual(
      windows.map((w) => [w.image, w.sampleCount]).sort(),
      [["moves", 1], ["stays", 2]],
    );
    assert.doesNotMatch(await metrics.registry.metrics(), /reason="redelivered"/);
    await transport.close();
  });

  it("a member's lost partitions are those its new assignment lacks", () => {
    assert.deepEqual(revokedPartitions(new Set([0, 1, 2, 3]), new Set([1, 3, 4])), [0, 2]);
    assert.deepEqual(revokedPartitions(new Set(), new Set([0])), []);
    assert.deepEqual(revokedPartitions(new Set([2]), new Set([2])), []);
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
