import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { FastifyInstance } from "fastify";
import { allocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import { buildApi } from "../../src/api/server.js";
import { Metrics } from "../../src/core/metrics.js";
import type { Profile } from "../../src/core/types.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { T0, tempDir } from "../helpers.js";

const TOKEN = "test-token-0123456789abcdef";
const auth = { authorization: `Bearer ${TOKEN}` };

describe("HTTP API", () => {
  let app: FastifyInstance;
  let store: ProfileStore;
  let cleanup: () => void;
  let clock = T0;

  before(async () => {
    const temp = tempDir();
    cleanup = temp.cleanup;
    store = new ProfileStore(temp.dir);
    const config = allocationConfig.parse({ inventory: { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 } });
    const metrics = new Metrics();
    const engine = new AllocationEngine(config, store, { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 }, "node-a", createScaler(config.scaler), metrics);
    const profile: Profile = {
      image: "team/app:1",
      user: "alice",
      level: "exact",
      version: T0,
      firstSeen: T0,
      windows: 5,
      resources: { cpu: { p50: 0.5, p90: 0.6, p95: 0.7, p99: 0.8, max: 0.9, request: 0.69, limit: 0.92, model: "m", sampleCount: 50 } },
      oomKills: 0,
    };
    store.writeProfiles([{ profile, modelState: { model: "m", stateVersion: 1, state: {} } }]);
    app = buildApi({ store, engine, metrics, node: "node-a", token: TOKEN, bodyLimitBytes: 4096, now: () => clock });
    await app.ready();
  });
  after(async () => {
    await app.close();
    store.close();
    cleanup();
  });

  it("serves /healthz", async () => {
    const response = await app.inject({ url: "/healthz" });
    assert.equal(response.statusCode, 200);
    assert.equal(response.json().status, "ok");
  });

  it("serves a profile by image and user, with slashes in the image url-encoded", async () => {
    const response = await app.inject({ url: `/v1/profiles/${encodeURIComponent("team/app:1")}/alice` });
    assert.equal(response.statusCode, 200);
    assert.equal(response.json().resources.cpu.p50, 0.5);
    assert.equal((await app.inject({ url: "/v1/profiles/nope/alice" })).statusCode, 404);
  });

  it("answers hostile ids with 400 or 404, never 500", async () => {
    for (const url of ["/v1/profiles/a%00b/alice", "/v1/profiles/..%2F..%2Fetc%2Fpasswd/x", "/v1/profiles/a%7Cb/c", "/v1/profiles/%24(id)/%60ls%60", "/v1/profiles/%E0%A4%A/x"]) {
      const response = await app.inject({ url });
      assert.ok([400, 404].includes(response.statusCode), `${url} → ${response.statusCode}`);
      assert.equal(typeof response.json().reason, "string");
    }
  });

  it("lists profiles with filters and rejects unknown query parameters", async () => {
    assert.equal((await app.inject({ url: "/v1/profiles?user=alice" })).json().profiles.length, 1);
    assert.equal((await app.inject({ url: "/v1/profiles?level=exact&limit=1" })).json().profiles.length, 1);
    assert.equal((await app.inject({ url: "/v1/profiles?level=global" })).json().profiles.length, 0);
    assert.equal((await app.inject({ url: "/v1/profiles?evil=1" })).statusCode, 400);
    assert.equal((await app.inject({ url: "/v1/profiles?limit=-4" })).statusCode, 400);
  });

  it("needs the token to allocate", async () => {
    const body = { image: "team/app:1", user: "alice" };
    assert.equal((await app.inject({ method: "POST", url: "/v1/allocations", payload: body })).statusCode, 401);
    assert.equal((await app.inject({ method: "POST", url: "/v1/allocations", payload: body, headers: { authorization: "Bearer wrong" } })).statusCode, 401);
    const response = await app.inject({ method: "POST", url: "/v1/allocations", payload: body, headers: auth });
    assert.equal(response.statusCode, 201);
    const decision = response.json();
    assert.equal(decision.level, "exact");
    assert.equal(decision.reason, "ok");
    assert.equal((await app.inject({ url: `/v1/allocations/${decision.requestId}` })).statusCode, 200);
    assert.equal((await app.inject({ method: "DELETE", url: `/v1/allocations/${decision.requestId}` })).statusCode, 401);
    assert.equal((await app.inject({ method: "DELETE", url: `/v1/allocations/${decision.requestId}`, headers: auth })).statusCode, 204);
  });

  it("renews a live allocation's lease, and refuses a released, lapsed or unknown one", async () => {
    const allocate = async () => (await app.inject({ method: "POST", url: "/v1/allocations", payload: { image: "x", user: "renewing", request: { cpu: 0.1, memory: 1e6 } }, headers: auth })).json().requestId as string;
    const renew = (id: string, headers: Record<string, string> = auth) => app.inject({ method: "POST", url: `/v1/allocations/${encodeURIComponent(id)}/renew`, headers });
    const held = await allocate();
    assert.equal((await renew(held, {})).statusCode, 401);
    try {
      clock = T0 + 3_000_000; // before the default lease (3600 s) lapses
      const renewed = await renew(held);
      assert.equal(renewed.statusCode, 200, renewed.body);
      assert.deepEqual(renewed.json(), { requestId: held, expiresAt: clock + 3_600_000 });
      clock = T0 + 3_000_000 + 3_600_000; // lapsed: what it held may be someone else's now
      assert.equal((await renew(held)).statusCode, 404);
    } finally {
      clock = T0;
    }
    const released = await allocate();
    assert.equal((await app.inject({ method: "DELETE", url: `/v1/allocations/${released}`, headers: auth })).statusCode, 204);
    for (const id of [released, "never-made", "x'; DELETE FROM allocations; --", "../../etc"]) {
      const refused = await renew(id);
      assert.equal(refused.statusCode, 404, id);
      assert.equal(refused.json().reason, "not-found");
    }
  });

  it("answers 409 with reason capacity when the node cannot fit it", async () => {
    const response = await app.inject({ method: "POST", url: "/v1/allocations", payload: { image: "x", user: "y", request: { cpu: 100, memory: 1 } }, headers: auth });
    assert.equal(response.statusCode, 409);
    assert.equal(response.json().reason, "capacity");
  });

  it("rejects bad bodies with 400 and the reason", async () => {
    const bad: Array<[string, string]> = [
      ["{not json", "application/json"],
      [JSON.stringify({ image: "a", user: "b", request: { cpu: "NaN" } }), "application/json"],
      [JSON.stringify({ image: "a", user: "b", surprise: true }), "application/json"],
      [JSON.stringify({ image: "a\u0000", user: "b" }), "application/json"],
      [JSON.stringify({ image: "a", user: "b", request: { memory: -1 } }), "application/json"],
      [JSON.stringify([1, 2]), "application/json"],
      ["null", "application/json"],
    ];
    for (const [payload, type] of bad) {
      const response = await app.inject({ method: "POST", url: "/v1/allocations", payload, headers: { ...auth, "content-type": type } });
      assert.equal(response.statusCode, 400, `${payload} → ${response.statusCode} ${response.body}`);
      assert.ok(response.json().message.length > 0);
    }
    const wrongType = await app.inject({ method: "POST", url: "/v1/allocations", payload: "image=a", headers: { ...auth, "content-type": "text/plain" } });
    assert.equal(wrongType.statusCode, 415);
    const huge = await app.inject({ method: "POST", url: "/v1/allocations", payload: JSON.stringify({ image: "a".repeat(10_000), user: "b" }), headers: { ...auth, "content-type": "application/json" } });
    assert.equal(huge.statusCode, 413);
  });

  it("serves Prometheus metrics that count decisions", async () => {
    const response = await app.inject({ url: "/metrics" });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers["content-type"]), /text\/plain/);
    assert.match(response.body, /augur_allocations_total\{reason="ok",level="exact"\} 1/);
    assert.match(response.body, /augur_allocation_decision_seconds_bucket/);
    assert.match(response.body, /^augur_profiles 1$/m);
  });
});
