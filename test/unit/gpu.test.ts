import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import fc from "fast-check";
import { devicesFromDcgm, devicesFromSmi, parsePmon, parseSmiCsv, processesFromSmi, usageOf } from "../../src/collect/gpu.js";
import { DecodeError } from "../../src/core/errors.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/gpu/", import.meta.url));
const text = (name: string) => readFileSync(fixtures + name, "utf8");
const MIB = 1024 * 1024;

describe("nvidia-smi outputs recorded on real machines", () => {
  it("reads eight H200s: index, UUID, memory in bytes, utilisation", () => {
    const devices = devicesFromSmi(parseSmiCsv(text("h200-query-gpu.csv")));
    assert.equal(devices.length, 8);
    assert.deepEqual(devices[0], {
      index: 0,
      uuid: "GPU-a44622e3-2296-6285-0a86-84d0f6c67900",
      name: null,
      utilizationPercent: 100,
      memoryUsedBytes: 130013 * MIB,
      memoryTotalBytes: 143771 * MIB,
    });
    assert.equal(devices[7]!.utilizationPercent, 0);
    assert.equal(devices[7]!.memoryUsedBytes, 58071 * MIB);
  });

  it("reads compute apps, with '[Not Found]' process names as unknown", () => {
    const processes = processesFromSmi(parseSmiCsv(text("h200-compute-apps.csv")));
    assert.equal(processes.length, 8);
    assert.deepEqual(processes[7], { pid: 1758887, gpuUuid: "GPU-28780eb0-24d5-1f13-59b8-ae5c23617a72", gpuIndex: null, processName: null, usedMemoryBytes: 58060 * MIB, smPercent: null });
    assert.equal(processes[0]!.processName, "/usr/local/bin/python3.10");
  });

  it("attributes a GPU's use to the processes of a workload", () => {
    const snapshot = {
      devices: devicesFromSmi(parseSmiCsv(text("h200-query-gpu.csv"))),
      processes: processesFromSmi(parseSmiCsv(text("h200-compute-apps.csv"))),
    };
    // pids 1425258..1425261 ran on GPUs 2, 4, 5, 6 at 100% each, one process per GPU.
    const usage = usageOf(snapshot, new Set([1425258, 1425259, 1425260, 1425261]));
    assert.equal(usage.gpuUtilization, 4);
    assert.equal(usage.gpuMemoryBytes, 4 * 105842 * MIB);
    assert.deepEqual(usageOf(snapshot, new Set([42])), { gpuUtilization: null, gpuMemoryBytes: null });
  });

  it("reads the L40S host: names, and compute apps without a GPU column", () => {
    const [device] = devicesFromSmi(parseSmiCsv(text("l40s-query-gpu.csv")));
    assert.equal(device!.name, "NVIDIA L40S");
    assert.equal(device!.memoryUsedBytes, 9123 * MIB);
    assert.equal(device!.utilizationPercent, null);
    const processes = processesFromSmi(parseSmiCsv(text("l40s-compute-apps.csv")));
    assert.deepEqual(processes.map((p) => [p.pid, p.usedMemoryBytes! / MIB]), [[44378, 1836], [44966, 974], [52114, 6294]]);
  });

  it("reads a looping V100 log and an H100 report with many fields", () => {
    const rows = parseSmiCsv(text("v100-loop.csv"));
    assert.equal(rows.length, 7);
    assert.equal(rows[5]!["timestamp"], "2020/11/12 13:48:36.427");
    assert.deepEqual(devicesFromSmi(rows).map((d) => d.utilizationPercent), [99, 99, 99, 98, 100, 32, 98]);
    const [h100] = parseSmiCsv(text("h100-query-gpu.csv"));
    assert.equal(h100!["driver_version"], "595.71.05");
    assert.equal(devicesFromSmi([h100!])[0]!.memoryTotalBytes, 81559 * MIB);
  });

  it("reads --format=csv,noheader,nounits given the queried fields", () => {
    const rows = parseSmiCsv(text("rtx3090-compute-apps-nounits.csv"), ["timestamp", "gpu_name", "pid", "process_name", "used_memory"]);
    assert.deepEqual(processesFromSmi(rows).map((p) => [p.pid, p.processName, p.usedMemoryBytes! / MIB]), [[1106871, "/app/llama-server", 23342]]);
  });

  it("reads pmon, where idle GPUs are rows of dashes", () => {
    assert.deepEqual(parsePmon(text("h200-pmon-idle.txt")), []);
    const busy = "# gpu         pid   type     sm    mem    enc    dec    jpg    ofa    command\n# Idx           #    C/G      %      %      %      %      %      %    name\n    0      41234     C     87     40      -      -      -      -    python3\n";
    assert.deepEqual(parsePmon(busy), [{ pid: 41234, gpuUuid: null, gpuIndex: 0, processName: "python3", usedMemoryBytes: null, smPercent: 87 }]);
  });

  it("reads DCGM exporter metrics", () => {
    const devices = devicesFromDcgm(text("k80-dcgm-exporter.prom"));
    assert.deepEqual(devices.map((d) => [d.index, d.uuid, d.name, d.utilizationPercent]), [
      [0, "GPU-74f7fe3b-48f2-6d8b-3cb4-e70426fb669c", "Tesla K80", 0],
      [1, "GPU-f3a2185e-464d-c671-4057-0d056df64b6e", "Tesla K80", 0],
      [2, "GPU-6ae74b72-48d0-f09f-14e2-4e09ceebda63", "Tesla K80", 0],
    ]);
  });
});

describe("hostile nvidia-smi output", () => {
  it("refuses output that is not CSV with a header, and rows of the wrong width", () => {
    assert.throws(() => parseSmiCsv("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"), DecodeError);
    assert.throws(() => parseSmiCsv("index, uuid\n0, GPU-1, extra\n"), DecodeError);
    assert.deepEqual(parseSmiCsv(""), []);
  });

  it("keeps a process name that holds a comma in one field", () => {
    const rows = parseSmiCsv("pid, process_name, used_gpu_memory [MiB]\n7, python3 train.py --a=1, --b=2, 512 MiB\n");
    assert.deepEqual(processesFromSmi(rows)[0], { pid: 7, gpuUuid: null, gpuIndex: null, processName: "python3 train.py --a=1, --b=2", usedMemoryBytes: 512 * MIB, smPercent: null });
  });

  it("never throws anything but DecodeError, whatever the text", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (input) => {
        try {
          processesFromSmi(parseSmiCsv(input));
          devicesFromSmi(parseSmiCsv(input));
        } catch (error) {
          assert.ok(error instanceof DecodeError, String(error));
        }
        parsePmon(input);
        devicesFromDcgm(input);
      }),
      { numRuns: 500 },
    );
  });
});
