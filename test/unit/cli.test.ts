import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { getHeapStatistics } from "node:v8";
import { describeRunEvent } from "../../src/cli/exec.js";
import { HEAP_ENV, largerHeapOption } from "../../src/cli/heap.js";
import { augur, CLI } from "../cli.js";
import { isRunning, tempDir } from "../helpers.js";

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

describe("augur exec's lines", () => {
  it("says what a resize not made would have set and why", () => {
    const line = describeRunEvent({ type: "refused", ts: 1, limits: { cpuLimitCores: null, memoryLimitBytes: 1250 }, reasons: ["working set 980 bytes within 25% of the limit"], why: "refused: more than 1 limit changes in the last hour" });
    assert.equal(line, 'resize to {"cpuLimitCores":null,"memoryLimitBytes":1250} not made: refused: more than 1 limit changes in the last hour (working set 980 bytes within 25% of the limit)');
  });

  it("says what remediation did to a run, and why", () => {
    const throttled = describeRunEvent({ type: "remediated", ts: 1, action: "throttle", reason: "cpu_runaway (critical) on run:r1: m", limits: { cpuLimitCores: 0.1, memoryLimitBytes: null } });
    assert.equal(throttled, "throttle by remediation (CPU held at 0.1 cores): cpu_runaway (critical) on run:r1: m");
    assert.equal(describeRunEvent({ type: "remediated", ts: 1, action: "freeze", reason: "memory_leak (warning) on run:r1: m" }), "freeze by remediation: memory_leak (warning) on run:r1: m");
  });
});

describe("what a command loads", () => {
  // Libraries that take a large share of a start (tfjs alone about half a second) and that most commands never use.
  const HEAVY = ["@tensorflow/tfjs", "@tensorflow/tfjs-core", "kafkajs", "node-rdkafka", "@confluentinc/schemaregistry", "rxjs", "fastify"];

  /** Runs augur with a preload that records, per process, the packages it loaded and whether it is a trace command's re-run. */
  function loaded(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Array<{ rerun: boolean; packages: string[] }> {
    const record = join(dir, "loaded.jsonl");
    const preload = join(dir, "record-loaded.cjs");
    writeFileSync(
      preload,
      `process.on("exit", () => {
        const packages = new Set(Object.keys(require.cache).map((file) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(file)?.[1]).filter(Boolean));
        require("node:fs").appendFileSync(${JSON.stringify(record)}, JSON.stringify({ rerun: process.env[${JSON.stringify(HEAP_ENV)}] !== undefined, packages: [...packages] }) + "\\n");
      });\n`,
    );
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== HEAP_ENV && name !== "NODE_OPTIONS"));
    const result = spawnSync(process.execPath, ["--require", preload, CLI, ...args], { encoding: "utf8", env: { ...inherited, ...env }, timeout: 60_000 });
    assert.equal(result.status, 0, `${args.join(" ")}: ${result.stderr}`);
    return readFileSync(record, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { rerun: boolean; packages: string[] });
  }

  it("help, an allocation and a backtest's waiting parent leave the libraries they do not use unloaded", () => {
    const { dir, cleanup } = tempDir();
    try {
      const [help] = loaded(dir, ["--help"]);
      assert.deepEqual(help!.packages.filter((name) => HEAVY.includes(name)), [], "augur --help");
      rmSync(join(dir, "loaded.jsonl"));
      const [allocation] = loaded(dir, ["allocate", "--image", "img", "--user", "u", "--data-dir", join(dir, "data")]);
      for (const name of ["@tensorflow/tfjs", "kafkajs", "@confluentinc/schemaregistry"]) assert.ok(!allocation!.packages.includes(name), `augur allocate loads ${name}`);
      rmSync(join(dir, "loaded.jsonl"));
      const trace = join(dir, "t.csv");
      writeFileSync(trace, "ts,workload,image,user,cpu,mem\n" + Array.from({ length: 30 }, (_, k) => `${1_767_571_200_000 + k * 60_000},w,img,u,0.5,100000000`).join("\n") + "\n");
      const processes = loaded(dir, ["backtest", "--trace", trace, "--out", join(dir, "r.json")]);
      const run = processes.find((p) => p.rerun) ?? processes[0]!;
      assert.ok(run.packages.includes("@tensorflow/tfjs"), "the backtest itself loads tfjs (the augur policy trains)");
      assert.ok(!run.packages.includes("kafkajs"), "a backtest loads no Kafka client");
      const waiting = processes.find((p) => !p.rerun);
      // Where the heap is raised, the process that only waits for the re-run loads no package at all.
      if (processes.length === 2) assert.deepEqual(waiting!.packages, [], "the process that waits for the re-run");
    } finally {
      cleanup();
    }
  });
});

describe("a trace command's heap", () => {
  const GIB = 2 ** 30;
  const base = { args: ["backtest", "--trace", "t.csv"], execArgv: [], env: {}, totalBytes: 24 * GIB, heapLimitBytes: 4.3e9 };

  it("is raised to half the machine's memory unless the user chose one, the machine is small or the command holds no trace", () => {
    assert.equal(largerHeapOption(base), "--max-old-space-size=12288");
    assert.equal(largerHeapOption({ ...base, args: ["detect", "--trace", "t.csv"] }), "--max-old-space-size=12288");
    assert.equal(largerHeapOption({ ...base, args: ["run"] }), null, "the live pipeline keeps node's heap");
    assert.equal(largerHeapOption({ ...base, args: [] }), null);
    assert.equal(largerHeapOption({ ...base, execArgv: ["--max-old-space-size=2048"] }), null);
    assert.equal(largerHeapOption({ ...base, env: { NODE_OPTIONS: "--enable-source-maps --max-old-space-size=3000" } }), null);
    assert.equal(largerHeapOption({ ...base, env: { [HEAP_ENV]: "1" } }), null, "the re-run process does not re-run again");
    assert.equal(largerHeapOption({ ...base, totalBytes: 8 * GIB }), null, "half of 8 GiB is no more than node's own limit");
  });

  it("re-runs the command with it for real, and a signal to augur stops the re-run too", { skip: largerHeapOption({ ...base, totalBytes: totalmem(), heapLimitBytes: getHeapStatistics().heap_size_limit }) === null && "this machine's memory would not raise the heap" }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const trace = join(dir, "t.csv");
      const rows = ["ts,workload,image,user,cpu,mem"];
      for (let w = 0; w < 400; w++) for (let k = 0; k < 200; k++) rows.push(`${1_767_571_200_000 + k * 60_000},w${w},img${w % 9},u${w % 13},${(w % 7) / 3 + 0.1},${1e8 * (1 + (w % 5))}`);
      writeFileSync(trace, rows.join("\n") + "\n");
      const parent = spawn(process.execPath, [CLI, "backtest", "--trace", trace, "--policies", "augur", "--out", join(dir, "r.json")], { stdio: "ignore", env: { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== HEAP_ENV)), NODE_OPTIONS: "" } });
      const exited = once(parent, "exit");
      // The re-run: a child of augur's process whose command line carries the heap option.
      let child: number | null = null;
      for (let tries = 0; tries < 200 && child === null; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
          try {
            const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
            const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
            if (ppid === parent.pid && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--max-old-space-size=")) child = Number(pid);
          } catch {
            // gone already
          }
        }
      }
      assert.ok(child !== null, "augur backtest re-ran itself with --max-old-space-size");
      parent.kill("SIGTERM");
      const [code] = await exited;
      assert.equal(code, 143, "augur exits as killed by SIGTERM");
      assert.equal(isRunning(child!), false, "the re-run is stopped too");
    } finally {
      cleanup();
    }
  });
});

describe("signals while a command starts", { timeout: 30_000 }, () => {
  // A process that catches signals from its start and is given a handler
  // only when a line comes on its stdin, as a command once what it started exists.
  const SCRIPT = `
    import { HeldSignals } from ${JSON.stringify(new URL("../../src/cli/signals.js", import.meta.url).href)};
    const signals = new HeldSignals();
    process.stdout.write("ready\\n");
    process.stdin.once("data", () => {
      process.stdout.write("pending " + signals.pending + "\\n");
      signals.handle((signal) => {
        process.stdout.write("handled " + signal + "\\n");
        signals.release();
        process.exit(0);
      });
    });`;

  const children: ChildProcess[] = [];
  after(() => {
    for (const child of children) child.kill("SIGKILL");
  });

  function starting() {
    const child = spawn(process.execPath, ["--input-type=module", "-e", SCRIPT], { stdio: ["pipe", "pipe", "pipe"] });
    children.push(child);
    const output = { stdout: "", stderr: "" };
    child.stdout.on("data", (chunk) => (output.stdout += chunk));
    child.stderr.on("data", (chunk) => (output.stderr += chunk));
    const until = async (stream: "stdout" | "stderr", text: string) => {
      for (let tries = 0; tries < 400 && !output[stream].includes(text); tries++) await new Promise((resolve) => setTimeout(resolve, 25));
      assert.ok(output[stream].includes(text), `waiting for ${JSON.stringify(text)} on ${stream}: ${JSON.stringify(output)}`);
    };
    return { child, output, until, exited: once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]> };
  }

  it("holds one that comes before the handler and gives it to the handler once there is one", async () => {
    const { child, output, until, exited } = starting();
    await until("stdout", "ready");
    child.kill("SIGTERM");
    await until("stderr", "SIGTERM: stopping as soon as started");
    child.stdin.end("started\n");
    assert.deepEqual(await exited, [0, null], output.stderr);
    assert.equal(output.stdout, "ready\npending SIGTERM\nhandled SIGTERM\n");
  });

  it("exits at once, as killed by it, on a second one before the handler (a start that hangs)", async () => {
    const { child, output, until, exited } = starting();
    await until("stdout", "ready");
    child.kill("SIGTERM");
    await until("stderr", "stopping as soon as started");
    child.kill("SIGINT");
    assert.deepEqual(await exited, [130, null], output.stderr);
    assert.match(output.stderr, /SIGINT again while starting: exiting now/);
    child.stdin.destroy();
  });
});
