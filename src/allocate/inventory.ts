import { execFileSync } from "node:child_process";
import { availableParallelism, totalmem } from "node:os";
import type { AllocationConfig } from "./config.js";

export interface Inventory {
  cpu: number; // cores
  memory: number; // bytes
  gpus: number;
}

/** Counts NVIDIA GPUs with nvidia-smi; 0 where there is none or it fails. */
export function countGpus(): number {
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=index", "--format=csv,noheader"], { encoding: "utf8", timeout: 5000, stdio: ["ignore", "pipe", "ignore"] });
    return out.split("\n").filter((line) => /^\s*\d+\s*$/.test(line)).length;
  } catch {
    return 0;
  }
}

/** This host's real capacity, or the configured one, less the reserved fraction. */
export function nodeInventory(config: Pick<AllocationConfig, "inventory" | "reserveFraction">): Inventory {
  const raw = config.inventory === "auto" ? { cpu: availableParallelism(), memory: totalmem(), gpus: countGpus() } : config.inventory;
  const keep = 1 - config.reserveFraction;
  return { cpu: raw.cpu * keep, memory: raw.memory * keep, gpus: raw.gpus };
}
