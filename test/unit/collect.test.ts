import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { attributeCgroup, attributeProcess, cgroupRuleSchema, processRuleSchema, renderTemplate } from "../../src/collect/attribution.js";
import { detectLayout, listCgroups, readCgroup, type CgroupLayout } from "../../src/collect/cgroup.js";
import { parseNetDev, parsePasswd, parseProcIo, parseStat, parseStatusUid } from "../../src/collect/proc.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/", import.meta.url));
const text = (path: string) => readFileSync(fixtures + path, "utf8");

describe("cgroup readers", () => {
  it("finds v1 controllers on a hybrid host and ignores its empty cgroup2 mount", () => {
    const layout = detectLayout(text("proc/mounts-v1-hybrid"));
    assert.equal(layout?.version, "v1");
    assert.equal(layout?.roots.memory, "/sys/fs/cgroup/memory");
    assert.equal(layout?.roots.cpuacct, "/sys/fs/cgroup/cpuacct");
  });

  it("chooses v2 on a unified-only host", () => {
    assert.equal(detectLayout("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n")?.version, "v2");
    assert.equal(detectLayout("proc /proc proc rw 0 0\n"), null);
  });

  it("reads a real v1 cgroup: CPU time, working set, limits, throttling", () => {
    const root = fixtures + "cgroup-v1/";
    const layout: CgroupLayout = { version: "v1", roots: { memory: root + "memory", cpu: root + "cpu", cpuacct: root + "cpuacct", blkio: root + "blkio" } };
    assert.ok(listCgroups(layout, 6).includes("/augur/app/alice/run1"));
    const reading = readCgroup(layout, "/augur/app/alice/run1");
    assert.ok(Math.abs(reading.cpuSeconds! - 1.049553321) < 1e-9);
    assert.equal(reading.memoryUsageBytes, 60268544);
    assert.ok(reading.memoryWorkingSetBytes! <= 60268544 && reading.memoryWorkingSetBytes! > 50e6);
    assert.equal(reading.memoryRssBytes, 58765312);
    assert.equal(reading.memoryLimitBytes, 209715200);
    assert.equal(reading.cpuLimitCores, 0.5);
    assert.equal(reading.oomKills, 0);
    assert.equal(reading.throttledPeriods, 20);
    assert.ok(Math.abs(reading.throttledSeconds! - 0.996126216) < 1e-9);
    assert.equal(reading.ioWriteBytes, 0);
  });

  it("reads a v2 cgroup in the kernel's documented formats", () => {
    const layout: CgroupLayout = { version: "v2", roots: { unified: fixtures + "cgroup-v2" } };
    const reading = readCgroup(layout, "/augur/app/alice/run1");
    assert.equal(reading.cpuSeconds, 2);
    assert.equal(reading.memoryWorkingSetBytes, 52428800 - 8388608);
    assert.equal(reading.memoryLimitBytes, 209715200);
    assert.equal(reading.cpuLimitCores, 0.5);
    assert.equal(reading.oomKills, 1);
    assert.equal(reading.throttledPeriods, 12);
    assert.equal(reading.ioReadBytes, 2097152);
    assert.equal(reading.ioWriteBytes, 4194304);
    assert.deepEqual(reading.pids, [1234]);
  });

  it("answers nulls, not exceptions, for a cgroup that vanished", () => {
    const reading = readCgroup({ version: "v2", roots: { unified: fixtures + "cgroup-v2" } }, "/gone");
    assert.equal(reading.cpuSeconds, null);
    assert.deepEqual(reading.pids, []);
  });
});

describe("/proc readers", () => {
  it("parses a stat line whose command name has spaces and parentheses", () => {
    const stat = parseStat(text("proc/4242/stat"))!;
    assert.equal(stat.comm, "odd (name) x");
    assert.equal(stat.startTicks, 165614);
    assert.equal(stat.rssPages, 403);
  });

  it("parses status, io and net/dev, leaving loopback out", () => {
    assert.equal(parseStatusUid(text("proc/4242/status")), 0);
    assert.deepEqual(parseProcIo(text("proc/4242/io")), { read: 0, write: 0 });
    assert.deepEqual(parseNetDev(text("proc/4242/net-dev")), { rxBytes: 65319166, txBytes: 404827 });
    assert.equal(parseStat("garbage"), null);
    assert.equal(parseStatusUid("no uid here"), null);
  });

  it("maps uids to names from passwd text", () => {
    assert.equal(parsePasswd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbad line\n").get(1000), "alice");
  });
});

describe("attribution", () => {
  const cgroupRules = [
    cgroupRuleSchema.parse({ pattern: "^/augur/(?<image>[^/]+)/(?<user>[^/]+)/[^/]+$" }),
    cgroupRuleSchema.parse({ pattern: "^/kubepods/pod(?<pod>[0-9a-f-]+)$", image: "pod-{pod}", user: "{user}" }),
  ];

  it("takes image and user from a cgroup path pattern", () => {
    assert.deepEqual(attributeCgroup(cgroupRules, "/augur/app/alice/run1", () => undefined), { image: "app", user: "alice" });
    assert.deepEqual(attributeCgroup(cgroupRules, "/kubepods/podab-12", (n) => (n === "user" ? "bob" : undefined)), { image: "pod-ab-12", user: "bob" });
    assert.equal(attributeCgroup(cgroupRules, "/system.slice/cron.service", () => undefined), null);
  });

  it("takes image from an environment label, executable or name, and user from the uid", () => {
    const rules = [
      processRuleSchema.parse({ match: { env: "AUGUR_IMAGE" }, image: "{env.AUGUR_IMAGE}", user: "{env.AUGUR_USER|user}" }),
      processRuleSchema.parse({ match: { exe: "^/usr/bin/(?<tool>python3|node)$" }, image: "lang-{tool}" }),
      processRuleSchema.parse({ image: "{exeName}" }),
    ];
    const facts = (exe: string, env: Record<string, string>) => ({
      pid: 7,
      exe,
      comm: "x",
      uid: 1000,
      userName: "alice",
      environ: () => new Map(Object.entries(env)),
    });
    assert.deepEqual(attributeProcess(rules, facts("/bin/x", { AUGUR_IMAGE: "ci/build:3", AUGUR_USER: "carol" })), { image: "ci/build:3", user: "carol" });
    assert.deepEqual(attributeProcess(rules, facts("/bin/x", { AUGUR_IMAGE: "ci/build:3" })), { image: "ci/build:3", user: "alice" });
    assert.deepEqual(attributeProcess(rules, facts("/usr/bin/node", {})), { image: "lang-node", user: "alice" });
    assert.deepEqual(attributeProcess(rules, facts("/opt/tool/bin/thing", {})), { image: "thing", user: "alice" });
  });

  it("skips a rule whose rendered id is hostile instead of trusting it", () => {
    const rules = [processRuleSchema.parse({ match: { env: "AUGUR_IMAGE" }, image: "{env.AUGUR_IMAGE}" }), processRuleSchema.parse({ image: "{exeName}" })];
    const result = attributeProcess(rules, {
      pid: 1,
      exe: "/bin/sh",
      comm: "sh",
      uid: 0,
      userName: "root",
      environ: () => new Map([["AUGUR_IMAGE", "evil\u0000|x"]]),
    });
    assert.deepEqual(result, { image: "sh", user: "root" });
  });

  it("renders templates with fallbacks and refuses broken ones in config", () => {
    assert.equal(renderTemplate("{a|b}-{c}", (n) => ({ b: "B", c: "C" })[n]), "B-C");
    assert.equal(renderTemplate("{a}", () => undefined), null);
    assert.throws(() => processRuleSchema.parse({ image: "{unclosed" }));
    assert.throws(() => cgroupRuleSchema.parse({ pattern: "([unterminated" }));
    assert.throws(() => processRuleSchema.parse({ image: "x", match: { env: "BAD NAME" } }));
  });
});
