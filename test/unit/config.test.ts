import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { ConfigError } from "../../src/core/errors.js";
import { loadPipeline } from "../../src/config/pipeline.js";
import { tempDir } from "../helpers.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));

function withConfig(body: string, connector?: string): { path: string; cleanup: () => void } {
  const { dir, cleanup } = tempDir();
  mkdirSync(join(dir, "connectors"));
  if (connector !== undefined) writeFileSync(join(dir, "connectors", "host.yaml"), connector);
  const path = join(dir, "pipeline.yaml");
  writeFileSync(path, body);
  return { path, cleanup };
}

function expectConfigError(body: string, pattern: RegExp, connector?: string) {
  const { path, cleanup } = withConfig(body, connector);
  try {
    assert.throws(() => loadPipeline(path), (error: unknown) => error instanceof ConfigError && pattern.test(error.message), pattern.source);
  } finally {
    cleanup();
  }
}

describe("pipeline config", () => {
  it("loads the shipped local.yaml and its connector", () => {
    const loaded = loadPipeline(join(repo, "pipelines/local.yaml"));
    assert.equal(loaded.config.transport.kind, "embedded");
    assert.equal(loaded.collectors.length, 1);
    assert.ok(loaded.collectors[0]!.process.rules.length >= 1);
    assert.ok(loaded.dataDir.endsWith(".augur/data"));
  });

  it("loads the shipped kafka.yaml, and refuses hostile transport and history settings with the path", () => {
    const loaded = loadPipeline(join(repo, "pipelines/kafka.yaml"));
    assert.equal(loaded.config.transport.kind, "kafka");
    assert.equal(loaded.config.history?.kind, "influxdb");
    expectConfigError("transport: { kind: kafka, brokers: ['127.0.0.1:9092; rm -rf /'] }", /transport\.brokers\.0/);
    expectConfigError("transport: { kind: kafka, namespace: '../../etc' }", /transport\.namespace/);
    expectConfigError("transport: { kind: kafka, schemaRegistry: 'javascript:alert(1)' }", /transport\.schemaRegistry/);
    expectConfigError("transport: { kind: kafka, logLevel: 'verbose; id' }", /transport\.logLevel/);
    expectConfigError("transport: { kind: carrier-pigeon }", /transport/);
    expectConfigError("history: { kind: influxdb, measurement: 'a b,c=d' }", /history\.measurement/);
    expectConfigError("history: { kind: influxdb, url: 'file:///etc/passwd' }", /history\.url/);
    expectConfigError("history: { kind: influxdb, query: 'influxql; drop' }", /history\.query/);
  });

  it("fills defaults for an empty file", () => {
    const { path, cleanup } = withConfig("");
    try {
      const loaded = loadPipeline(path);
      assert.equal(loaded.config.api.listen, "127.0.0.1:7070");
      assert.equal(loaded.config.aggregate.window.sizeSeconds, 60);
    } finally {
      cleanup();
    }
  });

  it("names unknown fields with their path", () => expectConfigError("aggregate:\n  windw: {}\n", /aggregate: Unrecognized key.*"windw"/));
  it("says what it expected and what it got", () => expectConfigError("aggregate:\n  allowedLatenessSeconds: lots\n", /aggregate\.allowedLatenessSeconds: Expected number, received string \(got "lots"\)/));
  it("shows a number too large for a double as what YAML made of it", () => expectConfigError("aggregate:\n  window:\n    sizeSeconds: 1e400\n", /aggregate\.window\.sizeSeconds: Number must be less than or equal to \d+ \(got Infinity\)/));
  it("rejects malformed YAML with a position", () => expectConfigError("api: [unclosed\n", /pipeline\.yaml: .*(line|at)/i));
  it("rejects duplicate keys", () => expectConfigError("name: a\nname: b\n", /[Dd]uplicate|unique/));
  it("rejects a top level that is not a mapping", () => expectConfigError("- a\n- b\n", /mapping/));
  it("rejects a bad listen address", () => expectConfigError("api:\n  listen: 'localhost:99999'\n", /api\.listen/));
  it("rejects sliding settings on a tumbling window", () => expectConfigError("aggregate:\n  window: { kind: tumbling, sizeSeconds: 10, slideSeconds: 5 }\n", /slideSeconds/));
  it("rejects a node name with a control character", () => expectConfigError('node: "a\\u0000b"\n', /node/));
  it("rejects NaN-like and negative numbers", () => expectConfigError("allocate:\n  defaults:\n    cpu: { request: .nan, limit: -1 }\n", /allocate\.defaults\.cpu/));
  it("rejects a missing connector file", () => expectConfigError("collect:\n  connectors: [connectors/none.yaml]\n", /cannot read config .*none\.yaml: ENOENT/));
  it("rejects a connector with an invalid regular expression", () =>
    expectConfigError("collect:\n  connectors: [connectors/host.yaml]\n", /cgroup\.rules\.0\.pattern: invalid regular expression/, "kind: host\ncgroup:\n  rules:\n    - pattern: '(['\n"));
  it("rejects a connector of an unknown kind", () => expectConfigError("collect:\n  connectors: [connectors/host.yaml]\n", /kind/, "kind: satellite\n"));
  it("rejects a YAML alias bomb", () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 12; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`);
    expectConfigError(bomb.join("\n") + "\n", /alias/i);
  });
  it("loads the shipped actuator connectors", () => {
    const loaded = loadPipeline(join(repo, "pipelines/local.yaml"));
    assert.deepEqual(loaded.actuators.map((a) => a.kind), ["cgroup", "tc", "gpu", "process"]);
    assert.equal(loaded.config.actuate.runs.api, false);
    assert.equal(loaded.config.actuate.runs.staleAfterSeconds, 600, "stale run cgroups are removed after ten minutes by default");
    assert.equal(loaded.config.actuate.runs.eventsKept, 500);
  });
  it("rejects actuator connectors that would leave their root or run another binary", () => {
    const cases: Array<[string, RegExp]> = [
      ["kind: cgroup\nroot: ../../etc\n", /root/],
      ["kind: cgroup\nroot: /\n", /root/],
      ["kind: tc\ntc: /bin/sh\n", /tc: an absolute path to the 'tc' binary/],
      ["kind: tc\nip: ip\n", /ip: an absolute path/],
      ["kind: gpu\nnvidiaSmi: /tmp/nvidia-smi; reboot\n", /nvidiaSmi/],
      ["kind: shell\n", /kind/],
      ["kind: process\ngraceSeconds: -1\n", /graceSeconds/],
    ];
    for (const [connector, pattern] of cases) expectConfigError("actuate:\n  connectors: [connectors/host.yaml]\n", pattern, connector);
    expectConfigError("actuate:\n  connectors: [connectors/host.yaml, connectors/host.yaml]\n", /more than one cgroup connector/, "kind: cgroup\n");
    expectConfigError("actuate:\n  runs: { api: true, commands: [sleep] }\n", /actuate\.runs\.commands\.0: an absolute path/);
    expectConfigError("actuate:\n  safety: { maxChangesPerHour: -3 }\n", /actuate\.safety\.maxChangesPerHour/);
    for (const value of ["-1", "\"600\"", "1e12", ".nan"]) expectConfigError(`actuate:\n  runs: { staleAfterSeconds: ${value} }\n`, /actuate\.runs\.staleAfterSeconds/);
    for (const value of ["0", "1", "4", "-0.5"]) expectConfigError(`actuate:\n  resize: { memoryHeadroom: ${value} }\n`, /actuate\.resize\.memoryHeadroom/);
    for (const value of ["2", "12.5", "1e9", "\"50\""]) expectConfigError(`actuate:\n  runs: { eventsKept: ${value} }\n`, /actuate\.runs\.eventsKept/);
  });
  it("rejects a config with a NUL byte", () => expectConfigError("name: a\u0000\n", /NUL/));
});

describe("model options", () => {
  it("are checked against the chosen model's schema at load time", () => {
    expectConfigError("forecast:\n  model: augur-ensemble\n  options: { memoryMissRate: 2 }\n", /forecast\.options: memoryMissRate/);
    expectConfigError("forecast:\n  model: augur-ensemble\n  options: { learnGlobalModel: \"yes\" }\n", /forecast\.options: learnGlobalModel: Expected boolean/);
    expectConfigError("forecast:\n  model: decaying-percentile\n  options: { halfLife: 3 }\n", /forecast\.options: .*Unrecognized key.*halfLife/);
    expectConfigError("forecast:\n  model: oracle\n", /forecast\.model/);
  });
});
