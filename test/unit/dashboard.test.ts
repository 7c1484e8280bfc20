import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { connect } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import type { FastifyInstance } from "fastify";
import { allocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import { buildApi } from "../../src/api/server.js";
import { Metrics } from "../../src/core/metrics.js";
import type { ActuationResult, AllocationDecision, Profile, WindowAggregate } from "../../src/core/types.js";
import { DashboardFeed, dashboardConfig } from "../../src/dashboard/feed.js";
import { MAX_REPORT_BYTES, ReportDirectory } from "../../src/dashboard/reports.js";
import type { AnomalyEvent } from "../../src/detect/monitor.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { EmbeddedTransport } from "../../src/transport/embedded/embedded-transport.js";
import { TOPICS } from "../../src/transport/topic.js";
import { eventually, T0, tempDir } from "../helpers.js";

const STEP = 60_000;
const stats = (value: number) => ({ count: 10, mean: value, min: value, max: value * 1.2, p50: value, p90: value, p95: value * 1.1, p99: value * 1.15, sketch: { relativeAccuracy: 0.01, minIndexedValue: 1e-9, zeroCount: 0, indexes: [], counts: [] } });

function window(image: string, user: string, step: number, cpu = 0.5): WindowAggregate {
  return { image, user, windowStart: T0 + step * STEP, windowEnd: T0 + (step + 1) * STEP, sampleCount: 10, workloadCount: 1, resources: { cpu: stats(cpu) }, oomKills: 0, cpuThrottledPeriods: 0, cpuThrottledSeconds: 0, memoryLimitBytes: null, cpuLimitCores: null };
}

function profile(image: string, user: string, version: number, level: Profile["level"] = "exact"): Profile {
  return { image, user, level, version, firstSeen: T0, windows: 5, resources: { cpu: { p50: 0.5, p90: 0.6, p95: 0.7, p99: 0.8, max: 0.9, request: 0.69, limit: 0.92, model: "m", sampleCount: 50 } }, oomKills: 0 };
}

function anomaly(workload: string, type: AnomalyEvent["type"], detectedTs: number, image = "img", user = "alice"): AnomalyEvent {
  return { workload, image, user, host: "h", type, severity: "critical", score: 9, resource: "cpu", observed: 4, expected: 0.1, startTs: detectedTs - STEP, detectedTs, message: "m" };
}

function result(workload: string, action: string, reason: string, ts: number): ActuationResult {
  return { node: "n", workload, connector: "cgroup", action, ok: true, dryRun: false, reason, details: "", ts };
}

describe("dashboard feed", () => {
  it("keeps the newest points per pair and forgets the least recently updated pairs", () => {
    const feed = new DashboardFeed(dashboardConfig.parse({ pointsPerPair: 10, maxPairs: 2 }));
    for (let step = 0; step < 25; step++) feed.addWindow(window("a", "u1", step));
    const usage = feed.pair("a", "u1")!.usage;
    assert.equal(usage.length, 10);
    assert.deepEqual(usage.map((p) => p.t), Array.from({ length: 10 }, (_, i) => T0 + (16 + i) * STEP), "oldest first, newest kept");
    feed.addWindow(window("b", "u2", 0));
    feed.addWindow(window("a", "u1", 25)); // a is now the most recent
    feed.addWindow(window("c", "u3", 0)); // evicts b
    assert.equal(feed.pair("b", "u2"), null);
    assert.ok(feed.pair("a", "u1"));
    assert.deepEqual(feed.listPairs().pairs.map((p) => p.image), ["c", "a"]);
  });

  it("lists exact pairs only, filtered by case-insensitive substrings", () => {
    const feed = new DashboardFeed(dashboardConfig.parse({}));
    feed.addWindow(window("Team/Web:1", "alice", 0));
    feed.addWindow(window("team/batch:2", "bob", 0));
    feed.addProfile(profile("team/web:1", "*", T0, "image"));
    feed.addProfile(profile("*", "*", T0, "global"));
    assert.equal(feed.listPairs().total, 2);
    assert.deepEqual(feed.listPairs({ image: "WEB" }).pairs.map((p) => p.user), ["alice"]);
    assert.deepEqual(feed.listPairs({ user: "o" }).pairs.map((p) => p.user), ["bob"]);
    assert.deepEqual(feed.listPairs({ image: "team", limit: 1 }), { pairs: [feed.listPairs({ image: "team" }).pairs[0]!], total: 2 });
    assert.ok(feed.pair("team/web:1", "*"), "fallback levels are kept for the pairs that use them");
  });

  it("ignores a profile version it already has (redelivery) and records allocations", () => {
    const feed = new DashboardFeed(dashboardConfig.parse({}));
    feed.addProfile(profile("img", "alice", T0 + 2 * STEP));
    feed.addProfile(profile("img", "alice", T0 + STEP));
    feed.addProfile(profile("img", "alice", T0 + 2 * STEP));
    assert.equal(feed.pair("img", "alice")!.forecast.length, 1);
    const decision = { requestId: "r1", image: "img", user: "alice", ok: true, reason: "ok", message: "", node: "n1", level: "exact", profileVersion: T0, cpu: { request: 1, limit: 2 }, memory: null, gpus: 0, netEgressBytesPerSecond: null, priorityMultiplier: 1, scaled: false, ts: T0 } satisfies AllocationDecision;
    feed.addAllocation(decision);
    feed.addAllocation({ ...decision, requestId: "r2", ok: false, reason: "capacity", node: "n2" });
    assert.deepEqual(feed.pair("img", "alice")!.allocations.map((a) => [a.requestId, a.ok]), [["r1", true], ["r2", false]]);
    assert.deepEqual(Object.fromEntries(feed.nodesSeen()), { n1: { decisions: 1, refused: 0, last: T0 }, n2: { decisions: 1, refused: 1, last: T0 } });
  });

  it("attaches to each anomaly the remediation of the same workload and type after it", () => {
    const feed = new DashboardFeed(dashboardConfig.parse({}));
    feed.addAnomaly(anomaly("w1", "miner", T0));
    feed.addAnomaly(anomaly("w2", "memory_leak", T0 + STEP, "other", "bob"));
    feed.addActuation(result("w1", "freeze", "miner (critical) on w1: …", T0 + 1000));
    feed.addActuation(result("w1", "kill", "miner (critical) on w1: …; escalation", T0 + 60_000));
    feed.addActuation(result("w1", "resize", "memory near the limit", T0 + 2000)); // the launcher's, not remediation
    feed.addActuation(result("w1", "freeze", "miner (critical) on w1: earlier", T0 - 1000)); // before the anomaly
    feed.addActuation(result("w2", "alert", "spike (warning) on w2", T0 + 2 * STEP)); // another type
    const [leak, miner] = feed.listAnomalies();
    assert.equal(leak!.workload, "w2", "newest first");
    assert.deepEqual(leak!.actions, []);
    assert.deepEqual(miner!.actions.map((a) => a.action), ["freeze", "kill"]);
    assert.deepEqual(feed.listAnomalies({ user: "BOB" }).map((a) => a.workload), ["w2"]);
  });

  it("reads the pipeline's topics and announces changes", async () => {
    const transport = new EmbeddedTransport({ partitions: 2, bufferRecords: 100 });
    const feed = new DashboardFeed(dashboardConfig.parse({}));
    const changes: string[] = [];
    feed.on("change", (change: { kind: string }) => changes.push(change.kind));
    await feed.start(transport, "augur-dashboard");
    await transport.topic<WindowAggregate>(TOPICS.windows).publish([{ key: "img|alice", value: window("img", "alice", 0), timestamp: T0 }]);
    await transport.topic<Profile>(TOPICS.profiles).publish([{ key: "img|alice", value: profile("img", "alice", T0), timestamp: T0 }]);
    await transport.topic<AnomalyEvent>(TOPICS.anomalies).publish([{ key: "img|alice", value: anomaly("w", "spike", T0), timestamp: T0 }]);
    // A record the feed cannot use is skipped, and the feed keeps going.
    await transport.topic<unknown>(TOPICS.windows).publish([{ key: "x", value: { nonsense: true }, timestamp: T0 }]);
    await transport.topic<WindowAggregate>(TOPICS.windows).publish([{ key: "img|alice", value: window("img", "alice", 1), timestamp: T0 }]);
    await transport.drain();
    assert.equal(feed.pair("img", "alice")!.usage.length, 2);
    assert.equal(feed.skipped, 1);
    assert.deepEqual(new Set(changes), new Set(["window", "profile", "anomaly"]));
    await feed.stop();
    await transport.close();
  });
});

describe("backtest report directory", () => {
  const { dir, cleanup } = tempDir("augur-reports-");
  const reports = join(dir, "reports");
  const good = { trace: "t.csv", samples: 10, workloads: 2, elapsed_ms: 5, policies: { vpa: { cpu: { slack: 0.4, violation_rate: 0.01 } }, augur: { cpu: { slack: 0.2, violation_rate: 0.005 } } } };
  before(() => {
    mkdirSync(reports);
    writeFileSync(join(reports, "good.json"), JSON.stringify(good));
    writeFileSync(join(reports, "good.html"), "<html><body><svg></svg></body></html>");
    writeFileSync(join(reports, "broken.json"), "{");
    writeFileSync(join(reports, "other.json"), JSON.stringify({ hello: "world" }));
    writeFileSync(join(dir, "secret.json"), JSON.stringify(good));
    symlinkSync(join(dir, "secret.json"), join(reports, "link.json"));
    writeFileSync(join(reports, "huge.json"), "");
    truncateSync(join(reports, "huge.json"), MAX_REPORT_BYTES + 1);
    mkdirSync(join(reports, "dir.json"));
  });
  after(cleanup);

  it("lists results and says why other files are not", () => {
    const listing = new ReportDirectory(reports).list();
    assert.deepEqual(listing.reports.map((r) => [r.name, r.html, r.policies, r.resources]), [["good", true, ["vpa", "augur"], ["cpu"]]]);
    const refused = Object.fromEntries(listing.refused.map((r) => [r.file, r.reason]));
    assert.match(refused["broken.json"]!, /not JSON/);
    assert.match(refused["other.json"]!, /not a backtest result/);
    assert.match(refused["link.json"]!, /not a regular file/);
    assert.match(refused["huge.json"]!, /larger than/);
    assert.match(refused["dir.json"]!, /not a regular file/);
  });

  it("refuses names that are paths, and never follows links out", () => {
    const directory = new ReportDirectory(reports);
    for (const name of ["../secret", "..", ".hidden", "a/b", "good\u0000", "", "x".repeat(200), "%2e%2e"]) {
      assert.throws(() => directory.result(name), /report name/, JSON.stringify(name));
    }
    assert.equal(directory.result("link"), null);
    assert.equal(directory.result("missing"), null);
    assert.equal(directory.result("good")!.samples, 10);
  });
});

describe("dashboard HTTP routes", () => {
  const { dir, cleanup } = tempDir("augur-dashboard-api-");
  let app: FastifyInstance;
  let bare: FastifyInstance;
  /** Pushes every 5 ms, from a feed of its own. */
  let fast: FastifyInstance;
  let store: ProfileStore;
  const feed = new DashboardFeed(dashboardConfig.parse({}));
  const busyFeed = new DashboardFeed(dashboardConfig.parse({}));

  before(async () => {
    store = new ProfileStore(join(dir, "data"));
    const config = allocationConfig.parse({ inventory: { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 } });
    const metrics = new Metrics();
    const engine = new AllocationEngine(config, store, { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 }, "node-a", createScaler(config.scaler), metrics);
    store.writeProfiles([{ profile: profile("img", "*", T0, "image"), modelState: { model: "m", stateVersion: 1, state: {} } }]);
    for (let step = 0; step < 3; step++) feed.addWindow(window("img", "alice", step));
    feed.addProfile(profile("img", "*", T0, "image"));
    const assets = join(dir, "assets");
    mkdirSync(assets);
    writeFileSync(join(assets, "index.html"), "<!doctype html><title>augur</title>");
    writeFileSync(join(assets, "app.js"), "export {};");
    writeFileSync(join(assets, "notes.txt"), "not served");
    mkdirSync(join(dir, "reports"));
    writeFileSync(join(dir, "reports", "r.json"), JSON.stringify({ trace: "t", samples: 1, workloads: 1, policies: {} }));
    writeFileSync(join(dir, "reports", "r.html"), "<html></html>");
    const common = { store, engine, metrics, node: "node-a", token: "t".repeat(24), bodyLimitBytes: 4096, now: () => T0 };
    app = buildApi({ ...common, dashboard: { feed, reports: new ReportDirectory(join(dir, "reports")), assetsDir: assets, pushEveryMs: 50 } });
    bare = buildApi({ ...common, dashboard: { feed, reports: null, assetsDir: join(dir, "nowhere") } });
    fast = buildApi({ ...common, dashboard: { feed: busyFeed, reports: null, assetsDir: assets, pushEveryMs: 5 } });
    await app.ready();
    await bare.ready();
  });
  after(async () => {
    await app.close();
    await bare.close();
    await fast.close();
    store.close();
    cleanup();
  });

  it("serves the built page with a strict content policy, and only the built files", async () => {
    assert.equal((await app.inject({ url: "/" })).headers.location, "/ui/");
    const page = await app.inject({ url: "/ui/" });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers["content-type"]), /text\/html/);
    assert.match(String(page.headers["content-security-policy"]), /script-src 'self'/);
    assert.equal((await app.inject({ url: "/ui/app.js" })).statusCode, 200);
    for (const url of ["/ui/notes.txt", "/ui/..%2f..%2fetc%2fpasswd", "/ui/index.html%00.js", "/ui/%2e%2e%2fpackage.json"]) {
      assert.equal((await app.inject({ url })).statusCode, 404, url);
    }
    assert.equal((await app.inject({ url: "/ui/%2e%2e" })).statusCode, 302, "normalised to / and sent to the page");
    const unbuilt = await bare.inject({ url: "/ui/" });
    assert.equal(unbuilt.statusCode, 503);
    assert.match(unbuilt.json().message, /npm run build/);
  });

  it("answers a pair with its series and the fallback level the next allocation would use", async () => {
    const response = await app.inject({ url: `/v1/dashboard/pairs/img/alice` });
    assert.equal(response.statusCode, 200);
    const body = response.json();
    assert.equal(body.usage.length, 3);
    assert.equal(body.nextLevel, "image");
    assert.equal(body.fallback.user, "*");
    assert.equal(body.fallback.forecast.length, 1);
    assert.equal((await app.inject({ url: `/v1/dashboard/pairs/nothing/here` })).statusCode, 404);
  });

  it("refuses hostile queries and ids with 400", async () => {
    for (const url of [
      "/v1/dashboard/pairs?limit=abc",
      "/v1/dashboard/pairs?limit=0",
      "/v1/dashboard/pairs?unknown=1",
      `/v1/dashboard/pairs?image=${"x".repeat(600)}`,
      "/v1/dashboard/anomalies?limit=-1",
      "/v1/dashboard/pairs/img/%0A",
      "/v1/dashboard/pairs/a%7Cb/alice",
      "/v1/dashboard/reports/..%2Fsecret",
      "/v1/dashboard/reports/.hidden/html",
    ]) {
      const response = await app.inject({ url });
      assert.equal(response.statusCode, 400, `${url}: ${response.body}`);
      assert.equal(response.json().ok, false);
    }
  });

  it("serves reports sandboxed, and says when none are configured", async () => {
    assert.equal((await app.inject({ url: "/v1/dashboard/reports" })).json().reports[0].name, "r");
    const html = await app.inject({ url: "/v1/dashboard/reports/r/html" });
    assert.match(String(html.headers["content-security-policy"]), /^sandbox/);
    assert.equal((await bare.inject({ url: "/v1/dashboard/reports" })).json().configured, false);
    assert.equal((await bare.inject({ url: "/v1/dashboard/reports/r" })).statusCode, 404);
  });

  it("shows the node's capacity and live allocations", async () => {
    const nodes = (await app.inject({ url: "/v1/dashboard/nodes" })).json().nodes;
    assert.equal(nodes[0].node, "node-a");
    assert.equal(nodes[0].capacity.cpu, 4);
    assert.equal(nodes[0].live, 0);
  });

  it("streams changes as server-sent events", async () => {
    const address = await app.listen({ host: "127.0.0.1", port: 0 });
    const controller = new AbortController();
    const response = await fetch(`${address}/v1/dashboard/stream`, { signal: controller.signal });
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    const reader = response.body!.getReader();
    let text = "";
    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += Buffer.from(value).toString("utf8");
      }
    })().catch(() => undefined);
    feed.addWindow(window("img", "bob", 0));
    await eventually(() => (text.includes("event: update") ? true : undefined), 5000, "an update event");
    const data = JSON.parse(/data: (.*)\n/.exec(text.slice(text.indexOf("event: update")))![1]!);
    assert.deepEqual(data.pairs, ["img|bob"]);
    controller.abort();
    await read;
  });

  it("queues at most one event for a client that does not read", async () => {
    const address = new URL(await fast.listen({ host: "127.0.0.1", port: 0 }));
    const socket = connect(Number(address.port), address.hostname);
    await once(socket, "connect");
    socket.write(`GET /v1/dashboard/stream HTTP/1.1\r\nhost: ${address.host}\r\n\r\n`);
    await once(socket, "readable");
    socket.pause(); // reads nothing more while the feed changes
    // 100 pairs with 1000-character images changed every 5 ms: about 100 kB an event, 2 s of them.
    const images = Array.from({ length: 100 }, (_, n) => `${n}-${"i".repeat(1000)}`);
    const end = Date.now() + 2000;
    for (let step = 0; Date.now() < end; step++) {
      for (const image of images) busyFeed.addWindow(window(image, "u", step));
      await sleep(5);
    }
    let received = 0;
    socket.on("data", (chunk: Buffer) => (received += chunk.length));
    socket.resume();
    // Read until what comes is only the keep-alive comments (a few bytes every 150 ms).
    for (let last = -1e9; received - last > 1000; ) {
      last = received;
      await sleep(300);
    }
    socket.destroy();
    // Unbounded, the server would have queued ~400 events (40 MB); bounded, what the kernel's socket buffers held and one event.
    assert.ok(received < 12e6, `the client received ${(received / 1e6).toFixed(1)} MB`);
    assert.ok(received > 100e3, `and some events: ${received} bytes`);
  });
});
