import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import avro from "avsc";
import { validateSample } from "../../src/core/sample.js";
import { DecodeError, TransientError, ValidationError } from "../../src/core/errors.js";
import { AvroSerde, encodeDeadLetter, frame, SCHEMA_DIR, unframe, type SchemaRegistry } from "../../src/transport/kafka/avro-serde.js";
import { MemorySchemaRegistry } from "../../src/transport/kafka/registry.js";
import { detectConfig } from "../../src/detect/monitor.js";
import { detectTrace } from "../../src/detect/offline.js";
import { topicSpecs } from "../../src/transport/kafka/topics.js";
import { kafkaTransportConfig } from "../../src/config/pipeline.js";
import { TOPICS } from "../../src/transport/topic.js";
import { T0, sample, tempDir } from "../helpers.js";

/** Backward compatibility as the registry checks it: the new schema reads data of the latest one. */
const canRead = (reader: string, writer: string): boolean => {
  try {
    avro.Type.forSchema(JSON.parse(reader)).createResolver(avro.Type.forSchema(JSON.parse(writer)));
    return true;
  } catch {
    return false;
  }
};

const sampleSchema = () => JSON.parse(readFileSync(`${SCHEMA_DIR}Sample.avsc`, "utf8")) as { fields: Array<{ name: string }> } & Record<string, unknown>;

/** A schema directory holding one Sample schema (for a reader or writer of another version). */
function schemaDir(dir: string, name: string, schema: unknown): string {
  const path = `${dir}/${name}/`;
  mkdirSync(path, { recursive: true });
  writeFileSync(`${path}Sample.avsc`, JSON.stringify(schema));
  return path;
}

describe("Avro in the Confluent wire format", () => {
  it("frames values as magic byte 0, a 4-byte big-endian schema id, then the Avro body", async () => {
    const serde = new AvroSerde(new MemorySchemaRegistry(canRead));
    const value = validateSample(sample({ ts: T0, cpuCores: 0.5 }));
    const bytes = await serde.encode(TOPICS.samples, value);
    assert.equal(bytes[0], 0);
    const { schemaId, body } = unframe(bytes);
    assert.equal(schemaId, await serde.schemaId(TOPICS.samples));
    assert.ok(body.length > 0);
    assert.deepEqual({ ...(await serde.decode(TOPICS.samples, bytes) as object) }, value);
    assert.deepEqual(frame(258, Buffer.from([7])), Buffer.from([0, 0, 0, 1, 2, 7]));
  });

  it("carries anomaly events and actuation results as the detect stage and the launcher produce them", async () => {
    const serde = new AvroSerde(new MemorySchemaRegistry(canRead));
    const events = detectTrace(
      { name: "t", rows: 0, rejected: [], workloads: [{ workload: "w", image: "i", user: "u", ts: Float64Array.from({ length: 700 }, (_, i) => T0 + i * 300_000), values: { gpu_util: Float64Array.from({ length: 700 }, (_, i) => (i > 650 ? 1 : 0)) }, limits: {} }] },
      detectConfig.parse({}),
    );
    assert.equal(events[0]!.type, "never_seen");
    assert.deepEqual({ ...(await serde.decode(TOPICS.anomalies, await serde.encode(TOPICS.anomalies, events[0]!)) as object) }, events[0]);
    const result = { node: "n", workload: "run:1", connector: "cgroup", action: "freeze", ok: true, dryRun: false, reason: "r", details: "{}", ts: T0 };
    assert.deepEqual({ ...(await serde.decode(TOPICS.actuations, await serde.encode(TOPICS.actuations, result)) as object) }, result);
  });

  it("fills optional fields the producer left out with their defaults, and refuses values that do not fit", async () => {
    const serde = new AvroSerde(new MemorySchemaRegistry(canRead));
    const decoded = (await serde.decode(TOPICS.samples, await serde.encode(TOPICS.samples, { ts: T0, workload: "w", image: "i", user: "u" }))) as Record<string, unknown>;
    assert.equal(decoded.host, "unknown");
    assert.equal(decoded.cpuCores, null);
    await assert.rejects(serde.encode(TOPICS.samples, { ts: "yesterday", workload: "w", image: "i", user: "u" }), (error: unknown) => error instanceof ValidationError && /ts/.test(error.message));
    await assert.rejects(serde.encode("augur.unknown", {}), /no Avro schema/);
  });

  it("turns hostile bytes into DecodeErrors that say what was wrong", async () => {
    const serde = new AvroSerde(new MemorySchemaRegistry(canRead));
    const id = await serde.schemaId(TOPICS.samples);
    const cases: Array<[Buffer | null, RegExp]> = [
      [null, /tombstone/],
      [Buffer.from([0, 0, 1]), /shorter than the 5-byte/],
      [Buffer.from("{\"json\":1}"), /unknown magic byte 123/],
      [frame(id, Buffer.from([0xff, 0xff, 0xff, 0xff])), /do not decode with schema id/],
      [frame(id, Buffer.concat([(await serde.encode(TOPICS.samples, validateSample(sample({ ts: T0 })))).subarray(5), Buffer.from([1, 2])])), /trailing bytes/],
      [frame(4242, Buffer.from([2])), /unknown schema id 4242/],
    ];
    for (const [bytes, reason] of cases) {
      await assert.rejects(serde.decode(TOPICS.samples, bytes), (error: unknown) => error instanceof DecodeError && reason.test(error.message), String(reason));
    }
  });

  it("lets an old reader read new records and a new reader old ones (schema resolution by writer id)", async () => {
    const { dir, cleanup } = tempDir();
    try {
      const registry = new MemorySchemaRegistry(canRead);
      const current = sampleSchema();
      const older = { ...current, fields: current.fields.filter((field) => field.name !== "gpuMemoryBytes" && field.name !== "memoryLimitBytes") };
      const newer = { ...current, fields: [...current.fields, { name: "tenant", type: "string", default: "none", doc: "Added later." }] };
      const oldSerde = new AvroSerde(registry, "", { [TOPICS.samples]: "Sample" }, schemaDir(dir, "old", older));
      const newSerde = new AvroSerde(registry, "", { [TOPICS.samples]: "Sample" }, schemaDir(dir, "new", newer));
      await oldSerde.registerAll();
      await newSerde.registerAll(); // backward compatible: accepted

      const fromNew = await newSerde.encode(TOPICS.samples, { ...validateSample(sample({ ts: T0, gpuMemoryBytes: 5 })), tenant: "blue" });
      const readByOld = (await oldSerde.decode(TOPICS.samples, fromNew)) as Record<string, unknown>;
      assert.equal(readByOld.ts, T0);
      assert.ok(!("tenant" in readByOld) && !("gpuMemoryBytes" in readByOld), "the old reader drops fields it does not know");

      const fromOld = await oldSerde.encode(TOPICS.samples, { ts: T0, workload: "w", image: "i", user: "u" });
      const readByNew = (await newSerde.decode(TOPICS.samples, fromOld)) as Record<string, unknown>;
      assert.equal(readByNew.tenant, "none", "the new reader fills the new field's default");
      assert.equal(readByNew.gpuMemoryBytes, null);

      // A change that would break old data is refused by the registry.
      const breaking = { ...current, fields: [...current.fields, { name: "mandatory", type: "string", doc: "No default." }] };
      const bad = new AvroSerde(registry, "", { [TOPICS.samples]: "Sample" }, schemaDir(dir, "bad", breaking));
      await assert.rejects(bad.registerAll(), /not backward compatible/);
    } finally {
      cleanup();
    }
  });

  it("treats an unreachable registry as transient (retry), not as a bad record", async () => {
    const flaky: SchemaRegistry = {
      register: async () => 1,
      setCompatibility: async () => undefined,
      schemaById: async () => {
        throw new Error("ECONNREFUSED");
      },
    };
    const serde = new AvroSerde(flaky);
    await assert.rejects(serde.decode(TOPICS.samples, frame(7, Buffer.from([2]))), (error: unknown) => error instanceof TransientError);
  });

  it("keeps a dead letter's raw bytes, else writes its JSON with non-finite numbers spelled out", () => {
    const raw = Buffer.from([0, 1, 2]);
    assert.equal(encodeDeadLetter({ originalTopic: "t", stage: "s", errorCode: "decode", error: "x", payload: raw }), raw);
    const text = encodeDeadLetter({ originalTopic: "t", stage: "s", errorCode: "invalid", error: "x", payload: { cpu: Number.NaN } }).toString();
    assert.deepEqual(JSON.parse(text).payload, { cpu: "NaN" });
  });

  it("derives topic specs from the config: the compacted profiles topic, retention elsewhere, per-topic overrides, the namespace", () => {
    const config = kafkaTransportConfig.parse({ kind: "kafka", namespace: "dev.", topics: { partitions: 3, overrides: { "augur.samples": { partitions: 12 } } } });
    const specs = topicSpecs(config);
    assert.equal(specs.length, Object.keys(TOPICS).length);
    const byName = new Map(specs.map((spec) => [spec.name, spec]));
    assert.equal(byName.get("dev.augur.profiles")!.config["cleanup.policy"], "compact");
    assert.equal(byName.get("dev.augur.windows")!.config["retention.ms"], String(168 * 3_600_000));
    assert.equal(byName.get("dev.augur.samples")!.partitions, 12);
    assert.equal(byName.get("dev.augur.windows")!.partitions, 3);
    for (const hostile of [{ namespace: "../x" }, { namespace: "a b" }, { brokers: ["localhost"] }, { brokers: [] }, { schemaRegistry: "file:///etc/passwd" }, { topics: { overrides: { "other.topic": {} } } }, { client: "librdkafka" }]) {
      assert.equal(kafkaTransportConfig.safeParse({ kind: "kafka", ...hostile }).success, false, JSON.stringify(hostile));
    }
  });
});
