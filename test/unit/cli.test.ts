import assert from "node:assert/strict";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { augur } from "../cli.js";
import { tempDir } from "../helpers.js";

describe("augur CLI", () => {
  it("prints help for every command and exits 0", () => {
    for (const args of [["--help"], ["run", "--help"], ["allocate", "--help"], ["profiles", "--help"], ["exec", "--help"]]) {
      const result = augur(args);
      assert.equal(result.status, 0, args.join(" "));
      assert.match(result.stdout, /Usage: augur/);
    }
  });

  it("exits 2 with a clear message on unknown commands, unknown flags and bad values", () => {
    for (const [args, pattern] of [
      [["frobnicate"], /unknown command/],
      [["allocate", "--image", "a", "--user", "b", "--bogus"], /unknown option/],
      [["allocate", "--image", "a"], /required option '--user/],
      [["allocate", "--image", "a", "--user", "b", "--cpu", "lots"], /--cpu must be a positive number/],
      [["allocate", "--image", "a", "--user", "b", "--gpus", "1.5"], /--gpus must be a whole number/],
      [["allocate", "--image", "a\u0001", "--user", "b"], /control character/],
      [["exec", "--image", "a", "--user", "b"], /missing required argument 'command'/],
      [["exec", "--image", "a", "--user", "b", "--request", "{cpu:1}", "--", "/bin/true"], /--request is not JSON/],
      [["exec", "--image", "a", "--user", "b", "--request", "[0.5]", "--", "/bin/true"], /--request must be a JSON object/],
      [["exec", "--image", "a", "--user", "b", "--events", "xml", "--", "/bin/true"], /--events must be text or json/],
    ] as const) {
      const result = augur([...args]);
      assert.equal(result.status, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, pattern);
    }
  });

  it("exits 2 on hostile replay, stage and topics flags before touching any broker", () => {
    const cases: Array<[string[], RegExp]> = [
      [["replay", "--trace", "x.csv", "--format", "../../etc/passwd"], /--format: one of/],
      [["replay", "--trace", "x.csv", "--bus", "carrier-pigeon"], /--bus: kafka or embedded/],
      [["replay", "--trace", "x.csv", "--speedup", "NaN"], /--speedup: a positive number/],
      [["replay", "--trace", "x.csv", "--speedup", "-5"], /--speedup: a positive number/],
      [["replay", "--trace", "x.csv", "--batch", "1e9"], /--batch: an integer/],
      [["stage", "../../bin/sh"], /unknown stage/],
      [["stage", "aggregate", "--metrics-listen", "127.0.0.1:80; rm -rf /"], /--metrics-listen: expected host:port/],
      [["stage", "aggregate", "--config", "pipelines/local.yaml"], /transport\.kind/],
      [["topics", "create", "--config", "pipelines/local.yaml"], /transport\.kind/],
      [["detect", "--trace", "x.csv", "--out", "/tmp/e.jsonl", "--format", "../../etc"], /--format: one of/],
      [["detect", "--trace", "x.csv", "--out", "/tmp/e.jsonl", "--warmup-steps", "0"], /--warmup-steps: an integer/],
      [["detect", "--trace", "/nonexistent.csv", "--out", "/tmp/e.jsonl"], /does not exist/],
      [["inject", "--trace", "x.csv", "--out", "o.csv", "--labels", "l.csv", "--seed", "-1"], /--seed: an integer/],
      [["inject", "--trace", "x.csv", "--out", "o.csv", "--labels", "l.csv", "--rate", "2"], /--rate: a number in 0\.\.1/],
      [["inject", "--trace", "x.csv", "--out", "o.csv", "--labels", "l.csv", "--types", "miner,rootkit"], /--types: unknown type 'rootkit'/],
    ];
    for (const [args, reason] of cases) {
      const result = augur(args);
      assert.equal(result.status, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, reason, args.join(" "));
    }
  });

  it("exits 2 naming the file and field for a bad config", () => {
    const { dir, cleanup } = tempDir();
    try {
      const config = join(dir, "bad.yaml");
      writeFileSync(config, "aggregate:\n  window: { sizeSeconds: -5 }\n");
      const result = augur(["profiles", "--config", config]);
      assert.equal(result.status, 2);
      assert.match(result.stderr, /bad\.yaml: aggregate\.window\.sizeSeconds/);
      assert.equal(augur(["run", "--config", join(dir, "missing.yaml")]).status, 2);
    } finally {
      cleanup();
    }
  });

  it("allocates the default for a never-seen pair and says so, in text and JSON", () => {
    const { dir, cleanup } = tempDir();
    try {
      const text = augur(["allocate", "--image", "../../etc/passwd", "--user", "$(id)", "--data-dir", dir]);
      assert.equal(text.status, 0, text.stderr);
      assert.match(text.stdout, /allocated: ok \(level default\)/);
      assert.match(text.stdout, /profiling starts/);
      const json = augur(["allocate", "--image", "img", "--user", "u", "--json", "--data-dir", dir]);
      const decision = JSON.parse(json.stdout);
      assert.equal(decision.level, "default");
      assert.equal(decision.ok, true);
      // Hostile ids stayed data: the directory holds the database and nothing else.
      assert.deepEqual(readdirSync(dir).filter((f) => !f.startsWith("augur.db")), []);
      const profiles = augur(["profiles", "--data-dir", dir]);
      assert.equal(profiles.status, 0);
      assert.match(profiles.stdout, /no profiles/);
    } finally {
      cleanup();
    }
  });

  it("exits 1 when the node cannot fit the request", () => {
    const { dir, cleanup } = tempDir();
    try {
      const result = augur(["allocate", "--image", "i", "--user", "u", "--cpu", "100000", "--memory", "1", "--json", "--data-dir", dir]);
      assert.equal(result.status, 1);
      assert.equal(JSON.parse(result.stdout).reason, "capacity");
    } finally {
      cleanup();
    }
  });
});
