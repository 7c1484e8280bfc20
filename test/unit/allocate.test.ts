import assert from "node:assert/strict";
import { writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { allocationConfig, type AllocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine, parseAllocationRequest } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import { ValidationError } from "../../src/core/errors.js";
import type { Profile, ResourcePrediction } from "../../src/core/types.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { T0, tempDir } from "../helpers.js";

const GIB = 2 ** 30;

function prediction(value: number): ResourcePrediction {
  return { p50: value, p90: value, p95: value, p99: value, max: value, request: value, limit: value * 1.5, model: "test", sampleCount: 100 };
}

function profile(image: string, user: string, cpu: number, memory: number, windows = 10): Profile {
  const level = image === "*" ? (user === "*" ? "global" : "user") : user === "*" ? "image" : "exact";
  return { image, user, level, version: T0, firstSeen: T0, windows, resources: { cpu: prediction(cpu), mem: prediction(memory) }, oomKills: 0 };
}

function put(store: ProfileStore, ...profiles: Profile[]) {
  store.writeProfiles(profiles.map((p) => ({ profile: p, modelState: { model: "test", stateVersion: 1, state: {} } })));
}

describe("allocation engine", () => {
  let dir: string;
  let cleanup: () => void;
  let store: ProfileStore;
  let n = 0;
  const config = (overrides: Record<string, unknown> = {}): AllocationConfig =>
    allocationConfig.parse({ inventory: { cpu: 4, memory: 8 * GIB, gpus: 0 }, minimum: { cpu: 0.01, memory: 1 }, ...overrides });
  const request = (image: string, user: string, extra: Record<string, unknown> = {}) =>
    parseAllocationRequest({ image, user, requestId: `r${++n}`, ...extra }, T0);
  // Each engine is a fresh node, so live allocations of one test do not take another's capacity.
  const engine = (cfg: AllocationConfig) =>
    new AllocationEngine(cfg, store, cfg.inventory as { cpu: number; memory: number; gpus: number }, `node-${++n}`, createScaler(cfg.scaler));

  before(() => {
    ({ dir, cleanup } = tempDir());
    store = new ProfileStore(dir);
  });
  after(() => {
    store.close();
    cleanup();
  });

  it("raises the memory limit after an OOM kill, even over explicit amounts, until the floor expires", async () => {
    const cfg = config({ feedback: { floorHours: 1 } });
    const e = engine(cfg);
    const explicit = { request: { memory: 100 * 2 ** 20 } };
    assert.equal((await e.allocate(request("oom-app", "dana", explicit))).memory!.limit, 100 * 2 ** 20);
    // VPA RecordOOM (ANCHORS §1.6): max(limit + 100 MiB, limit × 1.2).
    assert.equal(e.recordOom("oom-app", "dana", 100 * 2 ** 20, T0), 200 * 2 ** 20);
    const after = await e.allocate(request("oom-app", "dana", explicit));
    assert.equal(after.memory!.limit, 200 * 2 ** 20);
    assert.equal(after.memory!.request, 200 * 2 ** 20);
    assert.match(after.message, /memory limit raised to 209715200 after an OOM kill at 104857600 bytes/);
    // A second OOM at the raised limit raises it again; a lower floor never lowers it.
    assert.equal(e.recordOom("oom-app", "dana", 200 * 2 ** 20, T0 + 1000), 300 * 2 ** 20);
    assert.equal(e.recordOom("oom-app", "dana", 10 * 2 ** 20, T0 + 2000), 300 * 2 ** 20);
    // Other pairs are not affected; an hour later the floor is gone.
    assert.equal((await e.allocate(request("oom-app", "erin", explicit))).memory!.limit, 100 * 2 ** 20);
    const later = await e.allocate(parseAllocationRequest({ image: "oom-app", user: "dana", requestId: `r${++n}`, ...explicit }, T0 + 2000 + 3_600_001));
    assert.equal(later.memory!.limit, 100 * 2 ** 20);
  });

  it("raises the CPU limit after heavy throttling", async () => {
    const e = engine(config());
    assert.equal(e.recordThrottling("busy", "fay", 0.5, T0), 0.75);
    const decision = await e.allocate(request("busy", "fay", { request: { cpu: 0.5 } }));
    assert.equal(decision.cpu!.limit, 0.75);
    assert.equal(decision.cpu!.request, 0.5);
  });

  it("gives a never-seen pair the default, says so, and starts profiling it", async () => {
    const decision = await engine(config()).allocate(request("new-image", "nobody"));
    assert.equal(decision.ok, true);
    assert.equal(decision.level, "default");
    assert.deepEqual(decision.cpu, { request: 0.5, limit: 1 });
    assert.match(decision.message, /no profile/);
    assert.match(decision.message, /profiling starts/);
    assert.notEqual(store.firstSeen("new-image", "nobody"), null);
  });

  it("uses the exact profile once it exists", async () => {
    put(store, profile("app", "alice", 0.8, 300e6));
    const decision = await engine(config()).allocate(request("app", "alice"));
    assert.equal(decision.level, "exact");
    assert.ok(Math.abs(decision.cpu!.request - 0.8) < 1e-9);
    assert.ok(Math.abs(decision.memory!.limit - 450e6) < 1);
  });

  it("falls back to (image, *) scaled by the user's factor, then (*, user), then (*, *)", async () => {
    put(store, profile("big", "*", 2, 1e9), profile("app", "*", 0.4, 300e6), profile("app", "dave", 0.8, 300e6));
    // dave runs app at 2× the CPU of everyone: his factor is 2
    const viaImage = await engine(config()).allocate(request("big", "dave"));
    assert.equal(viaImage.level, "image");
    assert.ok(Math.abs(viaImage.cpu!.request - 2 * 2) < 1e-9, String(viaImage.cpu!.request));
    assert.match(viaImage.message, /user factor cpu 2\.000/);
    put(store, profile("*", "erin", 0.3, 100e6));
    assert.equal((await engine(config()).allocate(request("unknown", "erin"))).level, "user");
    put(store, profile("*", "*", 0.2, 100e6));
    assert.equal((await engine(config()).allocate(request("unknown", "frank"))).level, "global");
  });

  it("ignores a profile with too few windows", async () => {
    put(store, profile("young", "gina", 3, 1e9, 1));
    assert.notEqual((await engine(config()).allocate(request("young", "gina"))).level, "exact");
  });

  it("applies a VIP multiplier to the CPU", async () => {
    put(store, profile("svc", "vip-user", 0.5, 100e6));
    const cfg = config({ priorities: { classes: { vip: { cpuMultiplier: 2 } }, users: { "vip-user": { class: "vip" } } } });
    const decision = await engine(cfg).allocate(request("svc", "vip-user"));
    assert.ok(Math.abs(decision.cpu!.request - 1.0) < 1e-9, String(decision.cpu!.request));
    assert.equal(decision.priorityMultiplier, 2);
    const plain = await engine(config()).allocate(request("svc", "vip-user"));
    assert.ok(Math.abs(plain.cpu!.request - 0.5) < 1e-9);
  });

  it("refuses an unknown priority class in config and in requests", async () => {
    assert.throws(() => engine(config({ priorities: { users: { x: { class: "nope" } } } })), ValidationError);
    await assert.rejects(engine(config()).allocate(request("svc", "x", { priorityClass: "nope" })), ValidationError);
  });

  it("fails with reason capacity when the node is full, and counts live allocations", async () => {
    const cfg = config({ inventory: { cpu: 2, memory: 8 * GIB, gpus: 0 } });
    const e = engine(cfg);
    const big = await e.allocate(request("x", "y", { request: { cpu: 1.5, memory: GIB } }));
    assert.equal(big.ok, true);
    assert.equal(big.level, "explicit");
    const refused = await e.allocate(request("x", "y", { request: { cpu: 1, memory: GIB } }));
    assert.equal(refused.ok, false);
    assert.equal(refused.reason, "capacity");
    assert.match(refused.message, /lacks 0\.500 cores/);
    e.release(big.requestId);
    assert.equal((await e.allocate(request("x", "y", { request: { cpu: 1, memory: GIB } }))).ok, true);
  });

  it("holds a renewed allocation past its first lease, records a lapsed one again, and never shortens a lease", async () => {
    const cfg = config({ inventory: { cpu: 2, memory: 8 * GIB, gpus: 0 }, leaseSeconds: 60 });
    const e = engine(cfg);
    const at = (ts: number, cpu = 1.5) => e.allocate(parseAllocationRequest({ image: "x", user: "y", requestId: `r${++n}`, request: { cpu, memory: GIB } }, ts));
    const run = await at(T0);
    assert.equal(run.ok, true);
    // Unrenewed, the lease lapses and its capacity is taken by another.
    assert.equal((await at(T0 + 61_000)).ok, true, "the lapsed lease freed its capacity");
    const e2 = new AllocationEngine(cfg, store, { cpu: 2, memory: 8 * GIB, gpus: 0 }, "node-renew", createScaler(cfg.scaler));
    const held = await e2.allocate(parseAllocationRequest({ image: "x", user: "y", requestId: `r${++n}`, request: { cpu: 1.5, memory: GIB } }, T0));
    e2.renew(held, T0 + 50_000);
    const refused = await e2.allocate(parseAllocationRequest({ image: "x", user: "y", requestId: `r${++n}`, request: { cpu: 1, memory: GIB } }, T0 + 100_000));
    assert.equal(refused.reason, "capacity", "renewed at 50 s, it holds until 110 s");
    e2.renew(held, T0 + 10_000); // an older renewal does not shorten it
    assert.equal(store.liveAllocations("node-renew", T0 + 105_000).length, 1);
    // Lapsed and swept by another allocation, a renewal records it again.
    const other = await e2.allocate(parseAllocationRequest({ image: "x", user: "y", requestId: `r${++n}`, request: { cpu: 1, memory: GIB } }, T0 + 200_000));
    assert.equal(other.ok, true);
    e2.renew(held, T0 + 210_000);
    assert.deepEqual(store.liveAllocations("node-renew", T0 + 215_000).map((a) => a.requestId).sort(), [held.requestId, other.requestId].sort());
    assert.equal(store.getAllocation(held.requestId)!.requestId, held.requestId);
  });

  it("asks the scaler hook (a real command) when short, and succeeds if it adds capacity", async () => {
    const script = join(dir, "scaler.sh");
    writeFileSync(script, '#!/bin/sh\ncat > /dev/null\necho \'{"added": {"cpu": 8, "memory": 0}}\'\n');
    chmodSync(script, 0o755);
    const cfg = config({ inventory: { cpu: 1, memory: 8 * GIB, gpus: 0 }, scaler: { kind: "command", argv: [script] } });
    const decision = await engine(cfg).allocate(request("z", "y", { request: { cpu: 4, memory: GIB } }));
    assert.equal(decision.ok, true, decision.message);
    assert.equal(decision.scaled, true);
  });

  it("reports a failing or lying scaler and still answers capacity", async () => {
    const script = join(dir, "liar.sh");
    writeFileSync(script, '#!/bin/sh\necho \'{"added": {"cpu": -5}}\'\n');
    chmodSync(script, 0o755);
    for (const argv of [[script], [join(dir, "does-not-exist")], ["/bin/false"]]) {
      const cfg = config({ inventory: { cpu: 1, memory: 8 * GIB, gpus: 0 }, scaler: { kind: "command", argv } });
      const decision = await engine(cfg).allocate(request("z", "y", { request: { cpu: 4, memory: GIB } }));
      assert.equal(decision.reason, "capacity");
      assert.match(decision.message, /scaler/);
    }
  });

  it("answers the same request id with the same decision, reserving once", async () => {
    const cfg = config({ inventory: { cpu: 1, memory: 8 * GIB, gpus: 0 } });
    const e = engine(cfg);
    const first = await e.allocate(parseAllocationRequest({ image: "a", user: "b", requestId: "same", request: { cpu: 0.8, memory: 1e6 } }, T0));
    const again = await e.allocate(parseAllocationRequest({ image: "a", user: "b", requestId: "same", request: { cpu: 0.8, memory: 1e6 } }, T0));
    assert.equal(first.ok, true);
    assert.deepEqual(again, first);
    e.release("same");
  });

  it("validates requests: unknown fields, NaN, negative and huge amounts, hostile ids", () => {
    for (const body of [
      { image: "a", user: "b", extra: 1 },
      { image: "a", user: "b", request: { cpu: -1 } },
      { image: "a", user: "b", request: { cpu: 1e300 } },
      { image: "a", user: "b", request: { cpu: "1" } },
      { image: "a", user: "b", request: { gpus: 0.5 } },
      { image: "a\u0000", user: "b" },
      { image: "a", user: "|" },
      { image: "a", user: "b", requestId: "../../x" },
      { image: "a" },
      null,
      [],
    ]) {
      assert.throws(() => parseAllocationRequest(body, T0), ValidationError, JSON.stringify(body));
    }
  });
});

describe("profile store", () => {
  it("keeps profiles across reopen and never lets an older version overwrite a newer one", () => {
    const { dir, cleanup } = tempDir();
    try {
      let store = new ProfileStore(dir);
      put(store, { ...profile("a", "b", 1, 1), version: T0 + 10 });
      put(store, { ...profile("a", "b", 9, 9), version: T0 + 5 });
      store.close();
      store = new ProfileStore(dir);
      const kept = store.getProfile("a", "b")!;
      assert.equal(kept.version, T0 + 10);
      assert.equal(kept.resources.cpu!.p50, 1);
      store.close();
    } finally {
      cleanup();
    }
  });

  it("stores ids with slashes, dots and shell characters as data, never as paths", () => {
    const { dir, cleanup } = tempDir();
    try {
      const store = new ProfileStore(dir);
      const hostile = ["../../etc/passwd", "/abs/path", "$(touch /tmp/pwned)", "a;rm -rf /", "..", "名前"];
      for (const id of hostile) put(store, profile(id, id, 1, 1));
      for (const id of hostile) assert.equal(store.getProfile(id, id)!.image, id);
      store.close();
    } finally {
      cleanup();
    }
  });
});
