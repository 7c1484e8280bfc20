// `augur run` on this host, against real processes and real cgroups: it
// must discover them, learn profiles close to what they really used, keep
// those profiles through a SIGKILL, and allocate from them.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Profile } from "../../src/core/types.js";
import { CLI, augur } from "../cli.js";
import { eventually, sleep, tempDir } from "../helpers.js";

const V1 = "/sys/fs/cgroup";
const CONTROLLERS = ["cpu", "cpuacct", "memory"] as const;
const hasV1 = CONTROLLERS.every((c) => existsSync(join(V1, c, "cgroup.procs")));
const hasV2 = !hasV1 && existsSync(join(V1, "cgroup.controllers"));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** The aggregate window of the pipeline under test, in seconds. */
const WINDOW_SECONDS = 3;

/** A node process that keeps about `cores` busy (duty cycle) and holds `megabytes` of touched memory. */
function loadScript(cores: number, megabytes: number): string {
  return `
    const held = Buffer.alloc(${megabytes} * 1e6, 1);
    const period = 20, busy = period * ${cores};
    (function tick() {
      const start = Date.now();
      while (Date.now() - start < busy) held[Math.floor(Math.random() * held.length)]++;
      setTimeout(tick, period - busy);
    })();`;
}

function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssOf(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match![1]) * 1024;
}

describe("augur run on this host", { timeout: 240_000 }, () => {
  const { dir, cleanup } = tempDir("augur-it-");
  const tag = `augur-it-${process.pid}`;
  const cgroupPath = `/${tag}/it-cgroup/bob/run1`;
  const workloads: ChildProcess[] = [];
  let server: ChildProcess | null = null;
  let base = "";
  let configPath = "";
  let serverLog = "";
  let spawnedAt = 0;

  const startServer = async () => {
    serverLog = "";
    server = spawn(process.execPath, [CLI, "run", "--config", configPath], { stdio: ["ignore", "pipe", "pipe"] });
    server.stdout!.on("data", (chunk) => (serverLog += chunk));
    server.stderr!.on("data", (chunk) => (serverLog += chunk));
    await eventually(async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), 20_000, "augur run to serve /healthz");
  };

  const getProfile = async (image: string, user: string): Promise<Profile | undefined> => {
    const response = await fetch(`${base}/v1/profiles/${encodeURIComponent(image)}/${encodeURIComponent(user)}`);
    return response.ok ? ((await response.json()) as Profile) : undefined;
  };

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, "host.yaml"),
      `kind: host
intervalSeconds: 1
cgroup:
  rules:
    - pattern: '^/${tag}/(?<image>[^/]+)/(?<user>[^/]+)/[^/]+$'
process:
  rules:
    - match: { env: AUGUR_IMAGE }
      image: '{env.AUGUR_IMAGE}'
      user: '{env.AUGUR_USER|user}'
`,
    );
    configPath = join(dir, "pipeline.yaml");
    writeFileSync(
      configPath,
      `dataDir: data
collect: { connectors: [host.yaml] }
aggregate:
  window: { kind: tumbling, sizeSeconds: ${WINDOW_SECONDS} }
  allowedLatenessSeconds: 1
  idleWatermarkSeconds: 5
allocate:
  minWindows: 3
  minimum: { cpu: 0.01, memory: 1048576 }
  priorities:
    classes: { vip: { cpuMultiplier: 2 } }
    users: { carol: { class: vip } }
api:
  listen: 127.0.0.1:${port}
`,
    );
    // A plain process, labelled through its environment.
    spawnedAt = performance.now();
    workloads.push(spawn(process.execPath, ["-e", loadScript(0.4, 120)], { env: { ...process.env, AUGUR_IMAGE: "it-proc", AUGUR_USER: "alice" }, stdio: "ignore" }));
    // The same image run by a VIP user.
    workloads.push(spawn(process.execPath, ["-e", loadScript(0.1, 60)], { env: { ...process.env, AUGUR_IMAGE: "it-proc", AUGUR_USER: "carol" }, stdio: "ignore" }));
    // A workload in its own cgroup (v1 here; v2 where the host has it).
    if (hasV1 || hasV2) {
      const dirs = hasV1 ? CONTROLLERS.map((c) => join(V1, c, cgroupPath)) : [join(V1, cgroupPath)];
      for (const d of dirs) mkdirSync(d, { recursive: true });
      const joinAll = dirs.map((d) => `echo $$ > ${d}/cgroup.procs`).join(" && ");
      workloads.push(spawn("sh", ["-c", `${joinAll} && exec "${process.execPath}" -e '${loadScript(0.3, 80)}'`], { stdio: "ignore" }));
    }
    await startServer();
  });

  after(async () => {
    server?.kill("SIGKILL");
    for (const child of workloads) child.kill("SIGKILL");
    await sleep(300);
    for (const root of hasV1 ? CONTROLLERS.map((c) => join(V1, c)) : [V1]) {
      for (const path of [cgroupPath, `/${tag}/it-cgroup/bob`, `/${tag}/it-cgroup`, `/${tag}`]) {
        try {
          rmdirSync(join(root, path));
        } catch {
          // already gone
        }
      }
    }
    cleanup();
  });

  it("discovers real processes and learns CPU and memory within 20% of what they used", async (t) => {
    const pid = workloads[0]!.pid!;
    // Measured while the profile is learned: memory each poll, CPU per span of
    // a window's length, whose median the profile's p50 is compared with (a
    // spell of contention on a busy machine moves a mean, not a median).
    const rss: number[] = [];
    const cpuReadings: Array<{ at: number; seconds: number }> = [];
    const profile = await eventually(
      async () => {
        rss.push(rssOf(pid));
        cpuReadings.push({ at: performance.now(), seconds: cpuSecondsOf(pid) });
        const p = await getProfile("it-proc", "alice");
        return p && p.windows >= 4 ? p : undefined;
      },
      90_000,
      "a profile of (it-proc, alice) with 4 windows",
    );
    const spanRates: number[] = [];
    for (let from = cpuReadings[0]!, i = 1; i < cpuReadings.length; i++) {
      const to = cpuReadings[i]!;
      if (to.at - from.at < WINDOW_SECONDS * 1000) continue;
      spanRates.push((to.seconds - from.seconds) / ((to.at - from.at) / 1000));
      from = to;
    }
    spanRates.sort((a, b) => a - b);
    const lifetime = cpuSecondsOf(pid) / ((performance.now() - spawnedAt) / 1000);
    const cores = spanRates.length >= 3 ? spanRates[spanRates.length >> 1]! : lifetime;
    const memory = rss.reduce((a, b) => a + b, 0) / rss.length;
    const cpu = profile.resources.cpu!;
    const mem = profile.resources.mem!;
    t.diagnostic(`cpu: profile p50 ${cpu.p50.toFixed(3)} cores, measured ${cores.toFixed(3)} (median of ${spanRates.length} spans; ${lifetime.toFixed(3)} over its life); memory: profile p50 ${(mem.p50 / 1e6).toFixed(1)} MB, measured ${(memory / 1e6).toFixed(1)} MB`);
    assert.ok(Math.abs(cpu.p50 - cores) / cores < 0.2, `profile cpu p50 ${cpu.p50.toFixed(3)} vs measured ${cores.toFixed(3)}`);
    assert.ok(Math.abs(mem.p50 - memory) / memory < 0.2, `profile memory p50 ${mem.p50} vs measured ${memory}`);
    assert.equal(profile.level, "exact");
    assert.ok(cpu.limit >= cpu.request && mem.limit >= mem.request, `cpu ${JSON.stringify(cpu)} mem ${JSON.stringify(mem)}`);
  });

  it("profiles a workload in its own cgroup from the cgroup's counters", { skip: !(hasV1 || hasV2) && "no cgroup hierarchy" }, async () => {
    const profile = await eventually(async () => {
      const p = await getProfile("it-cgroup", "bob");
      return p && p.windows >= 3 ? p : undefined;
    }, 60_000, "a profile of (it-cgroup, bob)");
    const cpu = profile.resources.cpu!.p50;
    assert.ok(cpu > 0.3 * 0.8 && cpu < 0.3 * 1.2, `cgroup cpu p50 ${cpu}`);
    assert.ok(profile.resources.mem!.p50 > 80e6 * 0.8, `cgroup memory p50 ${profile.resources.mem!.p50}`);
  });

  it("keeps fallback profiles for (image, *), (*, user) and (*, *)", async () => {
    for (const [image, user] of [
      ["it-proc", "*"],
      ["*", "alice"],
      ["*", "*"],
    ]) {
      assert.ok(await getProfile(image!, user!), `(${image}, ${user})`);
    }
  });

  it("allocates from the profile over HTTP and the CLI, and a VIP multiplier raises the CPU", async () => {
    const token = readFileSync(join(dir, "data", "api-token"), "utf8").trim();
    const response = await fetch(`${base}/v1/allocations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ image: "it-proc", user: "alice" }),
    });
    assert.equal(response.status, 201);
    const decision = (await response.json()) as { level: string; cpu: { request: number } };
    assert.equal(decision.level, "exact");
    const profile = (await getProfile("it-proc", "alice"))!;
    assert.ok(Math.abs(decision.cpu.request - profile.resources.cpu!.request) < 1e-9);

    const vip = await eventually(async () => {
      const p = await getProfile("it-proc", "carol");
      return p && p.windows >= 3 ? p : undefined;
    }, 30_000, "a profile of (it-proc, carol)");
    const cli = augur(["allocate", "--image", "it-proc", "--user", "carol", "--json", "--config", configPath]);
    assert.equal(cli.status, 0, cli.stderr);
    const vipDecision = JSON.parse(cli.stdout);
    assert.equal(vipDecision.priorityMultiplier, 2);
    assert.ok(vipDecision.cpu.request >= 2 * vip.resources.cpu!.request - 1e-9);

    const fresh = JSON.parse(augur(["allocate", "--image", "never-seen", "--user", "nobody", "--json", "--config", configPath]).stdout);
    assert.equal(fresh.level, "global", "a never-seen pair falls back to (*, *) once that exists");
  });

  it("keeps profiles through a SIGKILL and keeps updating them after restart", async () => {
    const before = (await getProfile("it-proc", "alice"))!;
    server!.kill("SIGKILL");
    await new Promise((resolve) => server!.once("exit", resolve));
    await startServer();
    const after = (await getProfile("it-proc", "alice"))!;
    assert.ok(after.version >= before.version, "restart lost a profile update");
    assert.ok(after.windows >= before.windows);
    const updated = await eventually(async () => {
      const p = await getProfile("it-proc", "alice");
      return p && p.version > after.version ? p : undefined;
    }, 30_000, "the profile to update after restart");
    assert.ok(updated.windows > after.windows);
    // The data directory holds the store and the token, nothing named after an id.
    assert.deepEqual(
      readdirSync(join(dir, "data")).filter((f) => !f.startsWith("augur.db")),
      ["api-token"],
    );
    assert.doesNotMatch(serverLog, /TypeError|ReferenceError|unhandled/i);
  });
});
