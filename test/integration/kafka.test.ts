// Against the real services that scripts/test.sh starts (scripts/services.sh):
// Apache Kafka in KRaft mode, Apicurio Registry (Confluent-compatible API),
// VictoriaMetrics. Each test uses its own topic namespace.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import avro from "avsc";
import { Kafka, logLevel } from "kafkajs";
import { detectHostLayout } from "../../src/collect/cgroup.js";
import type { ActuationResult, Profile } from "../../src/core/types.js";
import type { AnomalyEvent } from "../../src/detect/monitor.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { DEAD_LETTER_HEADERS, TOPICS, type Transport } from "../../src/transport/topic.js";
import { augur, CLI, REPO } from "../cli.js";
import { eventually, sleep, tempDir } from "../helpers.js";

const BROKERS = process.env.AUGUR_KAFKA_BROKERS ?? "127.0.0.1:9092";
const REGISTRY = process.env.AUGUR_REGISTRY_URL ?? "http://127.0.0.1:8081/apis/ccompat/v7";
const TSDB = process.env.AUGUR_TSDB_URL ?? "http://127.0.0.1:8428";
const TRACE = `${REPO}test/fixtures/kafka-replay.csv.gz`;
/** The Kafka clients to test: kafkajs always, node-rdkafka where the optional package is installed. */
const CLIENTS = ["kafkajs", ...(() => {
  try {
    createRequire(import.meta.url).resolve("node-rdkafka");
    return ["node-rdkafka"];
  } catch {
    return [];
  }
})()];
const layout = detectHostLayout();
/** Root and a cgroup hierarchy: what the actuate stage needs. */
const canActuate = process.getuid?.() === 0 && layout !== null;
const kafka = new Kafka({ clientId: "augur-test", brokers: [BROKERS], logLevel: logLevel.NOTHING });

interface Setup {
  dir: string;
  config: string;
  namespace: string;
  /** The config beyond transport and history: what the embedded run's profiles depend on. */
  extra: string;
  cleanup: () => void;
}

/** Pairs forecast alone: a pair's profile is a function of its own windows, so the distributed run must give exactly the embedded run's. */
const PAIRS_ALONE = "forecast: { model: augur-ensemble, options: { poolAcrossPairs: false } }";

function setup(name: string, extra = "", transportExtra = "", forecast = PAIRS_ALONE): Setup {
  const temp = tempDir(`augur-kafka-${name}-`);
  const dir = temp.dir;
  // AUGUR_TEST_KEEP=1 keeps the directory (and says where) to look into a failure.
  const cleanup = process.env.AUGUR_TEST_KEEP ? () => console.error(`kept ${dir} (namespace of ${name})`) : temp.cleanup;
  const namespace = `t${Date.now().toString(36)}${name}.`;
  const config = `${dir}/pipeline.yaml`;
  writeFileSync(
    config,
    `name: ${name}
node: test-node
dataDir: ${dir}/forecast
transport:
  kind: kafka
  brokers: [${BROKERS}]
  namespace: ${namespace}
  schemaRegistry: ${REGISTRY}
  maxBatch: 200
  sessionTimeoutMs: 6000
  topics: { partitions: 4, replicationFactor: 1, retentionHours: 876000 }   # the trace is from 2013: Kafka deletes by record (event) time
  logLevel: ${process.env.AUGUR_TEST_KAFKA_LOG ?? "nothing"}   # kafkajs's log in the stage logs (test-artifacts/)
${transportExtra}
history: { kind: influxdb, url: ${TSDB}, measurement: ${namespace.replace(/[^A-Za-z0-9]/g, "_")}window }
aggregate:
  window: { kind: tumbling, sizeSeconds: 300 }
  allowedLatenessSeconds: 0
  idleWatermarkSeconds: 0
${forecast}
api: { listen: 127.0.0.1:0 }
${extra}`,
  );
  return { dir, config, namespace, extra: `${forecast}\n${extra}`, cleanup };
}

const children = new Set<ChildProcess>();

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function stage(name: string, config: string, dataDir?: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const args = [CLI, "stage", name, "--config", config, ...(dataDir ? ["--data-dir", dataDir] : []), ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"], env });
  let log = "";
  child.stderr!.on("data", (chunk: Buffer) => (log = (log + chunk.toString()).slice(-4000)));
  const artifact = `${REPO}test-artifacts/stage-${name}-${child.pid}.log`;
  child.stderr!.on("data", (chunk: Buffer) => appendFileSync(artifact, chunk));
  child.on("exit", (code, signal) => {
    children.delete(child);
    if (code !== 0 && signal !== "SIGKILL" && signal !== "SIGTERM") console.error(`stage ${name} exited ${code ?? signal}:\n${log}`);
  });
  children.add(child);
  return child;
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill(signal);
  await exited;
}

/** A transport on a namespace of its own whose augur.samples holds `count` samples of one pair, a second apart (their timestamps go to `body`). */
async function withPublishedSamples(name: string, transportExtra: string, count: number, body: (transport: Transport, stamps: number[]) => Promise<void>): Promise<void> {
  const s = setup(name, "", transportExtra);
  const { loadPipeline } = await import("../../src/config/pipeline.js");
  const { createTransport } = await import("../../src/transport/create.js");
  const transport = await createTransport(loadPipeline(s.config).config);
  try {
    run(["topics", "create", "--config", s.config]);
    const base = { workload: "w1", image: "img", user: "alice", host: "h", source: "test", cpuCores: 0.5, memoryWorkingSetBytes: 1e8 };
    const stamps = Array.from({ length: count }, (_, i) => 1_700_000_000_000 + i * 1_000);
    await transport.topic(TOPICS.samples).publish(stamps.map((ts) => ({ key: "img|alice", value: { ...base, ts }, timestamp: ts })));
    await body(transport, stamps);
  } finally {
    await transport.close();
    s.cleanup();
  }
}

function run(args: string[]): string {
  const result = augur(args);
  assert.equal(result.status, 0, `augur ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const references = new Map<string, Map<string, Profile>>();

/**
 * The embedded run of the same trace: the reference the distributed run must
 * match. It depends on the trace and on the settings beyond transport and
 * history, so tests that share those share one run.
 */
function embeddedProfiles(s: Setup): Map<string, Profile> {
  const cached = references.get(s.extra);
  if (cached) return cached;
  run(["replay", "--trace", TRACE, "--bus", "embedded", "--keep-open", "--config", s.config, "--data-dir", `${s.dir}/embedded`]);
  const store = new ProfileStore(`${s.dir}/embedded`);
  try {
    const reference = new Map(store.listProfiles({ limit: 10_000 }).map((p): [string, Profile] => [`${p.image}|${p.user}`, p]));
    references.set(s.extra, reference);
    return reference;
  } finally {
    store.close();
  }
}

function readProfiles(dataDir: string): Map<string, Profile> {
  const store = new ProfileStore(dataDir);
  try {
    return new Map(store.listProfiles({ limit: 10_000 }).map((p) => [`${p.image}|${p.user}`, p]));
  } finally {
    store.close();
  }
}

/** Waits until the distributed forecast store holds every reference profile at its final version. */
async function converged(dataDir: string, reference: Map<string, Profile>, timeoutMs = 180_000): Promise<Map<string, Profile>> {
  return eventually(
    () => {
      const got = readProfiles(dataDir);
      const behind: string[] = [];
      for (const [key, want] of reference) {
        const have = got.get(key);
        if (have?.version !== want.version || have?.windows !== want.windows) behind.push(`${key}: ${have?.windows ?? 0}/${want.windows} windows`);
      }
      if (behind.length > 0) throw new Error(`not there yet: ${behind.join(", ")}`);
      return got;
    },
    timeoutMs,
    "the distributed run to reach the embedded run's profiles",
  );
}

const relativeGap = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-12);

function assertSameProfiles(got: Map<string, Profile>, want: Map<string, Profile>): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  // Every difference at once: one pair off tells little, the set of them tells where to look.
  const differences: string[] = [];
  for (const [key, expected] of want) {
    const actual = got.get(key)!;
    if (actual.windows !== expected.windows) differences.push(`${key}: ${actual.windows} windows vs ${expected.windows} (lost or applied twice)`);
    if (actual.version !== expected.version) differences.push(`${key}: version ${actual.version} vs ${expected.version}`);
    if (actual.oomKills !== expected.oomKills) differences.push(`${key}: ${actual.oomKills} OOM kills vs ${expected.oomKills}`);
    for (const [resource, prediction] of Object.entries(expected.resources)) {
      const other = actual.resources[resource as keyof Profile["resources"]]!;
      // A pair's windows arrive in the same order either way: the same numbers. Fallback
      // levels fold windows of several pairs, whose interleaving differs between runs.
      const tolerance = expected.level === "exact" ? 1e-9 : 0.05;
      for (const q of ["p50", "p95", "request", "limit"] as const) {
        if (!(relativeGap(other[q], prediction[q]) <= tolerance)) differences.push(`${key} ${resource} ${q}: ${other[q]} vs ${prediction[q]}`);
      }
    }
  }
  assert.deepEqual(differences, [], `profiles differ from the embedded run:\n${differences.join("\n")}`);
}

describe("distributed mode on Kafka, Schema Registry and VictoriaMetrics", { timeout: 900_000 }, () => {
  before(() => {
    const status = spawnSync("bash", [`${REPO}scripts/services.sh`, "status"], { encoding: "utf8" });
    assert.equal(status.status, 0, `services are not up (scripts/services.sh up): ${status.stdout}${status.stderr}`);
  });
  after(async () => {
    for (const child of [...children]) await stopChild(child, "SIGKILL");
  });

  it("a trace replayed into Kafka yields the embedded run's profiles; kcat sees Confluent-framed Avro whose ids resolve", async () => {
    const s = setup("same");
    try {
      const created = JSON.parse(run(["topics", "create", "--config", s.config])) as { topics: Array<{ name: string; action: string }>; schemaIds: Record<string, number> };
      assert.equal(created.topics.length, Object.keys(TOPICS).length);
      assert.ok(created.topics.every((t) => t.action === "created" && t.name.startsWith(s.namespace)));
      assert.equal(JSON.parse(run(["topics", "create", "--config", s.config])).topics[0].action, "exists", "idempotent");
      const reference = embeddedProfiles(s);
      assert.equal(reference.size, 7 + 4 + 3 + 1, "profiles of 7 pairs, 4 images, 3 users and the global one");

      const forecast = stage("forecast", s.config);
      const aggregate = stage("aggregate", s.config);
      const history = stage("history", s.config);
      const replay = JSON.parse(run(["replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config]));
      assert.equal(replay.samples, 4608);
      const got = await converged(`${s.dir}/forecast`, reference);
      assertSameProfiles(got, reference);


      // A reader that is not augur: kcat, then the registry for each schema id, then plain Avro.
      const topic = `${s.namespace}augur.profiles`;
      const dump = spawnSync("kcat", ["-C", "-b", BROKERS, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k\\t%R%s"], { maxBuffer: 64 << 20 });
      assert.equal(dump.status, 0, dump.stderr?.toString());
      const raw: Buffer = dump.stdout;
      // %R prefixes each value with its length (4 bytes, big endian).
      const records: Array<{ key: string; value: Buffer }> = [];
      for (let at = 0; at < raw.length; ) {
        const tab = raw.indexOf(0x09, at);
        const key = raw.subarray(at, tab).toString();
        const length = raw.readUInt32BE(tab + 1);
        records.push({ key, value: raw.subarray(tab + 5, tab + 5 + length) });
        at = tab + 5 + length;
      }
      assert.ok(records.length >= reference.size, `${records.length} profile records`);
      const schemas = new Map<number, avro.Type>();
      for (const { key, value } of records.slice(-40)) {
        assert.equal(value[0], 0, "magic byte");
        const id = value.readUInt32BE(1);
        if (!schemas.has(id)) {
          const response = await fetch(`${REGISTRY}/schemas/ids/${id}`);
          assert.equal(response.status, 200, `schema id ${id} resolves`);
          schemas.set(id, avro.Type.forSchema(JSON.parse(((await response.json()) as { schema: string }).schema)));
        }
        const profile = schemas.get(id)!.fromBuffer(value.subarray(5)) as Profile;
        assert.equal(`${profile.image}|${profile.user}`, key);
      }
      const compat = await (await fetch(`${REGISTRY}/config/${encodeURIComponent(`${topic}-value`)}`)).json();
      assert.equal((compat as { compatibilityLevel: string }).compatibilityLevel, "BACKWARD");

      // The history stage wrote every window to VictoriaMetrics; read them back.
      const measurement = `${s.namespace.replace(/[^A-Za-z0-9]/g, "_")}window`;
      const { readHistory } = await import("../../src/history/sink.js");
      const exactWindows = [...reference.values()].filter((p) => p.level === "exact").reduce((n, p) => n + p.windows, 0);
      const windows = await eventually(
        async () => {
          await fetch(`${TSDB}/internal/force_flush`);
          const found = await readHistory({ url: TSDB, measurement, fromMs: 0, toMs: Date.now() });
          return found.length >= exactWindows ? found : undefined;
        },
        60_000,
        "history windows in VictoriaMetrics",
      );
      assert.equal(windows.length, exactWindows);
      assert.ok(windows.every((w) => w.samples >= 1 && w.samples <= 2 && w.windowMs === 300_000 && w.stats.cpu?.max !== undefined), JSON.stringify(windows.find((w) => !(w.samples >= 1 && w.samples <= 2 && w.windowMs === 300_000 && w.stats.cpu?.max !== undefined))));
      // …and as a trace for backtests and training: one row per window, each pair's peaks.
      const exported = `${s.dir}/history.csv.gz`;
      const summary = JSON.parse(run(["history", "export", "--config", s.config, "--from", "2013-01-01", "--to", String(Date.now()), "--out", exported]));
      assert.deepEqual({ rows: summary.rows, refused: summary.refused }, { rows: exactWindows, refused: 0 });
      run(["backtest", "--trace", exported, "--policies", "vpa,augur", "--out", `${s.dir}/history-backtest.json`]);
      const scored = JSON.parse(readFileSync(`${s.dir}/history-backtest.json`, "utf8"));
      assert.equal(scored.rejected, 0);
      assert.equal(scored.workloads, [...reference.values()].filter((p) => p.level === "exact").length, "one workload per pair");
      for (const policy of ["vpa", "augur"]) assert.equal(scored.policies[policy].cpu.steps, exactWindows, `${policy}: every window scored`);
      assert.ok(scored.policies.augur.mem.slack > 0 && scored.policies.augur.mem.slack < 1);
      await Promise.all([forecast, aggregate, history].map((child) => stopChild(child)));
      const port = await freePort();
      const token = "kafka-api-token-0123456789";
      const api = stage("api", s.config, `${s.dir}/api`, ["--listen", `127.0.0.1:${port}`], { ...process.env, AUGUR_TOKEN: token });
      // The api stage, started after the replay, rebuilds its dashboard from what the topics retain:
      // every pair with its windows and forecasts, and an allocation decision that went out on
      // augur.allocations (Avro) and came back.
      const base = `http://127.0.0.1:${port}`;
      const listed = await eventually(async () => {
        const body = (await (await fetch(`${base}/v1/dashboard/pairs?limit=100`)).json()) as { total: number; pairs: Array<{ image: string; user: string }> };
        return body.total === 7 ? body : undefined;
      }, 60_000, "the api stage's dashboard to list the 7 pairs");
      const { image, user } = listed.pairs[0]!;
      const exact = reference.get(`${image}|${user}`)!;
      const allocated = await fetch(`${base}/v1/allocations`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ image, user, requestId: "dash-1" }) });
      assert.equal(allocated.status, 201, await allocated.text());
      const detail = await eventually(async () => {
        const body = (await (await fetch(`${base}/v1/dashboard/pairs/${encodeURIComponent(image)}/${encodeURIComponent(user)}`)).json()) as { usage: unknown[]; forecast: Array<{ t: number }>; allocations: Array<{ requestId: string }>; nextLevel: string };
        return body.usage.length === Math.min(exact.windows, 360) && body.allocations.length === 1 && body.forecast.at(-1)?.t === exact.version ? body : undefined;
      }, 60_000, "the pair's windows, forecasts and allocation on the dashboard");
      assert.equal(detail.allocations[0]!.requestId, "dash-1");
      assert.equal(detail.nextLevel, "exact");
      await stopChild(api);
    } finally {
      s.cleanup();
    }
  });

  it("node-rdkafka: stages and replay on librdkafka give the embedded run's profiles", { skip: !CLIENTS.includes("node-rdkafka") && "node-rdkafka is not installed (optional dependency)" }, async () => {
    const s = setup("rd", "", "  client: node-rdkafka");
    try {
      run(["topics", "create", "--config", s.config]);
      const reference = embeddedProfiles(s);
      const forecast = stage("forecast", s.config);
      const aggregate = stage("aggregate", s.config);
      const replay = JSON.parse(run(["replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config]));
      assert.equal(replay.samples, 4608);
      assertSameProfiles(await converged(`${s.dir}/forecast`, reference), reference);
      await Promise.all([forecast, aggregate].map((child) => stopChild(child)));
    } finally {
      s.cleanup();
    }
  });

  // kafkajs with the forecast-state changelog off (the restarted forecast process has only its store), node-rdkafka with the defaults (store and changelog).
  for (const client of CLIENTS) it(`SIGKILL of the aggregate and forecast stages mid-replay loses no update and applies none twice (${client}${client === "kafkajs" ? ", changelog off" : ""})`, async () => {
    const s = setup(client === "kafkajs" ? "kill" : "killrd", "", `  client: ${client}${client === "kafkajs" ? "\n  changelog: false" : ""}`);
    try {
      run(["topics", "create", "--config", s.config]);
      const reference = embeddedProfiles(s);
      let forecast = stage("forecast", s.config);
      let aggregate = stage("aggregate", s.config);
      // Paced so that the kills land in the middle: the trace spans 2 days of event time.
      const replay = spawn(process.execPath, [CLI, "replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config, "--speedup", "12000", "--batch", "50"], { stdio: "ignore" });
      const replayDone = new Promise<number | null>((resolve) => replay.on("exit", resolve));
      await eventually(() => (readProfiles(`${s.dir}/forecast`).size > 0 ? true : undefined), 60_000, "first profiles");
      await stopChild(forecast, "SIGKILL");
      await sleep(1_500);
      forecast = stage("forecast", s.config);
      await sleep(3_000);
      await stopChild(aggregate, "SIGKILL");
      await sleep(1_500);
      aggregate = stage("aggregate", s.config);
      assert.equal(await replayDone, 0);
      const got = await converged(`${s.dir}/forecast`, reference);
      assertSameProfiles(got, reference);
      await Promise.all([forecast, aggregate].map((child) => stopChild(child)));
    } finally {
      s.cleanup();
    }
  });

  it("when a forecast process dies, another takes its partitions and restores their state from the changelog", async () => {
    const s = setup("rebalance", "", "  changelog: true");
    try {
      run(["topics", "create", "--config", s.config]);
      const reference = embeddedProfiles(s);
      const first = stage("forecast", s.config, `${s.dir}/forecast-a`);
      const second = stage("forecast", s.config, `${s.dir}/forecast-b`);
      const aggregate = stage("aggregate", s.config);
      const replay = spawn(process.execPath, [CLI, "replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config, "--speedup", "8000", "--batch", "50"], { stdio: "ignore" });
      const replayDone = new Promise<number | null>((resolve) => replay.on("exit", resolve));
      // Both members own partitions and have folded windows in.
      await eventually(() => (readProfiles(`${s.dir}/forecast-a`).size > 0 && readProfiles(`${s.dir}/forecast-b`).size > 0 ? true : undefined), 90_000, "both forecast processes at work");
      await stopChild(first, "SIGKILL");
      assert.equal(await replayDone, 0);
      // The survivor alone ends with every profile, exactly as the embedded run.
      const got = await converged(`${s.dir}/forecast-b`, reference, 180_000);
      assertSameProfiles(got, reference);
      await Promise.all([second, aggregate].map((child) => stopChild(child)));
    } finally {
      s.cleanup();
    }
  });

  it("pooled pairs take their peers' prior from the fallback levels' profiles on augur.profiles (the levels repartitioned)", async () => {
    const s = setup("peers", "", "", "forecast: { model: augur-ensemble }");
    try {
      run(["topics", "create", "--config", s.config]);
      const reference = embeddedProfiles(s);
      const forecast = stage("forecast", s.config);
      const aggregate = stage("aggregate", s.config);
      run(["replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config, "--speedup", "8000", "--batch", "50"]);
      // Pooled, limits depend on the order windows of different pairs came in: the same windows, not the same numbers.
      await converged(`${s.dir}/forecast`, reference);
      // The process's own group on augur.profiles is deleted when it stops: restarts leave no groups behind.
      const admin = kafka.admin();
      await admin.connect();
      const peersGroups = async () => (await admin.listGroups()).groups.map((g) => g.groupId).filter((id) => id.startsWith(`${s.namespace}augur-forecast-peers-`));
      assert.equal((await peersGroups()).length, 1, "one peers group while the forecast process runs");
      await Promise.all([forecast, aggregate].map((child) => stopChild(child)));
      assert.deepEqual(await peersGroups(), [], "none once it stopped");
      await admin.disconnect();
      const store = new ProfileStore(`${s.dir}/forecast`);
      try {
        const priors = [...reference.values()]
          .filter((p) => p.level === "exact")
          .map((p) => (store.getModelState(p.image, p.user)!.state as { model: { resources: { cpu: { forecaster: { percentiles: { prior: number | null } } } } } }).model.resources.cpu.forecaster.percentiles.prior);
        assert.equal(priors.length, 7);
        assert.ok(priors.some((prior) => prior !== null && prior > 0), `a pair holds its peers' prior: ${JSON.stringify(priors)}`);
      } finally {
        store.close();
      }
    } finally {
      s.cleanup();
    }
  });

  // Each client with the defaults: the forecast-state changelog's restore runs when the group rebalances after the restart.
  for (const client of CLIENTS) it(`a broker restart in the middle of a replay: stages reconnect and finish, nothing lost (${client})`, async () => {
    const s = setup(`broker${client === "kafkajs" ? "" : "rd"}`, "", `  client: ${client}`);
    try {
      run(["topics", "create", "--config", s.config]);
      const reference = embeddedProfiles(s);
      const forecast = stage("forecast", s.config);
      const aggregate = stage("aggregate", s.config);
      const replay = spawn(process.execPath, [CLI, "replay", "--trace", TRACE, "--bus", "kafka", "--config", s.config, "--speedup", "12000", "--batch", "50"], { stdio: "ignore" });
      const replayDone = new Promise<number | null>((resolve) => replay.on("exit", resolve));
      await eventually(() => (readProfiles(`${s.dir}/forecast`).size > 0 ? true : undefined), 60_000, "first profiles");
      const down = spawnSync("bash", [`${REPO}scripts/services.sh`, "down", "kafka"], { encoding: "utf8" });
      assert.match(down.stderr, /kafka stopped/, `the test restarts the broker that scripts/services.sh started: ${down.stderr}`);
      await sleep(3_000);
      const up = spawnSync("bash", [`${REPO}scripts/services.sh`, "up", "kafka"], { encoding: "utf8" });
      assert.equal(up.status, 0, up.stderr);
      assert.equal(await replayDone, 0);
      const got = await converged(`${s.dir}/forecast`, reference, 300_000);
      assertSameProfiles(got, reference);
      await Promise.all([forecast, aggregate].map((child) => stopChild(child)));
      // The trace has no bad row: what the stages read again after the restart (from commits that open windows
      // hold back) is taken as already counted, not dead-lettered as late.
      const admin = kafka.admin();
      await admin.connect();
      try {
        const offsets = await admin.fetchTopicOffsets(`${s.namespace}augur.dead-letter`);
        assert.equal(offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0), 0, "dead letters");
      } finally {
        await admin.disconnect();
      }
    } finally {
      s.cleanup();
    }
  });

  it("the real registry enforces BACKWARD compatibility, and old and new readers read each other's records", async () => {
    const { dir, cleanup } = tempDir("augur-schemas-");
    try {
      const { AvroSerde, SCHEMA_DIR } = await import("../../src/transport/kafka/avro-serde.js");
      const { ConfluentSchemaRegistry } = await import("../../src/transport/kafka/registry.js");
      const namespace = `t${Date.now().toString(36)}evolve.`;
      const current = JSON.parse(readFileSync(`${SCHEMA_DIR}Sample.avsc`, "utf8")) as { fields: Array<{ name: string }> };
      const write = (name: string, schema: unknown) => {
        mkdirSync(`${dir}/${name}`);
        writeFileSync(`${dir}/${name}/Sample.avsc`, JSON.stringify(schema));
        return `${dir}/${name}/`;
      };
      const serde = (name: string, schema: unknown) => new AvroSerde(new ConfluentSchemaRegistry(REGISTRY), namespace, { "augur.samples": "Sample" }, write(name, schema));
      const older = serde("old", current);
      const newer = serde("new", { ...current, fields: [...current.fields, { name: "tenant", type: "string", default: "none", doc: "Added later." }] });
      const ids = [await older.registerAll(), await newer.registerAll()].map((registered) => registered["augur.samples"]);
      assert.notEqual(ids[0], ids[1]);
      const breaking = serde("bad", { ...current, fields: [...current.fields, { name: "mandatory", type: "string", doc: "No default." }] });
      await assert.rejects(breaking.registerAll(), /refused|incompatib/i);
      const base = { ts: 1_700_000_000_000, workload: "w", image: "i", user: "u" };
      const oldReadsNew = (await older.decode("augur.samples", await newer.encode("augur.samples", { ...base, tenant: "blue" }))) as Record<string, unknown>;
      assert.equal(oldReadsNew.workload, "w");
      assert.ok(!("tenant" in oldReadsNew));
      const newReadsOld = (await newer.decode("augur.samples", await older.encode("augur.samples", base))) as Record<string, unknown>;
      assert.equal(newReadsOld.tenant, "none");
    } finally {
      cleanup();
    }
  });

  it("a kafkajs consumer its group fenced (a pause longer than the session) is replaced and consumes the rest", async () => {
    // kafkajs stops a consumer for good on a non-retriable error such as the
    // coordinator's "not aware of this member" after a pause (GC, a stopped VM,
    // a broker whose coordinator was still settling); the transport starts a new one.
    await withPublishedSamples("fenced", "", 40, async (transport, stamps) => {
      const seen = new Set<number>();
      let paused = false;
      const consumer = await transport.consume<{ ts: number }>(TOPICS.samples, { group: "fenced", maxBatch: 5 }, async (batch) => {
        if (!paused) {
          paused = true;
          // The event loop blocked past the 6 s session: no heartbeat, the coordinator drops the member.
          const until = Date.now() + 10_000;
          while (Date.now() < until);
        }
        for (const record of batch) seen.add(Number(record.value.ts));
      });
      try {
        await eventually(() => (seen.size === stamps.length ? true : undefined), 120_000, `all ${stamps.length} records consumed`);
      } finally {
        await consumer.stop();
      }
    });
  });

  for (const client of CLIENTS) it(`a batch that fails while its partition stays the member's (its restore failed) is read again: no record skipped (${client})`, async () => {
    // A broker restart can fail a partition's restore (the changelog read) with the member still owning the
    // partition: the client has fetched the batch, and its position is past it.
    await withPublishedSamples(client === "kafkajs" ? "reread" : "rereadrd", `  client: ${client}`, 40, async (transport, stamps) => {
      const seen: number[] = [];
      let restores = 0;
      const onAssign = async () => {
        if (restores++ < 2) throw new Error(`restore ${restores} failed: the changelog's leader is away`);
      };
      const consumer = await transport.consume<{ ts: number }>(TOPICS.samples, { group: "reread", maxBatch: 5, onAssign }, async (batch) => {
        for (const record of batch) seen.push(Number(record.value.ts));
      });
      try {
        await eventually(() => (new Set(seen).size === stamps.length ? true : undefined), 60_000, `all ${stamps.length} records consumed (seen ${new Set(seen).size})`);
      } finally {
        await consumer.stop();
      }
      assert.equal(restores, 3, "the restore was tried until it succeeded, before any record was handled");
      assert.deepEqual(seen, stamps, "each record once, in order");
    });
  });

  for (const client of CLIENTS) it(`a member is told the partitions a rebalance gives to another member, and not those given back (${client})`, async () => {
    await withPublishedSamples(client === "kafkajs" ? "revoke" : "revokerd", `  client: ${client}`, 4, async (transport) => {
      const lost: number[] = [];
      const handled = new Set<number>();
      const first = await transport.consume(TOPICS.samples, { group: "revoke", onRevoke: (partition) => lost.push(partition) }, async (batch) => void handled.add(batch[0]!.partition));
      try {
        await eventually(() => (handled.size > 0 ? true : undefined), 60_000, "the first member to handle a batch");
        assert.deepEqual(lost, [], "nothing lost while it is the only member");
        // A second member joins: the first loses two of the four partitions.
        const second = await transport.consume(TOPICS.samples, { group: "revoke" }, async () => undefined);
        try {
          await eventually(() => (lost.length === 2 ? true : undefined), 60_000, `the first member to lose two partitions (lost ${JSON.stringify(lost)})`);
        } finally {
          await second.stop();
        }
        // The second leaves: all four come back to the first, and none of its own is reported lost.
        await sleep(8_000);
        assert.equal(lost.length, 2, `only the partitions the second member took: ${JSON.stringify(lost)}`);
        assert.ok(lost.every((partition) => partition >= 0 && partition < 4));
      } finally {
        await first.stop();
      }
    });
  });

  it("each node's actuate stage acts on the anomalies of its own workloads only", { skip: !canActuate && "needs root and a cgroup hierarchy" }, async () => {
    // Two nodes' actuate stages read every anomaly (a group per node); an anomaly names the host of its workload.
    const s = setup("remediate");
    const root = `augur-it-remediate-${process.pid}`;
    const token = "kafka-remediate-token-0123456789";
    process.env.AUGUR_IT_REMEDIATE_TOKEN = token;
    writeFileSync(`${s.dir}/cgroup.yaml`, `kind: cgroup\nroot: ${root}\n`);
    writeFileSync(`${s.dir}/process.yaml`, "kind: process\n");
    const { loadPipeline } = await import("../../src/config/pipeline.js");
    const { startStage } = await import("../../src/pipeline/embedded.js");
    const { createTransport } = await import("../../src/transport/create.js");
    const nodeConfig = (node: string) => {
      const path = `${s.dir}/${node}.yaml`;
      const text = readFileSync(s.config, "utf8")
        .replace("node: test-node", `node: ${node}`)
        .replace(/^dataDir: .*$/m, `dataDir: ${s.dir}/${node}`)
        .replace("api: { listen: 127.0.0.1:0 }", "api: { listen: 127.0.0.1:0, tokenEnv: AUGUR_IT_REMEDIATE_TOKEN }");
      writeFileSync(
        path,
        `${text}
actuate:
  connectors: [${s.dir}/cgroup.yaml, ${s.dir}/process.yaml]
  runs: { api: true, commands: ["/bin/sleep"] }
detect:
  remediation:
    rules: [{ type: miner, action: kill }]
`,
      );
      return loadPipeline(path);
    };
    run(["topics", "create", "--config", s.config]);
    const transport = await createTransport(loadPipeline(s.config).config);
    const nodes = [await startStage(nodeConfig("node-a"), "actuate"), await startStage(nodeConfig("node-b"), "actuate")];
    const results: ActuationResult[] = [];
    const reader = await transport.consume<ActuationResult>(TOPICS.actuations, { group: "it-results", from: "earliest", ephemeral: true }, async (batch) => {
      for (const record of batch) results.push(record.value);
    });
    const anomaly = (host: string, workload: string, type: string): AnomalyEvent => ({
      workload, image: "coin", user: "mallory", host, type: type as AnomalyEvent["type"], severity: "critical", score: 9, resource: "cpu", observed: 3.9, expected: 0.1, startTs: Date.now(), detectedTs: Date.now(), message: "m",
    });
    const publish = (event: AnomalyEvent) => transport.topic<AnomalyEvent>(TOPICS.anomalies).publish([{ key: "coin|mallory", value: event, timestamp: event.detectedTs }]);
    try {
      // The groups start at the newest anomaly: until each node has answered one, a new one may come before their start.
      await eventually(async () => {
        for (const host of ["node-a", "node-b"]) await publish(anomaly(host, `cgroup:/warm-${host}`, "spike"));
        return ["node-a", "node-b"].every((node) => results.some((r) => r.node === node && r.workload === `cgroup:/warm-${node}`)) ? true : undefined;
      }, 60_000, "each node's remediation to answer");
      assert.ok(results.every((r) => r.action === "alert" && r.workload === `cgroup:/warm-${r.node}`), "each node answers its own anomalies only");

      const response = await fetch(`${nodes[0]!.address}/v1/runs`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ image: "coin", user: "mallory", command: ["/bin/sleep", "60"] }),
      });
      assert.equal(response.status, 201, await response.clone().text());
      const { runId } = (await response.json()) as { runId: string };
      // Node b's miner is node b's: node a, whose run it names, does not act on it; node b has no such run.
      await publish(anomaly("node-b", `run:${runId}`, "miner"));
      // (The launcher's own results for the run, its limits, are not remediation.)
      const remediation = () => results.filter((r) => r.workload === `run:${runId}` && r.action === "kill");
      const refused = await eventually(() => remediation()[0], 30_000, "node b's answer");
      assert.deepEqual([refused.node, refused.ok], ["node-b", false]);
      assert.match(refused.reason, /is not running on this node/);
      // Node a's miner: node a kills its run.
      await publish(anomaly("node-a", `run:${runId}`, "miner"));
      const killed = await eventually(() => remediation().find((r) => r.ok), 30_000, "node a's kill");
      assert.equal(killed.node, "node-a");
      const state = await eventually(async () => {
        const status = (await (await fetch(`${nodes[0]!.address}/v1/runs/${runId}`)).json()) as { state: string; exit: { signal: string | null } | null };
        return status.state === "exited" ? status : undefined;
      }, 15_000, "the run to end");
      assert.equal(state.exit?.signal, "SIGKILL");
      assert.equal(remediation().length, 2, JSON.stringify(results));
    } finally {
      await reader.stop();
      for (const node of nodes) await node.stop();
      await transport.close();
      for (const mount of new Set(Object.values(layout!.roots))) {
        if (mount && existsSync(`${mount}/${root}`)) spawnSync("find", [`${mount}/${root}`, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]);
      }
      s.cleanup();
    }
  });

  for (const client of CLIENTS) it(`poison records go to the dead letter with the reason, and the stage keeps going (${client})`, async () => {
    const s = setup(client === "kafkajs" ? "poison" : "poisonrd", "", `  client: ${client}`);
    try {
      run(["topics", "create", "--config", s.config]);
      const aggregate = stage("aggregate", s.config);
      const producer = kafka.producer();
      await producer.connect();
      const schemaId = ((await (await fetch(`${REGISTRY}/subjects/${encodeURIComponent(`${s.namespace}augur.samples-value`)}/versions/latest`)).json()) as { id: number }).id;
      const sampleType = avro.Type.forSchema(JSON.parse(spawnSync("cat", [`${REPO}schemas/Sample.avsc`], { encoding: "utf8" }).stdout));
      const frame = (id: number, body: Buffer) => Buffer.concat([Buffer.from([0, (id >>> 24) & 255, (id >>> 16) & 255, (id >>> 8) & 255, id & 255]), body]);
      const base = { ts: 1_700_000_000_000, workload: "w1", image: "img", user: "alice", host: "h", source: "test" };
      const good = (ts: number) => frame(schemaId, sampleType.toBuffer(sampleType.clone({ ...base, ts, cpuCores: 0.5, memoryWorkingSetBytes: 1e8 })));
      await producer.send({
        topic: `${s.namespace}augur.samples`,
        messages: [
          { key: "img|alice", value: frame(schemaId, Buffer.from([0xff, 0xff, 0xff])) },
          { key: "img|alice", value: Buffer.from("{\"json\": true}") },
          { key: "img|alice", value: frame(999_999, Buffer.from([2, 4, 6])) },
          { key: "img|alice", value: frame(schemaId, sampleType.toBuffer(sampleType.clone({ ...base, cpuCores: Number.NaN }))) },
          { key: "img|alice", value: good(base.ts + 1_000) },
          { key: "img|alice", value: good(base.ts + 400_000) }, // closes the first window
        ],
      });
      await producer.disconnect();
      const consumer = kafka.consumer({ groupId: `${s.namespace}reader` });
      await consumer.connect();
      await consumer.subscribe({ topics: [`${s.namespace}augur.dead-letter`, `${s.namespace}augur.windows`], fromBeginning: true });
      const dead: Array<{ headers: Record<string, string>; value: Buffer }> = [];
      let windows = 0;
      await consumer.run({
        eachMessage: async ({ topic, message }) => {
          if (topic.endsWith("augur.windows")) windows++;
          else dead.push({ value: message.value!, headers: Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)])) });
        },
      });
      await eventually(() => (dead.length >= 4 && windows >= 1 ? true : undefined), 60_000, "dead letters and the window after them");
      await consumer.disconnect();
      const reasons = dead.map((d) => `${d.headers[DEAD_LETTER_HEADERS.code]}: ${d.headers[DEAD_LETTER_HEADERS.message]}`);
      assert.match(reasons[0]!, /^decode: bytes do not decode with schema id/);
      assert.match(reasons[1]!, /^decode: unknown magic byte 123/);
      assert.match(reasons[2]!, /^decode: unknown schema id 999999/);
      assert.match(reasons[3]!, /^invalid: .*cpuCores/);
      assert.equal(dead[1]!.value.toString(), "{\"json\": true}", "the raw bytes are kept");
      assert.ok(dead.every((d) => d.headers[DEAD_LETTER_HEADERS.topic] === "augur.samples"));
      assert.equal(windows, 1);
      assert.equal(aggregate.exitCode, null, "the stage is still running");
      await stopChild(aggregate);
    } finally {
      s.cleanup();
    }
  });
});
