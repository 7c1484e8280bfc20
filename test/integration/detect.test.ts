// Anomaly detection and remediation on this host, for real: a process that
// leaks memory in a cgroup of augur's is detected by `augur run` and, as the
// policy says, frozen and then killed, or only reported in dry-run; a
// leaking process outside augur's root is detected but never touched.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { detectHostLayout } from "../../src/collect/cgroup.js";
import { loadPipeline } from "../../src/config/pipeline.js";
import type { ActuationResult } from "../../src/core/types.js";
import { startEmbeddedPipeline, type RunningPipeline } from "../../src/pipeline/embedded.js";
import { TOPICS } from "../../src/transport/topic.js";
import { eventually, tempDir } from "../helpers.js";

const layout = detectHostLayout();
const skip = !(process.getuid?.() === 0 && layout !== null) && "needs root and a cgroup hierarchy";
const token = "detect-it-token-0123456789";

/** Holds 60 MB for `steadySeconds`, then adds 15 MB every half second. */
const LEAK = (steadySeconds: number) =>
  `const held = [Buffer.alloc(60e6, 1)]; setTimeout(() => setInterval(() => { held.push(Buffer.alloc(15e6, 1)); if (held.length > 60) held.splice(1, 1); }, 500), ${steadySeconds * 1000}); setInterval(() => {}, 1000);`;

async function pipeline(dir: string, name: string, root: string, dryRun: boolean): Promise<{ running: RunningPipeline; results: ActuationResult[] }> {
  writeFileSync(join(dir, `${name}-cgroup.yaml`), `kind: cgroup\nroot: ${root}\n`);
  writeFileSync(join(dir, `${name}-process.yaml`), "kind: process\n");
  writeFileSync(
    join(dir, `${name}-host.yaml`),
    `kind: host
intervalSeconds: 0.5
cgroup: { ignore: ['^/${root}(/|$)'], rules: [] }
process:
  rules:
    - match: { env: AUGUR_IT_LEAKER }
      image: '{env.AUGUR_IT_LEAKER}'
      user: outsider
`,
  );
  const path = join(dir, `${name}.yaml`);
  writeFileSync(
    path,
    `name: ${name}
dataDir: ${join(dir, name)}
transport: { kind: embedded }
collect: { connectors: [${join(dir, `${name}-host.yaml`)}] }
detect:
  enabled: true
  monitor: { warmupSteps: 20, recentSteps: 6, clearSteps: 3 }
  sinks: [{ kind: log }]
  remediation:
    dryRun: ${dryRun}
    rules:
      - { type: memory_leak, action: freeze, then: { action: kill, afterSeconds: 3 } }
actuate:
  connectors: [${join(dir, `${name}-cgroup.yaml`)}, ${join(dir, `${name}-process.yaml`)}]
  sampleSeconds: 0.5
  runs: { api: true, commands: ["${process.execPath}"] }
api: { listen: "127.0.0.1:0", tokenEnv: AUGUR_IT_DETECT_TOKEN }
`,
  );
  process.env.AUGUR_IT_DETECT_TOKEN = token;
  const running = await startEmbeddedPipeline(loadPipeline(path));
  const results: ActuationResult[] = [];
  await running.transport.consume<ActuationResult>(TOPICS.actuations, { group: `it-${name}`, from: "earliest" }, async (batch) => {
    for (const record of batch) results.push(record.value);
  });
  return { running, results };
}

async function startLeak(base: string, image: string): Promise<{ runId: string; cgroup: string }> {
  const response = await fetch(`${base}/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ image, user: "mallory", request: { cpu: 1, memory: 2 * 2 ** 30 }, command: [process.execPath, "-e", LEAK(14)] }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()) as { runId: string; cgroup: string };
}

const runState = async (base: string, runId: string) => (await (await fetch(`${base}/v1/runs/${runId}`)).json()) as { state: string; exit: { signal: string | null } | null };

describe("detection and remediation on this host", { skip, timeout: 180_000 }, () => {
  const { dir, cleanup } = tempDir("augur-detect-it-");
  const root = `augur-it-detect-${process.pid}`;
  const pipelines: RunningPipeline[] = [];
  after(async () => {
    for (const running of pipelines) await running.stop();
    for (const mount of new Set(Object.values(layout!.roots))) {
      if (mount && existsSync(join(mount, root))) spawnSync("find", [join(mount, root), "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]);
    }
    cleanup();
  });

  it("freezes and then kills a leaking run, as the policy says", async () => {
    const { running, results } = await pipeline(dir, "act", root, false);
    pipelines.push(running);
    const base = running.address;
    const { runId, cgroup } = await startLeak(base, "leaky");
    const freezer = layout!.version === "v1" ? join((layout!.roots as Record<string, string>).freezer!, cgroup, "freezer.state") : join(layout!.roots.unified!, cgroup, "cgroup.freeze");
    const freeze = await eventually(() => results.find((r) => r.workload === `run:${runId}` && r.action === "freeze"), 60_000, "the freeze");
    assert.equal(freeze.ok, true, freeze.reason);
    assert.equal(freeze.dryRun, false);
    assert.match(freeze.reason, /memory_leak/);
    assert.match(readFileSync(freezer, "utf8"), /FROZEN|FREEZING|1/);
    const kill = await eventually(() => results.find((r) => r.workload === `run:${runId}` && r.action === "kill"), 15_000, "the kill");
    assert.equal(kill.ok, true, kill.reason);
    const final = await eventually(async () => {
      const state = await runState(base, runId);
      return state.state === "exited" ? state : undefined;
    }, 15_000, "the run to end");
    assert.equal(final.exit!.signal, "SIGKILL");
    // The run's owner sees what was done to it, and why, in its events.
    const { events } = (await (await fetch(`${base}/v1/runs/${runId}`)).json()) as { events: Array<{ type: string; action?: string; reason?: string }> };
    const told = events.filter((e) => e.type === "remediated" || e.type === "exited");
    assert.deepEqual(told.map((e) => e.action ?? e.type), ["freeze", "kill", "exited"]);
    assert.match(told[0]!.reason!, /memory_leak/);
  });

  it("only reports in dry-run, and never touches a leaking process outside its root", async () => {
    const { running, results } = await pipeline(dir, "dry", root, true);
    pipelines.push(running);
    const base = running.address;
    const { runId } = await startLeak(base, "leaky-dry");
    const outside = spawn(process.execPath, ["-e", LEAK(14)], { env: { ...process.env, AUGUR_IT_LEAKER: "leaky-outside" }, stdio: "ignore" });
    try {
      const dry = await eventually(() => results.find((r) => r.workload === `run:${runId}` && r.action === "freeze"), 60_000, "the dry-run freeze");
      assert.equal(dry.dryRun, true);
      assert.match(dry.reason, /dry run: nothing changed/);
      assert.equal((await runState(base, runId)).state, "running");

      // The outside process: the dry-run pipeline sees its leak too (it is sampled through its environment)…
      const seen = await eventually(() => results.find((r) => r.workload.startsWith(`pid:${outside.pid}@`)), 60_000, "the outside leak's remediation");
      assert.equal(seen.dryRun, true);
      // …and a pipeline that acts refuses to touch it.
      const acting = pipelines[0]!;
      const refused: ActuationResult[] = [];
      await acting.transport.consume<ActuationResult>(TOPICS.actuations, { group: "it-outside", from: "earliest" }, async (batch) => {
        for (const record of batch) refused.push(record.value);
      });
      const kill = await eventually(() => refused.find((r) => r.workload.startsWith(`pid:${outside.pid}@`) && r.action === "kill"), 60_000, "the refused kill");
      assert.equal(kill.ok, false);
      assert.match(kill.reason, /not in a cgroup below \/augur-it-detect-\d+: augur does not touch it/);
      assert.equal(spawnSync("kill", ["-0", String(outside.pid)]).status, 0, "the outside process is alive");
    } finally {
      outside.kill("SIGKILL");
      await fetch(`${base}/v1/runs/${runId}`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    }
  });
});
