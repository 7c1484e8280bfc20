import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { CgroupConnector, cgroupConnectorConfig, normalise, parseCpuList, settingsFor, type Setting } from "../../src/actuate/cgroup.js";
import { actuatorConfig } from "../../src/actuate/config.js";
import { chooseDevices, gpuEnvironment } from "../../src/actuate/gpu.js";
import { lastBytes, Run, type RunEvent, type RunStatus } from "../../src/actuate/launcher.js";
import { ChangeLimiter, checkProposal, safetyConfig } from "../../src/actuate/safety.js";
import { namespaceOfRunCgroup, parseHtbClass, parseTcRate, tcConnectorConfig, TcConnector } from "../../src/actuate/tc.js";
import { ActuationError, ValidationError } from "../../src/core/errors.js";

const scratch = mkdtempSync(join(tmpdir(), "augur-actuate-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A cgroup v2 tree as plain files: what the kernel's cgroupfs looks like to open/read/write. */
function fakeV2(name: string): string {
  const root = join(scratch, name);
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  writeFileSync(join(root, "cgroup.subtree_control"), "");
  return root;
}

function connector(root: string, overrides: Record<string, unknown> = {}): CgroupConnector {
  return new CgroupConnector(cgroupConnectorConfig.parse({ kind: "cgroup", ...overrides }), { version: "v2", roots: { unified: root } });
}

describe("cgroup settings", () => {
  it("expresses limits as v1 and v2 control files", () => {
    const limits = { cpuLimitCores: 0.5, cpuWeight: 200, cpuset: "0-1", memoryLimitBytes: 209715200, memorySoftLimitBytes: 188743680, io: [{ device: "8:0", readBytesPerSecond: 1048576 }] };
    const v1 = Object.fromEntries(settingsFor("v1", limits, 100_000).map((s) => [s.file, s.value]));
    assert.deepEqual(v1, {
      "cpu.cfs_period_us": "100000",
      "cpu.cfs_quota_us": "50000",
      "cpu.shares": "2048",
      "cpuset.cpus": "0,1",
      "memory.limit_in_bytes": "209715200",
      "memory.soft_limit_in_bytes": "188743680",
      "blkio.throttle.read_bps_device": "8:0 1048576",
    });
    const v2 = Object.fromEntries(settingsFor("v2", limits, 100_000).map((s) => [s.file, s.value]));
    assert.deepEqual(v2, { "cpu.max": "50000 100000", "cpu.weight": "200", "cpuset.cpus": "0,1", "memory.max": "209715200", "memory.high": "188743680", "io.max": "8:0 rbps=1048576" });
    const unlimited = Object.fromEntries(settingsFor("v2", { cpuLimitCores: null, memoryLimitBytes: null }, 100_000).map((s) => [s.file, s.value]));
    assert.deepEqual(unlimited, { "cpu.max": "max 100000", "memory.max": "max" });
  });

  it("rounds memory to pages and reads v1's 'unlimited' back as -1", () => {
    const [setting] = settingsFor("v1", { memoryLimitBytes: 100_000_001 }, 100_000);
    assert.equal(setting!.value, String(Math.floor(100_000_001 / 4096) * 4096));
    assert.equal(normalise({ controller: "memory", file: "memory.limit_in_bytes", value: "-1" }, "9223372036854771712\n"), "-1");
    assert.equal(normalise({ controller: "cpuset", file: "cpuset.cpus", value: "0,1,2" }, "0-2\n"), "0,1,2");
  });

  it("refuses limits that make no sense", () => {
    for (const limits of [{ cpuLimitCores: -1 }, { cpuLimitCores: Number.NaN }, { memoryLimitBytes: 0 }, { cpuWeight: 0 }, { cpuWeight: 1.5 }, { cpuset: "" }, { cpuset: "0-" }, { cpuset: "3-1" }, { io: [{ device: "../sda", readBytesPerSecond: 1 }] }, { io: [{ device: "8:0\n1:1", readBytesPerSecond: 1 }] }]) {
      assert.throws(() => settingsFor("v2", limits as never, 100_000), ValidationError, JSON.stringify(limits));
    }
  });

  it("parses CPU lists as the kernel writes them", () => {
    assert.deepEqual(parseCpuList("0-3,6,8-9"), [0, 1, 2, 3, 6, 8, 9]);
    assert.deepEqual(parseCpuList("\n"), []);
    assert.throws(() => parseCpuList("0-99999"), ValidationError);
    assert.throws(() => parseCpuList("a"), ValidationError);
  });
});

describe("cgroup connector (v2 tree)", () => {
  it("creates the run's cgroup under its root, enabling controllers down the tree", () => {
    const root = fakeV2("create");
    const cgroups = connector(root);
    const path = cgroups.runPath("registry.example/app:1.2", "alice", "run-1");
    assert.match(path, /^\/augur\/registry\.example_app_1\.2-[0-9a-f]{12}\/alice-[0-9a-f]{12}\/run-1-[0-9a-f]{12}$/);
    cgroups.create(path);
    assert.ok(existsSync(join(root, path)));
    assert.equal(readFileSync(join(root, "cgroup.subtree_control"), "utf8"), "+cpuset +cpu +memory +io +pids");
    cgroups.create(path); // idempotent
  });

  it("writes only what differs: the same limits twice change nothing the second time", () => {
    const root = fakeV2("idempotent");
    const cgroups = connector(root);
    const path = cgroups.runPath("app", "bob", "r1");
    cgroups.create(path);
    const limits = { cpuLimitCores: 0.5, memoryLimitBytes: 209715200, memorySoftLimitBytes: 188743680 };
    const first = cgroups.apply(path, limits);
    assert.deepEqual(Object.keys(first).sort(), ["cpu.max", "memory.high", "memory.max"]);
    assert.equal(readFileSync(join(root, path, "cpu.max"), "utf8"), "50000 100000");
    assert.deepEqual(cgroups.apply(path, limits), {});
    assert.deepEqual(Object.keys(cgroups.apply(path, { ...limits, cpuLimitCores: 1 })), ["cpu.max"]);
  });

  it("dry-run reports the changes and writes nothing", () => {
    const root = fakeV2("dry");
    const cgroups = connector(root);
    const path = cgroups.runPath("app", "bob", "r1");
    cgroups.create(path);
    const changes = cgroups.apply(path, { memoryLimitBytes: 104857600 }, { dryRun: true });
    assert.deepEqual(changes, { "memory.max": [null, "104857600"] });
    assert.equal(existsSync(join(root, path, "memory.max")), false);
  });

  it("rolls back what it wrote when a later setting fails", () => {
    const root = fakeV2("rollback");
    const cgroups = connector(root);
    const path = cgroups.runPath("app", "bob", "r1");
    cgroups.create(path);
    writeFileSync(join(root, path, "cpu.max"), "max 100000");
    mkdirSync(join(root, path, "memory.max")); // writing it fails, like a kernel refusing the value
    assert.throws(() => cgroups.apply(path, { cpuLimitCores: 0.25, memoryLimitBytes: 104857600 }), (error: unknown) => {
      assert.ok(error instanceof ActuationError);
      assert.match((error as Error).message, /memory\.max.*rolled back 1 earlier setting/);
      return true;
    });
    assert.equal(readFileSync(join(root, path, "cpu.max"), "utf8"), "max 100000");
  });

  it("freezes and thaws idempotently", () => {
    const root = fakeV2("freeze");
    const cgroups = connector(root);
    const path = cgroups.runPath("app", "bob", "r1");
    cgroups.create(path);
    assert.equal(cgroups.setFrozen(path, true), true);
    assert.equal(readFileSync(join(root, path, "cgroup.freeze"), "utf8"), "1");
    assert.equal(cgroups.setFrozen(path, true), false);
    assert.equal(cgroups.setFrozen(path, false), true);
  });

  it("never leaves its root, whatever the ids or paths", () => {
    const root = fakeV2("hostile");
    const cgroups = connector(root);
    for (const path of ["/", "/etc", "/augur/../etc", "/augur/./x", "/other/augur/x", "augur/../../..", "/augur/a/\0/b", "/augurx/a"]) {
      assert.throws(() => cgroups.create(path), ValidationError, path);
      assert.throws(() => cgroups.apply(path, { memoryLimitBytes: 1 << 20 }), ValidationError, path);
      assert.throws(() => cgroups.remove(path), ValidationError, path);
    }
    // A symbolic link inside the root that points out of it is refused too.
    mkdirSync(join(root, "augur"), { recursive: true });
    mkdirSync(join(scratch, "outside"), { recursive: true });
    symlinkSync(join(scratch, "outside"), join(root, "augur", "escape"));
    assert.throws(() => cgroups.apply("/augur/escape", { memoryLimitBytes: 1 << 20 }), ValidationError);
    assert.equal(existsSync(join(scratch, "outside", "memory.max")), false);
    // Any image, user and run id becomes three harmless segments below the root.
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), fc.string({ minLength: 1, maxLength: 80 }), (image, user, run) => {
        const path = cgroups.runPath(image, user, run);
        const parts = path.split("/").filter(Boolean);
        assert.equal(parts.length, 4);
        assert.equal(parts[0], "augur");
        for (const part of parts) assert.match(part, /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/);
        assert.ok(resolve(root, ...parts).startsWith(join(root, "augur") + "/"));
      }),
      { numRuns: 300 },
    );
  });

  it("removes the run's cgroup and the parents it emptied, not its siblings", () => {
    const root = fakeV2("remove");
    const cgroups = connector(root);
    const one = cgroups.runPath("app", "bob", "r1");
    const two = cgroups.runPath("app", "bob", "r2");
    cgroups.create(one);
    cgroups.create(two);
    cgroups.remove(one);
    assert.equal(existsSync(join(root, one)), false);
    assert.ok(existsSync(join(root, two)));
    cgroups.remove(two);
    assert.equal(existsSync(join(root, "augur", two.split("/")[2]!)), false);
    assert.ok(existsSync(join(root, "augur")));
  });

  it("finds the run cgroups a killed augur left (empty, old, without cgroups of their own, below its root only) and those going on", () => {
    const root = fakeV2("stale");
    const cgroups = connector(root);
    const hourAgo = (Date.now() - 3_600_000) / 1000;
    const made = (image: string, user: string, run: string, options: { procs?: string | null; at?: number; child?: boolean } = {}) => {
      const path = cgroups.runPath(image, user, run);
      cgroups.create(path);
      if (options.procs !== null) writeFileSync(join(root, path, "cgroup.procs"), options.procs ?? "");
      if (options.child) mkdirSync(join(root, path, "inner"));
      utimesSync(join(root, path), options.at ?? hourAgo, options.at ?? hourAgo);
      return path;
    };
    const left = made("app", "bob", "left");
    const busy = made("app", "bob", "busy", { procs: "4242\n" });
    made("app", "bob", "young", { at: Date.now() / 1000 });
    const nested = made("app", "eve", "nested", { child: true });
    made("app", "eve", "not-a-cgroup", { procs: null });
    // Not runs: a pair directory with no run, a file where a run would be, another root.
    mkdirSync(join(root, "augur", "image-only", "user-only"), { recursive: true });
    writeFileSync(join(root, "augur", "image-only", "user-only", "a-file"), "");
    mkdirSync(join(root, "other", "app", "bob", "left"), { recursive: true });
    writeFileSync(join(root, "other", "app", "bob", "left", "cgroup.procs"), "");
    utimesSync(join(root, "other", "app", "bob", "left"), hourAgo, hourAgo);
    assert.deepEqual(cgroups.emptyRunsMadeBefore(Date.now() - 600_000), [left]);
    assert.deepEqual(connector(root, { root: "nothing-here" }).emptyRunsMadeBefore(Date.now()), []);
    // Runs going on, whoever started them: a process or a cgroup of their own in them.
    assert.deepEqual(cgroups.busyRuns().sort(), [busy, nested].sort());
  });

  it("refuses a root that is not a single directory name", () => {
    for (const root of ["..", ".", "../etc", "a/b", "", ".hidden", "x".repeat(65)]) {
      assert.equal(cgroupConnectorConfig.safeParse({ kind: "cgroup", root }).success, false, root);
    }
  });
});

describe("safety rules", () => {
  const config = safetyConfig.parse({ memoryMarginFraction: 0.1, memoryMarginBytes: 1000, maxChangesPerHour: 2 });
  const capacity = { cpu: 2, memory: 8e9 };

  it("never sets a memory limit below usage plus the margin", () => {
    const verdict = checkProposal(config, { cpuLimitCores: 1, memoryLimitBytes: 100_000 }, { memoryUsageBytes: 200_000, capacity, initial: false, rateAllows: true });
    assert.equal(verdict.limits.memoryLimitBytes, 221_000);
    assert.match(verdict.notes[0]!, /usage/);
  });

  it("never goes beyond node capacity", () => {
    const verdict = checkProposal(config, { cpuLimitCores: 16, memoryLimitBytes: 64e9 }, { memoryUsageBytes: 0, capacity, initial: true, rateAllows: true });
    assert.deepEqual(verdict.limits, { cpuLimitCores: 2, memoryLimitBytes: 8e9 });
  });

  it("limits changes per workload per hour, the first setting aside", () => {
    const limiter = new ChangeLimiter(config.maxChangesPerHour);
    const t = 1_000_000;
    limiter.record("w", t);
    limiter.record("w", t + 1000);
    assert.equal(limiter.allows("w", t + 2000), false);
    assert.equal(limiter.allows("other", t + 2000), true);
    assert.equal(limiter.allows("w", t + 3_600_001), true);
    // Workloads that come and go leave nothing: asking keeps nothing, changes are swept an hour on.
    const churn = new ChangeLimiter(3);
    for (let n = 0; n < 1000; n++) assert.equal(churn.allows(`asked-${n}`, t), true);
    assert.equal(churn.size, 0);
    for (let n = 0; n < 1000; n++) churn.record(`run-${n}`, t + n);
    assert.equal(churn.size, 1000);
    churn.record("later", t + 3_000_000);
    assert.equal(churn.size, 1001, "within the hour, all kept");
    churn.allows("any", t + 3_600_000 + 1_000);
    assert.equal(churn.size, 1, "an hour on, only the workload changed within it");
    assert.equal(churn.allows("later", t + 3_600_000 + 1_000), true);
    const refused = checkProposal(config, { cpuLimitCores: 1, memoryLimitBytes: null }, { memoryUsageBytes: null, capacity, initial: false, rateAllows: false });
    assert.equal(refused.allowed, false);
    assert.equal(checkProposal(config, { cpuLimitCores: 1, memoryLimitBytes: null }, { memoryUsageBytes: null, capacity, initial: true, rateAllows: false }).allowed, true);
  });
});

describe("tc connector", () => {
  it("parses tc's rate notation and HTB classes", () => {
    assert.equal(parseTcRate("8Mbit"), 8e6);
    assert.equal(parseTcRate("1600Kbit"), 1.6e6);
    assert.equal(parseTcRate("500bit"), 500);
    assert.equal(parseTcRate("1000bps"), 8000);
    assert.equal(parseTcRate("fast"), null);
    const text = "class htb 1:10 root prio 0 rate 8Mbit ceil 16Mbit burst 20000b cburst 1600b \n";
    assert.deepEqual(parseHtbClass(text, "1:10"), { rateBits: 8e6, ceilBits: 16e6 });
    assert.equal(parseHtbClass(text, "1:20"), null);
  });

  it("only runs the ip and tc binaries, named by absolute path", () => {
    for (const [field, value] of [
      ["tc", "/bin/sh"],
      ["tc", "tc"],
      ["tc", "/usr/sbin/tc; rm -rf /"],
      ["ip", "/tmp/ip/../../bin/bash"],
      ["ip", "/usr/sbin/ip\0"],
    ] as const) {
      assert.equal(tcConnectorConfig.safeParse({ kind: "tc", [field]: value }).success, false, `${field}=${value}`);
    }
    assert.equal(tcConnectorConfig.safeParse({ kind: "tc", subnet: "10.0.0.0/30" }).success, false);
    assert.equal(tcConnectorConfig.safeParse({ kind: "tc", subnet: "300.0.0.0/16" }).success, false);
  });

  it("names namespaces from a hash of the run id, never the id itself", { skip: !existsSync("/usr/sbin/ip") && "no ip binary" }, () => {
    const tc = new TcConnector(tcConnectorConfig.parse({ kind: "tc" }));
    for (const id of ["run-1", "../../etc/passwd", "$(reboot)", "a b; rm -rf /", "x".repeat(500)]) assert.match(tc.namespaceOf(id), /^augur-[0-9a-f]{10}$/);
    assert.throws(() => tc.wrap("../x", ["true"]), ValidationError);
    assert.throws(() => tc.wrap("netns; reboot", ["true"]), ValidationError);
    assert.deepEqual(tc.wrap("augur-0123456789", ["/bin/echo", "$(x)"]), ["/usr/sbin/ip", "netns", "exec", "augur-0123456789", "/bin/echo", "$(x)"]);
  });

  it("finds a run's namespace from the name of its cgroup, whatever the run id", { skip: !existsSync("/usr/sbin/ip") && "no ip binary" }, () => {
    const tc = new TcConnector(tcConnectorConfig.parse({ kind: "tc" }));
    const cgroups = connector(fakeV2("namespaces"));
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 200 }), fc.string(), fc.string(), (runId, image, user) => {
        assert.equal(namespaceOfRunCgroup(cgroups.runPath(image, user, runId)), tc.namespaceOf(runId));
      }),
      { numRuns: 300 },
    );
    for (const path of ["/augur/app/bob/handmade", "/augur/app/bob/x-0123456789AB", "/augur/app/bob/x-0123456789a"]) assert.equal(namespaceOfRunCgroup(path), null, path);
  });
});

describe("gpu device choice", () => {
  const devices = [0, 1, 2].map((index) => ({ index, uuid: `GPU-${index}`, name: "H200", utilizationPercent: 0, memoryUsedBytes: (3 - index) * 1e9, memoryTotalBytes: 1.4e11 }));

  it("picks free devices, least memory in use first", () => {
    assert.deepEqual(chooseDevices(devices, new Set(), 2).map((d) => d.uuid), ["GPU-2", "GPU-1"]);
    assert.deepEqual(chooseDevices(devices, new Set(["GPU-2"]), 1).map((d) => d.uuid), ["GPU-1"]);
    assert.throws(() => chooseDevices(devices, new Set(["GPU-0", "GPU-1"]), 2), /2 GPU\(s\) asked, 1 free/);
    assert.throws(() => chooseDevices(devices, new Set(), 0), ValidationError);
  });

  it("confines a run by UUID and, with MPS, by thread share and pinned memory", () => {
    const env = gpuEnvironment(devices.slice(0, 2), { threadPercentage: 37.5, memoryLimitBytes: 2 * 1024 ** 3 });
    assert.deepEqual(env, {
      CUDA_VISIBLE_DEVICES: "GPU-0,GPU-1",
      CUDA_DEVICE_ORDER: "PCI_BUS_ID",
      CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: "38",
      CUDA_MPS_PINNED_DEVICE_MEM_LIMIT: "0=2048M,1=2048M",
    });
    assert.deepEqual(Object.keys(gpuEnvironment(devices.slice(0, 1))), ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"]);
  });
});

describe("actuator configs", () => {
  it("accepts each connector kind and refuses unknown ones and unknown keys", () => {
    for (const kind of ["cgroup", "tc", "gpu", "process"]) assert.equal(actuatorConfig.safeParse({ kind }).success, true, kind);
    assert.equal(actuatorConfig.safeParse({ kind: "shell" }).success, false);
    assert.equal(actuatorConfig.safeParse({ kind: "cgroup", command: "/bin/sh" }).success, false);
    assert.equal(actuatorConfig.safeParse({ kind: "gpu", nvidiaSmi: "/usr/bin/python3" }).success, false);
  });
});

// Settings are compared with the values read back; a normalised value must compare equal to itself.
describe("normalise", () => {
  it("is a fixed point for every value settingsFor writes", () => {
    const limits = { cpuLimitCores: 1.5, cpuWeight: 50, cpuset: "1,0", memoryLimitBytes: 5e8, memorySoftLimitBytes: 4e8, io: [{ device: "259:0", readBytesPerSecond: 5, writeBytesPerSecond: 0 }] };
    for (const version of ["v1", "v2"] as const) {
      for (const setting of settingsFor(version, limits, 50_000) as Setting[]) assert.equal(normalise(setting, setting.value), setting.value, `${version} ${setting.file}`);
    }
  });
});

describe("a run's kept output and events", () => {
  it("keeps the last bytes of output as whole characters, as many as fit", () => {
    assert.equal(lastBytes("hello", 3), "llo");
    assert.equal(lastBytes("a€b", 4), "€b");
    assert.equal(lastBytes("a€b", 3), "b"); // the euro sign's last two bytes alone are no character
    assert.equal(lastBytes("😀x", 4), "x");
    assert.equal(lastBytes("anything", 0), "");
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 200 }), fc.nat({ max: 600 }), (text, bytes) => {
        const kept = lastBytes(text, bytes);
        assert.ok(text.endsWith(kept), "a suffix of the output");
        assert.ok(Buffer.byteLength(kept) <= bytes, "within the bytes kept");
        assert.ok(!kept.includes("\uFFFD") || text.includes("\uFFFD"), "no character cut in two");
        // Maximal: the code point before it would not have fit.
        const points = [...text];
        const keptPoints = [...kept].length;
        if (keptPoints < points.length) assert.ok(Buffer.byteLength(points[points.length - keptPoints - 1]! + kept) > bytes, "as much as fits");
      }),
      { numRuns: 500 },
    );
  });

  it("keeps a bounded list of events: the first two and the newest, counting what it dropped", () => {
    const status = { events: [], eventsDropped: 0 } as unknown as RunStatus;
    const run = new Run(status, 10);
    const heard: number[] = [];
    run.on("event", (event: RunEvent) => heard.push(event.ts));
    for (let ts = 0; ts < 25; ts++) run.record({ type: ts === 0 ? "allocated" : ts === 1 ? "started" : "resized", ts });
    assert.deepEqual(
      status.events.map((event) => event.ts),
      [0, 1, 17, 18, 19, 20, 21, 22, 23, 24],
    );
    assert.equal(status.eventsDropped, 15);
    assert.equal(heard.length, 25, "listeners hear every event");
  });
});
