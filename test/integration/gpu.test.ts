// The GPU collector against a real NVIDIA GPU, when this host has one
// (scripts/gpu-check.sh runs it on a GPU machine). Skipped elsewhere; the
// parsers are tested on recorded outputs in test/unit/gpu.test.ts.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { GpuCollector, gpuCollectorConfig, usageOf } from "../../src/collect/gpu.js";
import { GpuConnector, gpuConnectorConfig } from "../../src/actuate/gpu.js";
import { eventually } from "../helpers.js";

const SMI = process.env.AUGUR_NVIDIA_SMI ?? "/usr/bin/nvidia-smi";
const hasGpu = existsSync(SMI) && (() => {
  try {
    return execFileSync(SMI, ["-L"], { encoding: "utf8" }).includes("GPU 0");
  } catch {
    return false;
  }
})();

/** Device-wide settings augur must never change. */
function deviceSettings(): string {
  return execFileSync(SMI, ["--query-gpu=index,compute_mode,persistence_mode,mig.mode.current,power.limit,clocks.applications.graphics,clocks.applications.memory", "--format=csv,noheader"], { encoding: "utf8" });
}

function hasTorchCuda(): boolean {
  try {
    return execFileSync("python3", ["-c", "import torch; print(torch.cuda.is_available())"], { encoding: "utf8", timeout: 60_000 }).trim() === "True";
  } catch {
    return false;
  }
}

describe("GPU collector on a real GPU", { skip: !hasGpu && `no NVIDIA GPU (${SMI})`, timeout: 180_000 }, () => {
  const config = gpuCollectorConfig.parse({ kind: "gpu", nvidiaSmi: SMI });

  it("reads every device: UUID, memory, utilisation in range", async () => {
    const before = deviceSettings();
    const snapshot = await new GpuCollector(config).snapshot();
    const listed = execFileSync(SMI, ["-L"], { encoding: "utf8" }).trim().split("\n").length;
    assert.equal(snapshot.devices.length, listed);
    for (const device of snapshot.devices) {
      assert.match(device.uuid ?? "", /^GPU-[0-9a-f-]+$/);
      assert.ok(device.memoryTotalBytes! > 1e9, `total ${device.memoryTotalBytes}`);
      assert.ok(device.memoryUsedBytes! >= 0 && device.memoryUsedBytes! <= device.memoryTotalBytes!);
      assert.ok(device.utilizationPercent! >= 0 && device.utilizationPercent! <= 100);
    }
    console.log(JSON.stringify({ gpuDevices: snapshot.devices }));
    assert.equal(deviceSettings(), before, "device-wide settings unchanged");
  });

  it("assigns devices by UUID without changing device-wide settings", async () => {
    const before = deviceSettings();
    const connector = new GpuConnector(gpuConnectorConfig.parse({ kind: "gpu", nvidiaSmi: SMI }));
    const assignment = await connector.assign("gpu-check", 1);
    assert.match(assignment.env.CUDA_VISIBLE_DEVICES!, /^GPU-[0-9a-f-]+$/);
    connector.release("gpu-check");
    assert.equal(deviceSettings(), before);
  });

  it("attributes a real CUDA process's memory and use to its pid", { skip: !hasTorchCuda() && "no python3 with CUDA torch" }, async () => {
    const child = spawn("python3", ["-c", "import torch, time\nx = torch.empty(1024**3, dtype=torch.uint8, device='cuda')\ny = torch.randn(4096, 4096, device='cuda')\nend = time.time() + 20\nwhile time.time() < end:\n    y = y @ y; y = y / y.norm()\n"], { stdio: "ignore" });
    try {
      const collector = new GpuCollector(config);
      const usage = await eventually(async () => {
        const found = usageOf(await collector.snapshot(), new Set([child.pid!]));
        return found.gpuMemoryBytes !== null && found.gpuMemoryBytes >= 1024 ** 3 ? found : undefined;
      }, 60_000, "the CUDA process in nvidia-smi");
      console.log(JSON.stringify({ cudaProcessUsage: usage }));
      assert.ok(usage.gpuMemoryBytes! >= 1024 ** 3);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
