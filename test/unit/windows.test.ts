import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { firstValueFrom, from, toArray } from "rxjs";
import { windowByPair } from "../../src/aggregate/operators.js";
import { WindowAggregator, type WindowingOptions } from "../../src/aggregate/windows.js";
import { T0, sample } from "../helpers.js";

const tumbling: WindowingOptions = { kind: "tumbling", sizeMs: 10_000, slideMs: 10_000, allowedLatenessMs: 2_000, sketchAccuracy: 0.01 };

describe("event-time windows", () => {
  it("closes a tumbling window when the watermark passes its end, with count, mean, max and quantiles", () => {
    const aggregator = new WindowAggregator(tumbling);
    for (let i = 0; i < 10; i++) assert.deepEqual(aggregator.add(sample({ ts: T0 + i * 1000, cpuCores: i / 10 })).closed, []);
    // 11 s: watermark 9 s, window [0, 10) still open
    assert.deepEqual(aggregator.add(sample({ ts: T0 + 11_000, cpuCores: 1 })).closed, []);
    const { closed } = aggregator.add(sample({ ts: T0 + 12_000, cpuCores: 1 }));
    assert.equal(closed.length, 1);
    const window = closed[0]!;
    assert.equal(window.windowStart, T0);
    assert.equal(window.windowEnd, T0 + 10_000);
    assert.equal(window.sampleCount, 10);
    const cpu = window.resources.cpu!;
    assert.equal(cpu.count, 10);
    assert.ok(Math.abs(cpu.mean - 0.45) < 1e-9);
    assert.equal(cpu.max, 0.9);
    assert.ok(Math.abs(cpu.p50 - 0.4) <= 0.01 * 0.5, `p50 ${cpu.p50}`);
  });

  it("keeps (image, user) pairs apart and counts distinct workloads", () => {
    const aggregator = new WindowAggregator(tumbling);
    aggregator.add(sample({ ts: T0, workload: "a", image: "i1", cpuCores: 1 }));
    aggregator.add(sample({ ts: T0, workload: "b", image: "i1", cpuCores: 1 }));
    aggregator.add(sample({ ts: T0, workload: "c", image: "i2", cpuCores: 1 }));
    const closed = aggregator.flush();
    assert.equal(closed.length, 2);
    assert.equal(closed.find((w) => w.image === "i1")!.workloadCount, 2);
  });

  it("accepts out-of-order samples within the allowed lateness and refuses later ones as late", () => {
    const aggregator = new WindowAggregator(tumbling);
    aggregator.add(sample({ ts: T0 + 9_000, cpuCores: 1 }));
    aggregator.add(sample({ ts: T0 + 11_000, workload: "w2", cpuCores: 1 }));
    assert.equal(aggregator.add(sample({ ts: T0 + 5_000, workload: "w3", cpuCores: 1 })).rejected, undefined);
    const { closed } = aggregator.add(sample({ ts: T0 + 12_500, workload: "w2", cpuCores: 1 }));
    assert.equal(closed[0]!.sampleCount, 2);
    assert.equal(aggregator.add(sample({ ts: T0 + 4_000, workload: "w4", cpuCores: 1 })).rejected, "late");
  });

  it("refuses a second sample of a workload at the same timestamp", () => {
    const aggregator = new WindowAggregator(tumbling);
    assert.equal(aggregator.add(sample({ ts: T0, cpuCores: 1 })).rejected, undefined);
    assert.equal(aggregator.add(sample({ ts: T0, cpuCores: 2 })).rejected, "duplicate");
    assert.equal(aggregator.flush()[0]!.resources.cpu!.max, 1);
  });

  it("still refuses a redelivered sample of a pair that lags another pair by many windows (a partition behind the others)", () => {
    const aggregator = new WindowAggregator(tumbling);
    const slow = { workload: "slow-vm", image: "slow" };
    assert.equal(aggregator.add(sample({ ts: T0 + 1_000, ...slow, cpuCores: 1 })).rejected, undefined);
    // Another pair's partition runs an hour ahead: the stage's newest event time moves on, this pair's windows stay open.
    for (let i = 1; i <= 360; i++) aggregator.add(sample({ ts: T0 + i * 10_000, workload: "fast-vm", image: "fast", cpuCores: 1 }));
    // The slow pair's batch is retried after a failed publish: its sample comes again.
    assert.equal(aggregator.add(sample({ ts: T0 + 1_000, ...slow, cpuCores: 1 })).rejected, "duplicate");
    const window = aggregator.flush().find((w) => w.image === "slow")!;
    assert.equal(window.sampleCount, 1, "the sample is counted once");
  });

  it("forgets a quiet workload's timestamps only once its pair's windows have closed", () => {
    const aggregator = new WindowAggregator(tumbling);
    aggregator.add(sample({ ts: T0 + 1_000, workload: "quiet", cpuCores: 1 }));
    // Its own pair moves on (another workload of the same pair), far past the quiet workload's window.
    for (let i = 1; i <= 100; i++) aggregator.add(sample({ ts: T0 + i * 10_000, workload: "busy", cpuCores: 1 }));
    // Forgotten or not, the old sample is late now: refused either way, never counted.
    assert.equal(aggregator.add(sample({ ts: T0 + 1_000, workload: "quiet", cpuCores: 1 })).rejected, "late");
  });

  it("holds nothing of pairs and workloads the common watermark has passed", () => {
    const aggregator = new WindowAggregator(tumbling);
    for (let n = 0; n < 100; n++) aggregator.add(sample({ ts: T0 + 1_000, image: `image-${n}`, workload: `w-${n}`, cpuCores: 1 }));
    assert.deepEqual(aggregator.held(), { openWindows: 100, pairs: 100, workloads: 100 });
    assert.equal(aggregator.advanceWatermark(T0 + 30_000).length, 100);
    assert.deepEqual(aggregator.held(), { openWindows: 0, pairs: 0, workloads: 0 });
    // Gone from memory, still refused: the common watermark says they are late.
    assert.equal(aggregator.add(sample({ ts: T0 + 2_000, image: "image-3", workload: "w-3", cpuCores: 1 })).rejected, "late");
  });

  it("forgets the pairs and workloads its lane's floor has passed, refuses their late samples still, and leaves other lanes alone", () => {
    // Lane 0 is never idle: "busy" samples every second while short-lived pairs come and go, one every 10 s.
    // Every 10 s, as the aggregate stage does: quiet pairs (5 s without a sample) follow the lane's watermark, and
    // with floors, the lane's floor moves to its newest event time less 5 s and the lateness.
    const busyStream = (floors: boolean) => {
      const aggregator = new WindowAggregator(tumbling);
      const quiet = new Set<string>(); // pairs with a window not yet closed
      for (let s = 0; s < 1_000; s++) {
        const ts = T0 + s * 1_000;
        aggregator.add(sample({ ts, image: "busy", workload: "b", cpuCores: 1 }), 0);
        if (s % 10 === 0) aggregator.add(sample({ ts, image: `short-${s / 10}`, workload: `w-${s / 10}`, cpuCores: 1 }), 0);
        if (s % 10 === 5) quiet.add(`short-${(s - 5) / 10}|alice`);
        if (s % 10 === 9) {
          for (const pair of quiet) if (aggregator.advancePairWatermark(pair, ts - 2_000, 0).length > 0) quiet.delete(pair);
          if (floors) aggregator.advanceLaneFloor(0, ts - 5_000 - 2_000);
        }
      }
      return aggregator;
    };
    assert.equal(busyStream(false).held().pairs, 101, "without floors every pair's watermark is kept");
    const aggregator = busyStream(true);
    const held = aggregator.held();
    assert.ok(held.pairs <= 3 && held.workloads <= 3, `only the pairs and workloads of the last seconds are kept: ${JSON.stringify(held)}`);
    // Gone from memory, still refused: the floor says they are late.
    assert.equal(aggregator.add(sample({ ts: T0 + 500_000, image: "short-50", workload: "w-50", cpuCores: 1 }), 0).rejected, "late");
    // Lane 1 starts far behind lane 0 (a partition read from further back): lane 0's floor is not its own.
    assert.equal(aggregator.add(sample({ ts: T0 + 1_000, image: "lagging", workload: "l", cpuCores: 1 }), 1).rejected, undefined);
    assert.equal(aggregator.add(sample({ ts: T0 + 2_000, image: "short-50", workload: "w-50-again", cpuCores: 1 }), 1).rejected, undefined, "a pair read from another lane now follows that lane's floor");
    // A floor never moves back.
    assert.deepEqual(aggregator.advanceLaneFloor(0, T0), []);
    assert.equal(aggregator.add(sample({ ts: T0 + 600_000, image: "short-60", workload: "w-60", cpuCores: 1 }), 0).rejected, "late");
  });

  it("closes the open windows of a lane's pairs its floor passes, not those of other lanes", () => {
    const aggregator = new WindowAggregator(tumbling);
    aggregator.add(sample({ ts: T0 + 1_000, image: "on-0", workload: "a", cpuCores: 1 }), 0);
    aggregator.add(sample({ ts: T0 + 1_000, image: "on-1", workload: "b", cpuCores: 1 }), 1);
    assert.deepEqual(
      aggregator.advanceLaneFloor(0, T0 + 10_000).map((w) => w.image),
      ["on-0"],
    );
    assert.deepEqual(aggregator.held(), { openWindows: 1, pairs: 1, workloads: 2 });
  });

  it("puts a sample in every sliding window that covers it", () => {
    const aggregator = new WindowAggregator({ ...tumbling, kind: "sliding", sizeMs: 10_000, slideMs: 5_000 });
    aggregator.add(sample({ ts: T0 + 7_000, cpuCores: 1 }));
    const closed = aggregator.flush();
    assert.deepEqual(
      closed.map((w) => [w.windowStart - T0, w.windowEnd - T0]),
      [
        [0, 10_000],
        [5_000, 15_000],
      ],
    );
  });

  it("closes quiet windows on a watermark tick, and never moves the watermark back", () => {
    const aggregator = new WindowAggregator(tumbling);
    aggregator.add(sample({ ts: T0, cpuCores: 1 }));
    assert.equal(aggregator.advanceWatermark(T0 + 10_000).length, 1);
    assert.deepEqual(aggregator.advanceWatermark(T0), []);
    assert.equal(aggregator.watermark, T0 + 10_000);
  });

  it("refuses a slide longer than the window, and a tumbling window that slides", () => {
    assert.throws(() => new WindowAggregator({ ...tumbling, kind: "sliding", slideMs: 20_000 }), RangeError);
    assert.throws(() => new WindowAggregator({ ...tumbling, slideMs: 5_000 }), RangeError);
  });

  it("works as an RxJS operator, flushing open windows when the source completes", async () => {
    const inputs = [
      sample({ ts: T0, cpuCores: 0.5 }),
      sample({ ts: T0, cpuCores: 0.5 }), // duplicate
      sample({ ts: T0 + 15_000, cpuCores: 0.25 }),
      { watermarkMs: T0 + 30_000 },
    ];
    const events = await firstValueFrom(from(inputs).pipe(windowByPair(tumbling), toArray()));
    assert.deepEqual(
      events.map((e) => e.kind),
      ["rejected", "window", "window"],
    );
  });
});
