import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import avro from "avsc";
import { WindowAggregator } from "../../src/aggregate/windows.js";
import { validateSample } from "../../src/core/sample.js";
import { createModelFactory } from "../../src/forecast/registry.js";
import { T0, sample } from "../helpers.js";

const dir = fileURLToPath(new URL("../../../schemas/", import.meta.url));
const schema = (name: string) => JSON.parse(readFileSync(`${dir}${name}.avsc`, "utf8"));
const type = (name: string) => avro.Type.forSchema(schema(name), { logicalTypes: {} });

/** Avro maps and unions need nulls where TypeScript leaves properties out. */
function roundTrip(name: string, value: unknown) {
  const avroType = type(name);
  const errors: string[] = [];
  const valid = avroType.isValid(value, { errorHook: (path) => errors.push(path.join(".")) });
  assert.ok(valid, `${name} rejects fields: ${errors.join(", ")}`);
  assert.deepEqual(JSON.parse(JSON.stringify(avroType.fromBuffer(avroType.toBuffer(value)))), value);
}

describe("Avro schemas", () => {
  it("are all valid, documented, and give every optional field a default", () => {
    const files = readdirSync(dir).filter((file) => file.endsWith(".avsc"));
    assert.deepEqual(files.sort(), ["ActuationResult", "AllocationDecision", "AllocationRequest", "Anomaly", "Profile", "Sample", "WindowAggregate"].map((n) => `${n}.avsc`));
    for (const file of files) {
      const parsed = JSON.parse(readFileSync(dir + file, "utf8"));
      avro.Type.forSchema(parsed);
      assert.ok(parsed.doc, `${file} has no doc`);
      const visit = (record: { fields?: Array<{ name: string; doc?: string; type: unknown; default?: unknown }> }, where: string) => {
        for (const field of record.fields ?? []) {
          assert.ok(field.doc, `${where}.${field.name} has no doc`);
          if (Array.isArray(field.type) && field.type.includes("null")) assert.ok("default" in field, `${where}.${field.name} is optional without a default`);
          const nested = Array.isArray(field.type) ? field.type : [field.type];
          for (const t of nested) {
            if (t && typeof t === "object" && (t as { type: string }).type === "record") visit(t as never, `${where}.${field.name}`);
            if (t && typeof t === "object" && (t as { values?: { type: string } }).values?.type === "record") visit((t as { values: never }).values, `${where}.${field.name}`);
          }
        }
      };
      visit(parsed, file);
    }
  });

  it("carry what the stages produce: Sample, WindowAggregate, Profile", () => {
    const s = validateSample(sample({ ts: T0, cpuCores: 0.5, memoryWorkingSetBytes: 1e8, oomKills: 1 }));
    roundTrip("Sample", s);
    const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 0, sketchAccuracy: 0.01 });
    aggregator.add(s);
    const window = aggregator.flush()[0]!;
    roundTrip("WindowAggregate", window);
    const model = createModelFactory("decaying-percentile", {}).create();
    model.observe(window);
    roundTrip("Profile", { image: "i", user: "u", level: "exact", version: T0, firstSeen: T0, windows: 1, resources: model.predict(), oomKills: 0 });
  });

  it("let a reader of today's Sample read a record written without the optional fields (defaults)", () => {
    const minimal: avro.Schema = { type: "record" as const, name: "Sample", namespace: "io.augur", fields: schema("Sample").fields.filter((f: { default?: unknown }) => !("default" in f)) };
    const writer = avro.Type.forSchema(minimal);
    const reader = type("Sample");
    const resolver = reader.createResolver(writer);
    const decoded = reader.fromBuffer(writer.toBuffer({ ts: T0, workload: "w", image: "i", user: "u" }), resolver) as Record<string, unknown>;
    assert.equal(decoded.cpuCores, null);
    assert.equal(decoded.oomKills, 0);
    assert.equal(decoded.host, "unknown");
  });
});
